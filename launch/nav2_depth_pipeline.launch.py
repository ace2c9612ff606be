"""ros2 launch depthclip_ros nav2_depth_pipeline.launch.py [pipeline_params_file:=...]

The depthclip node in Nav2's monocular-depth pipeline (ros-navigation/navigation2.ai,
nav2_depth_estimation_ai at commit 63e199d), in the place of its Depth Anything 3 node, with the
pipeline's own topic names: camera (/image_raw, /camera_info) -> image_proc crop_decimate ->
image_proc resize (/resize/image_raw, /resize/camera_info) -> depthclip (raw image in, as the
pipeline's estimator takes it there) -> depth_image, /pipeline/points (the costmap's marking
source) and /pipeline/points/clearing (its clearing source: config/nav2_depthclip.yaml). The
depthclip node's own cloud replaces the pipeline's depth_image_proc node. The resize node reads
what crop_decimate publishes (/image_crop_decimate/image; upstream's plain-node group at 63e199d
listens on .../image_raw, which nothing publishes). Needs image_proc; a camera driver publishes
/image_raw and /camera_info. docs/nav2.md.
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

# The pipeline's topics at nav2_depth_estimation_ai 63e199d (perception_pipeline.launch.py).
CROPPED_IMAGE, CROPPED_INFO = "/image_crop_decimate/image", "/image_crop_decimate/camera_info"
RESIZED_IMAGE, RESIZED_INFO = "/resize/image_raw", "/resize/camera_info"
DEPTH, POINTS = "depth_image", "/pipeline/points"


def generate_launch_description():
    pipeline_params = LaunchConfiguration("pipeline_params_file")
    respawn = LaunchConfiguration("use_respawn")
    log = ["--ros-args", "--log-level", LaunchConfiguration("log_level")]
    share = get_package_share_directory("depthclip_ros")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "pipeline_params_file",
                default_value=PathJoinSubstitution(
                    [
                        FindPackageShare("nav2_depth_estimation_ai"),
                        "params",
                        "nav2_depth_ai_params.yaml",
                    ]
                ),
                description="the pipeline's parameters (crop_decimate, resize)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=f"{share}/config/nav2_depthclip.yaml",
                description="the depthclip node's parameters",
            ),
            DeclareLaunchArgument("use_respawn", default_value="False"),
            DeclareLaunchArgument("log_level", default_value="info"),
            GroupAction(
                [
                    Node(
                        package="image_proc",
                        name="crop_decimate",
                        executable="crop_decimate_node",
                        output="screen",
                        respawn=respawn,
                        parameters=[pipeline_params],
                        remappings=[
                            ("/in/camera_info", "/camera_info"),
                            ("/in/image_raw", "/image_raw"),
                            ("/out/camera_info", CROPPED_INFO),
                            ("/out/image_raw", CROPPED_IMAGE),
                        ],
                        arguments=log,
                    ),
                    Node(
                        package="image_proc",
                        name="resize",
                        executable="resize_node",
                        output="screen",
                        respawn=respawn,
                        parameters=[pipeline_params],
                        remappings=[
                            ("/image/camera_info", CROPPED_INFO),
                            ("/image/image_raw", CROPPED_IMAGE),
                        ],
                        arguments=log,
                    ),
                    Node(
                        package="depthclip_ros",
                        executable="depthclip_node",
                        name="depthclip",  # its section in the params file: /**/depthclip
                        output="screen",
                        respawn=respawn,
                        parameters=[LaunchConfiguration("params_file")],
                        remappings=[
                            ("image", RESIZED_IMAGE),
                            ("camera_info", RESIZED_INFO),
                            ("depth/image", DEPTH),
                            ("points", POINTS),
                            ("points/clearing", POINTS + "/clearing"),
                        ],
                        arguments=log,
                    ),
                ]
            ),
        ]
    )
