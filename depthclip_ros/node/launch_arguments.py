"""What launch/depth.launch.py computes, kept here so it is unit-tested without `launch`."""

from __future__ import annotations

from pathlib import Path

from ..errors import LaunchError
from ..messages.topics import RANGE_INPUTS, beside

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")

# name -> (default, description); "" for params_file means the installed config/depthclip.yaml.
LAUNCH_ARGUMENTS = {
    "image_topic": (
        "/camera/color/image_raw",
        "RGB image topic (relative names resolve in `namespace`); with use_compressed, "
        "its /compressed is read",
    ),
    "camera_info_topic": ("/camera/color/camera_info", "CameraInfo topic of that camera"),
    "cameras": (
        "",
        "Several cameras, one node and model: name=image_topic,... (e.g. "
        "front=/front/color/image_raw,rear=/rear/color/image_raw); each camera's camera_info is "
        "the one beside its image, its outputs NAME/depth/... in `namespace`; empty = one "
        "camera on image_topic",
    ),
    "scan_topic": (
        "/scan",
        "metric_scale source scan: the robot's LaserScan topic (one for every camera)",
    ),
    "anchor_points_topic": (
        "anchors/points",
        "metric_scale source points: a PointCloud2 topic (a 3D lidar, a VIO's map points); "
        "relative names resolve in `namespace`",
    ),
    "anchor_depth_topic": (
        "anchors/depth",
        "metric_scale source depth: a depth Image registered to the camera (e.g. "
        "aligned_depth_to_color/image_raw); relative names resolve in `namespace`; with "
        "`cameras`, each camera's own NAME/anchors/depth (remap them in your launch file)",
    ),
    "params_file": (
        "",
        "Parameter YAML (key /**/depthclip); empty = the installed config/depthclip.yaml",
    ),
    "device": ("", "auto | cpu | cuda | cuda:N (openvino: gpu, npu); empty = as in params_file"),
    "use_compressed": (
        "",
        "true: subscribe to the image's /compressed (JPEG/PNG); empty = as in params_file",
    ),
    "autostart": (
        "",
        "true: the node configures and activates itself; false: it waits for a "
        "lifecycle manager (ros2 lifecycle set); empty = as in params_file",
    ),
    "use_sim_time": ("false", "true when replaying a bag with `ros2 bag play --clock`"),
    "namespace": (
        "",
        "Namespace of the node and its outputs: the camera's, e.g. /camera/color, puts "
        "depth/image beside the camera's image",
    ),
    "log_level": ("info", "Log level of the node: " + " | ".join(LOG_LEVELS)),
    "rviz": ("false", "Also start RViz with config/depthclip.rviz (needs the rviz2 package)"),
    "rviz_fixed_frame": ("camera_color_optical_frame", "RViz fixed frame: the image's frame_id"),
}


def parse_bool(value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise LaunchError(f"expected true or false, got '{value}'")


def node_parameters(share_dir, args: dict) -> list:
    """`parameters=` of the node: the YAML first, then the launch overrides."""
    params_file = args["params_file"] or str(Path(share_dir) / "config" / "depthclip.yaml")
    if not Path(params_file).is_file():
        raise LaunchError(f"params_file '{params_file}' does not exist")
    overrides = {"use_sim_time": parse_bool(args["use_sim_time"])}
    if args["device"]:
        overrides["device"] = args["device"]
    for flag in ("use_compressed", "autostart"):
        if args[flag]:
            overrides[flag] = parse_bool(args[flag])
    cameras = parse_cameras(args.get("cameras", ""))
    if cameras:
        overrides["cameras"] = list(cameras)
    return [params_file, overrides]


def parse_cameras(text: str) -> dict:
    """'front=/front/color/image_raw,rear=...' -> {name: image topic}; {} for ''."""
    cameras = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, topic = item.partition("=")
        name, topic = name.strip(), topic.strip()
        if not sep or not name or not topic or "/" in name:
            raise LaunchError(f"cameras: '{item}' is not name=image_topic (a name without '/')")
        if name in cameras:
            raise LaunchError(f"cameras: '{name}' is given twice")
        cameras[name] = topic
    return cameras


def node_remappings(
    image_topic: str, camera_info_topic: str, cameras: dict, range_topics: dict | None = None
) -> list:
    """The node's inputs onto the robot's topics: `image` (or each `NAME/image`), its
    /compressed, and the camera_info (a named camera's: the one beside its image); metric_scale's
    `scan`, `anchors/points` and `anchors/depth` onto `range_topics` ({source: topic}: scan,
    points, depth), subscribed only while metric_scale uses them."""
    remappings = [
        (RANGE_INPUTS[source], topic)
        for source, topic in (range_topics or {}).items()
        if topic and topic != RANGE_INPUTS[source]
    ]
    if not cameras:
        return remappings + [
            ("image", image_topic),
            ("image/compressed", image_topic.rstrip("/") + "/compressed"),
            ("camera_info", camera_info_topic),
        ]
    for name, topic in cameras.items():
        remappings += [
            (f"{name}/image", topic),
            (f"{name}/image/compressed", topic.rstrip("/") + "/compressed"),
            (f"{name}/camera_info", beside(topic, "camera_info")),
        ]
    return remappings


def node_arguments(log_level: str) -> list:
    level = log_level.strip().lower()
    if level not in LOG_LEVELS:
        raise LaunchError(f"log_level '{log_level}' is not one of {', '.join(LOG_LEVELS)}")
    return ["--ros-args", "--log-level", level]  # the process runs this node only


def check_rviz_installed(find_share) -> None:
    """rviz:=true without rviz2 must fail before anything starts (not abort with the node
    running)."""
    try:
        find_share("rviz2")
    except Exception:  # ament_index_python's PackageNotFoundError (or no index at all)
        raise LaunchError(
            "rviz:=true but the rviz2 package is not installed; install it "
            "(sudo apt install ros-$ROS_DISTRO-rviz2) or launch with rviz:=false"
        ) from None


def rviz_arguments(share_dir, fixed_frame: str) -> list:
    return ["-d", str(Path(share_dir) / "config" / "depthclip.rviz"), "-f", fixed_frame]
