"""The ament_python package: colcon install layout, and the launch file's actions."""
import importlib.util
import os
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from depthclip_ros import launch_support

ROOT = Path(__file__).resolve().parent.parent


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "depthclip_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "diagnostic_msgs"} <= deps


def test_colcon_build_installs_what_ros2_launch_and_run_need(tmp_path):
    colcon = Path(sys.executable).parent / "colcon"
    assert colcon.exists(), "colcon-common-extensions is part of the test set-up"
    src = tmp_path / "src" / "depthclip_ros"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "install", "log",
                                                             "__pycache__", "*.egg-info", "out"))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(colcon), "build", "--base-paths", "src"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = tmp_path / "install" / "depthclip_ros"
    share = prefix / "share" / "depthclip_ros"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "depthclip_ros").is_file()
    for rel in ("package.xml", "launch/depth.launch.py", "config/depthclip.yaml", "config/depthclip.rviz",
                "config/presets/paper.yaml", "config/presets/bins_class_dependent_3.yaml"):
        assert (share / rel).is_file(), rel
    for name in ("depthclip_node", "depthclip-bag", "depthclip-eval"):  # what `ros2 run` finds
        exe = prefix / "lib" / "depthclip_ros" / name
        assert exe.is_file() and os.access(exe, os.X_OK), name


def _load_launch_file_with_recording_fakes(launch_args):
    """Import launch/depth.launch.py against minimal stand-ins of launch / launch_ros that
    record what the file builds (the real ones are not installable from PyPI)."""
    recorded = types.SimpleNamespace(nodes=[])

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class Node(Action):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            recorded.nodes.append(kwargs)

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context.launch_configurations[self.name]

    launch = types.ModuleType("launch")
    launch.LaunchDescription = lambda entities: list(entities)
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (Action,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (Action,), {})
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    launch_ros_actions = types.ModuleType("launch_ros.actions")
    launch_ros_actions.Node = Node
    ament = types.ModuleType("ament_index_python.packages")
    ament.get_package_share_directory = lambda pkg: f"/opt/ros/share/{pkg}"
    fakes = {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
             "launch_ros": launch_ros, "launch_ros.actions": launch_ros_actions,
             "ament_index_python.packages": ament}
    saved = {k: sys.modules.get(k) for k in fakes}
    sys.modules.update(fakes)
    try:
        spec = importlib.util.spec_from_file_location("depth_launch", ROOT / "launch" / "depth.launch.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        declared = {a.kwargs.get("name", a.args[0] if a.args else None): a.kwargs["default_value"]
                    for a in description if type(a).__name__ == "DeclareLaunchArgument"}
        opaque = [a for a in description if type(a).__name__ == "OpaqueFunction"][0]
        context = types.SimpleNamespace(launch_configurations={**declared, **launch_args})
        opaque.kwargs["function"](context)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return declared, recorded.nodes


def test_launch_file_declares_arguments_and_starts_the_node():
    declared, nodes = _load_launch_file_with_recording_fakes({"image_topic": "/cam/image_raw"})
    assert set(declared) == {"image_topic", "camera_info_topic", "params_file", "device", "use_sim_time",
                             "rviz", "rviz_fixed_frame", "namespace"}
    assert len(nodes) == 1  # rviz defaults to false
    node = nodes[0]
    assert (node["package"], node["executable"], node["name"]) == ("depthclip_ros", "depthclip_node", "depthclip")
    assert ("image", "/cam/image_raw") in node["remappings"]
    assert ("image/compressed", "/cam/image_raw/compressed") in node["remappings"]
    assert node["parameters"] == ["/opt/ros/share/depthclip_ros/config/depthclip.yaml", {"use_sim_time": False}]


def test_launch_file_rviz_sim_time_and_device():
    _, nodes = _load_launch_file_with_recording_fakes({"rviz": "true", "use_sim_time": "true",
                                                       "device": "cuda:1", "namespace": "front"})
    assert [n["executable"] for n in nodes] == ["depthclip_node", "rviz2"]
    assert nodes[0]["parameters"][1] == {"use_sim_time": True, "device": "cuda:1"}
    assert nodes[0]["namespace"] == "front"
    assert nodes[1]["arguments"][:2] == ["-d", "/opt/ros/share/depthclip_ros/config/depthclip.rviz"]
    assert nodes[1]["parameters"] == [{"use_sim_time": True}]


def test_launch_file_with_real_launch_ros():
    """Runs only where launch_ros is installed (a ROS 2 machine); CI has no launch_ros wheel."""
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI")
    from launch import LaunchDescription
    spec = importlib.util.spec_from_file_location("depth_launch", ROOT / "launch" / "depth.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)


def test_parse_bool():
    assert launch_support.parse_bool("True") and not launch_support.parse_bool("false")
    with pytest.raises(ValueError):
        launch_support.parse_bool("maybe")
