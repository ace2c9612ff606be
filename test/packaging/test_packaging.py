"""The ament_python package: colcon install layout, package.xml, the launch arguments' docs."""

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from colcon_workspace import colcon_build

from depthclip_ros.node import launch_arguments

ROOT = Path(__file__).resolve().parents[2]


# What each imported module is in package.xml: a ROS package, a rosdep key, or pip-only (README).
ROS_PACKAGES = {
    "rclpy",
    "rcl_interfaces",
    "sensor_msgs",
    "diagnostic_msgs",
    "std_msgs",
    "ament_index_python",
    "launch",
    "launch_ros",
    "tf2_ros",
    "geometry_msgs",
    "bond",
}
MODULE_PACKAGES = {"tf2_ros": "tf2_ros_py"}  # a module of another package's name
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "PIL": "python3-pil",
    "tqdm": "python3-tqdm",
    "h5py": "python3-h5py",
    "scipy": "python3-scipy",
    "torch": "python3-pytorch-pip",
    "rosbags": "python3-rosbags-pip",
}
PIP_ONLY = {
    "clip",
    "apsw",
    "onnxruntime",
    "onnx",
    "openvino",
    "ray",
}  # openai-clip: no rosdep key; apsw: optional, rosbags falls back to sqlite3; onnxruntime,
# onnx (depthclip-export), openvino (backend openvino, optional), ray (depthclip-fleet): pip
# (README, docs/onnx.md, docs/fleet.md), no rosdep key verified in ros/rosdistro here
# Keys present in ros/rosdistro's rosdep/python.yaml (read from its repository, 2026-08-22
# snapshot).
KNOWN_ROSDEP_KEYS = {
    "python3-numpy",
    "python3-yaml",
    "python3-pil",
    "python3-tqdm",
    "python3-h5py",
    "python3-scipy",
    "python3-pytorch-pip",
    "python3-rosbags-pip",
    "python3-pytest",
}


def imported_top_level_modules():
    import ast

    modules = set()
    for path in [
        *ROOT.glob("depthclip_ros/**/*.py"),
        *ROOT.glob("offline_eval/*.py"),
        *ROOT.glob("launch/*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"depthclip_ros", "offline_eval"}


def test_package_xml_declares_every_import_by_keys_rosdep_resolves():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "depthclip_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    imported = imported_top_level_modules()
    assert imported <= ROS_PACKAGES | set(ROSDEP_KEYS) | PIP_ONLY, "classify the new import above"
    assert {MODULE_PACKAGES.get(m, m) for m in imported & ROS_PACKAGES} <= deps
    assert {ROSDEP_KEYS[m] for m in imported & set(ROSDEP_KEYS)} <= deps
    python_keys = {d for d in deps if d.startswith("python3-")}
    assert python_keys <= KNOWN_ROSDEP_KEYS, python_keys - KNOWN_ROSDEP_KEYS
    assert "rviz2" not in deps  # optional: rviz:=true checks for it


def test_colcon_build_installs_what_ros2_launch_and_run_need(tmp_path):
    prefix = colcon_build(tmp_path)
    share = prefix / "share" / "depthclip_ros"
    assert (
        prefix / "share" / "ament_index" / "resource_index" / "packages" / "depthclip_ros"
    ).is_file()
    for rel in (
        "package.xml",
        "launch/depth.launch.py",
        "config/depthclip.yaml",
        "config/depthclip.rviz",
        "config/presets/paper.yaml",
        "config/presets/bins_class_dependent_3.yaml",
    ):
        assert (share / rel).is_file(), rel
    for name in ("depthclip_node", "depthclip-bag", "depthclip-eval"):  # what `ros2 run` finds
        exe = prefix / "lib" / "depthclip_ros" / name
        assert exe.is_file() and os.access(exe, os.X_OK), name


def test_the_docs_list_every_launch_argument_with_its_default():
    """docs/launch.md's table: the arguments launch/depth.launch.py declares (from
    launch_arguments), no other; the launch itself runs in test/ros/test_launch.py."""
    doc = (ROOT / "docs" / "launch.md").read_text()
    table = doc.split("## Launch arguments", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    names = [name.strip().strip("`") for name, _ in rows]
    assert names == list(launch_arguments.LAUNCH_ARGUMENTS)
    for name, default in rows:
        declared = launch_arguments.LAUNCH_ARGUMENTS[name.strip().strip("`")][0]
        if declared.startswith("/") or declared in ("false", "info", "camera_color_optical_frame"):
            assert default.strip() == declared, name


def test_parse_bool():
    assert launch_arguments.parse_bool("True") and not launch_arguments.parse_bool("false")
    with pytest.raises(launch_arguments.LaunchError):
        launch_arguments.parse_bool("maybe")
