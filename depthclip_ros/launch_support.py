"""What launch/depth.launch.py computes, kept here so it is unit-tested without `launch`."""
from __future__ import annotations

from pathlib import Path

# name -> (default, description); "" for params_file means the installed config/depthclip.yaml.
LAUNCH_ARGUMENTS = {
    "image_topic": ("/camera/color/image_raw", "RGB image topic (its /compressed with use_compressed)"),
    "camera_info_topic": ("/camera/color/camera_info", "CameraInfo topic of that camera"),
    "params_file": ("", "Parameter YAML; empty = the installed config/depthclip.yaml"),
    "device": ("", "auto | cpu | cuda | cuda:N; empty = as in params_file"),
    "use_sim_time": ("false", "true when replaying a bag with `ros2 bag play --clock`"),
    "rviz": ("false", "Also start RViz with config/depthclip.rviz"),
    "rviz_fixed_frame": ("camera_color_optical_frame", "RViz fixed frame: the image's frame_id"),
    "namespace": ("", "Namespace of the node and its topics"),
}


def parse_bool(value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got '{value}'")


def node_parameters(share_dir, params_file: str, device: str, use_sim_time: str) -> list:
    """`parameters=` of the node: the YAML first, then the launch overrides."""
    params_file = params_file or str(Path(share_dir) / "config" / "depthclip.yaml")
    overrides = {"use_sim_time": parse_bool(use_sim_time)}
    if device:
        overrides["device"] = device
    return [params_file, overrides]


def node_remappings(image_topic: str, camera_info_topic: str) -> list:
    return [("image", image_topic), ("image/compressed", image_topic.rstrip("/") + "/compressed"),
            ("camera_info", camera_info_topic)]


def rviz_arguments(share_dir, fixed_frame: str) -> list:
    return ["-d", str(Path(share_dir) / "config" / "depthclip.rviz"), "-f", fixed_frame]
