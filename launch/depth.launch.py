"""ros2 launch depthclip_ros depth.launch.py image_topic:=/camera/color/image_raw [rviz:=true]"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from depthclip_ros.launch_support import (LAUNCH_ARGUMENTS, node_parameters, node_remappings,
                                          parse_bool, rviz_arguments)


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    share = get_package_share_directory("depthclip_ros")
    actions = [Node(package="depthclip_ros", executable="depthclip_node", name="depthclip",
                    namespace=arg["namespace"], output="screen",
                    parameters=node_parameters(share, arg["params_file"], arg["device"], arg["use_sim_time"]),
                    remappings=node_remappings(arg["image_topic"], arg["camera_info_topic"]))]
    if parse_bool(arg["rviz"]):
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=arg["namespace"],
                            arguments=rviz_arguments(share, arg["rviz_fixed_frame"]),
                            parameters=[{"use_sim_time": parse_bool(arg["use_sim_time"])}]))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)])
