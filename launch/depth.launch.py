"""ros2 launch depthclip_ros depth.launch.py image_topic:=/camera/color/image_raw [rviz:=true]
ros2 launch depthclip_ros depth.launch.py cameras:=front=/front/color/image_raw,rear=/rear/...

The node is a lifecycle node: with autostart (the default) it configures and activates itself;
with autostart:=false it waits, unconfigured, for a lifecycle manager or `ros2 lifecycle set`.
Every argument is checked before any process starts: a wrong argument, or rviz:=true without
rviz2, ends the launch with one error line and nothing left running.
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from depthclip_ros.config.parameters import NODE_NAME
from depthclip_ros.node.launch_arguments import (
    LAUNCH_ARGUMENTS,
    check_rviz_installed,
    node_arguments,
    node_parameters,
    node_remappings,
    parse_bool,
    parse_cameras,
    rviz_arguments,
)
from launch import LaunchDescription


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    share = get_package_share_directory("depthclip_ros")
    rviz = parse_bool(arg["rviz"])
    if rviz:
        check_rviz_installed(get_package_share_directory)
    # The node's own `autostart` parameter drives its transitions (not launch_ros's autostart,
    # which Humble lacks), so `ros2 run` and `ros2 launch` behave alike.
    actions = [
        LifecycleNode(
            package="depthclip_ros",
            executable="depthclip_node",
            name=NODE_NAME,
            namespace=arg["namespace"],
            output="screen",
            parameters=node_parameters(share, arg),
            remappings=node_remappings(
                arg["image_topic"],
                arg["camera_info_topic"],
                parse_cameras(arg["cameras"]),
                range_topics={
                    "scan": arg["scan_topic"],
                    "points": arg["anchor_points_topic"],
                    "depth": arg["anchor_depth_topic"],
                },
            ),
            arguments=node_arguments(arg["log_level"]),
        )
    ]
    if rviz:
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=arg["namespace"],
                arguments=rviz_arguments(share, arg["rviz_fixed_frame"]),
                parameters=[{"use_sim_time": parse_bool(arg["use_sim_time"])}],
            )
        )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=description)
            for name, (default, description) in LAUNCH_ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_nodes)]
    )
