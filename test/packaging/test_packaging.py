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
}
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
    assert imported & ROS_PACKAGES <= deps
    assert {ROSDEP_KEYS[m] for m in imported & set(ROSDEP_KEYS)} <= deps
    python_keys = {d for d in deps if d.startswith("python3-")}
    assert python_keys <= KNOWN_ROSDEP_KEYS, python_keys - KNOWN_ROSDEP_KEYS
    assert "rviz2" not in deps  # optional: rviz:=true checks for it


def test_colcon_build_installs_what_ros2_launch_and_run_need(tmp_path):
    colcon = Path(sys.executable).parent / "colcon"
    assert colcon.exists(), "colcon-common-extensions is part of the test set-up"
    src = tmp_path / "src" / "depthclip_ros"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "install", "log", "__pycache__", "*.egg-info", "out"
        ),
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [str(colcon), "build", "--base-paths", "src"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = tmp_path / "install" / "depthclip_ros"
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


def _load_launch_file_with_recording_fakes(launch_args, installed=("depthclip_ros",), nodes=None):
    """Import launch/depth.launch.py against minimal stand-ins of launch / launch_ros that
    record what the file builds (the real ones are not installable from PyPI)."""
    recorded = types.SimpleNamespace(nodes=[] if nodes is None else nodes)

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class Node(Action):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            recorded.nodes.append({**kwargs, "action": type(self).__name__})

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
    launch_ros_actions.LifecycleNode = type("LifecycleNode", (Node,), {})
    ament = types.ModuleType("ament_index_python.packages")

    def get_package_share_directory(pkg):  # the source tree stands in for the installed share/
        if pkg not in installed:
            raise LookupError(f"package '{pkg}' not found")
        return str(ROOT) if pkg == "depthclip_ros" else f"/opt/ros/share/{pkg}"

    ament.get_package_share_directory = get_package_share_directory
    fakes = {
        "launch": launch,
        "launch.actions": actions,
        "launch.substitutions": subs,
        "launch_ros": launch_ros,
        "launch_ros.actions": launch_ros_actions,
        "ament_index_python.packages": ament,
    }
    saved = {k: sys.modules.get(k) for k in fakes}
    sys.modules.update(fakes)
    try:
        spec = importlib.util.spec_from_file_location(
            "depth_launch", ROOT / "launch" / "depth.launch.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        declared = {
            a.kwargs.get("name", a.args[0] if a.args else None): a.kwargs["default_value"]
            for a in description
            if type(a).__name__ == "DeclareLaunchArgument"
        }
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
    assert set(declared) == {
        "image_topic",
        "camera_info_topic",
        "cameras",
        "params_file",
        "device",
        "use_compressed",
        "autostart",
        "use_sim_time",
        "namespace",
        "log_level",
        "rviz",
        "rviz_fixed_frame",
    }
    assert len(nodes) == 1  # rviz defaults to false
    node = nodes[0]
    assert (node["package"], node["executable"], node["name"]) == (
        "depthclip_ros",
        "depthclip_node",
        "depthclip",
    )
    assert node["action"] == "LifecycleNode"  # managers and launch event handlers see its states
    assert ("image", "/cam/image_raw") in node["remappings"]
    assert ("image/compressed", "/cam/image_raw/compressed") in node["remappings"]
    assert node["parameters"] == [str(ROOT / "config" / "depthclip.yaml"), {"use_sim_time": False}]
    assert node["arguments"] == ["--ros-args", "--log-level", "info"]


def test_launch_file_rviz_sim_time_device_compressed_and_log_level():
    _, nodes = _load_launch_file_with_recording_fakes(
        {
            "rviz": "true",
            "use_sim_time": "true",
            "device": "cuda:1",
            "namespace": "front",
            "use_compressed": "true",
            "log_level": "DEBUG",
        },
        installed=("depthclip_ros", "rviz2"),
    )
    assert [n["executable"] for n in nodes] == ["depthclip_node", "rviz2"]
    assert nodes[0]["parameters"][1] == {
        "use_sim_time": True,
        "device": "cuda:1",
        "use_compressed": True,
    }
    assert nodes[1]["action"] == "Node"
    assert nodes[0]["namespace"] == "front" and nodes[0]["arguments"][-1] == "debug"
    assert nodes[1]["arguments"][:2] == ["-d", str(ROOT / "config" / "depthclip.rviz")]
    assert nodes[1]["parameters"] == [{"use_sim_time": True}]


def test_two_cameras_are_two_instances_with_their_own_params(tmp_path):
    """The README's two-camera launch: the file included twice, one namespace and params file
    each."""
    starts = {}
    for camera in ("front", "rear"):
        params = tmp_path / f"{camera}.yaml"
        params.write_text("/**/depthclip:\n  ros__parameters: {device: cpu}\n")
        _, (node,) = _load_launch_file_with_recording_fakes(
            {
                "namespace": f"/{camera}",
                "image_topic": "color/image_raw",
                "camera_info_topic": "color/camera_info",
                "params_file": str(params),
            }
        )
        starts[camera] = node
    assert [n["namespace"] for n in starts.values()] == ["/front", "/rear"]
    assert [n["parameters"][0] for n in starts.values()] == [
        str(tmp_path / "front.yaml"),
        str(tmp_path / "rear.yaml"),
    ]
    assert ("image", "color/image_raw") in starts["rear"]["remappings"]  # resolved in /rear


def test_several_cameras_are_one_node_with_each_cameras_remappings():
    _, (node,) = _load_launch_file_with_recording_fakes(
        {"cameras": "front=/front/color/image_raw, rear=/rear/color/image_raw"}
    )
    assert node["parameters"][1] == {"use_sim_time": False, "cameras": ["front", "rear"]}
    assert node["remappings"] == [
        ("front/image", "/front/color/image_raw"),
        ("front/image/compressed", "/front/color/image_raw/compressed"),
        ("front/camera_info", "/front/color/camera_info"),
        ("rear/image", "/rear/color/image_raw"),
        ("rear/image/compressed", "/rear/color/image_raw/compressed"),
        ("rear/camera_info", "/rear/color/camera_info"),
    ]


def test_launch_autostart_false_reaches_the_node():
    _, (node,) = _load_launch_file_with_recording_fakes({"autostart": "false"})
    assert node["parameters"][1] == {"use_sim_time": False, "autostart": False}


@pytest.mark.parametrize(
    "args, message",
    [
        ({"rviz": "true"}, "rviz:=true but the rviz2 package is not installed"),
        ({"log_level": "loud"}, "log_level 'loud' is not one of"),
        ({"params_file": "/nowhere/p.yaml"}, "params_file '/nowhere/p.yaml' does not exist"),
        ({"use_sim_time": "maybe"}, "expected true or false, got 'maybe'"),
        ({"autostart": "later"}, "expected true or false, got 'later'"),
        ({"cameras": "front"}, "cameras: 'front' is not name=image_topic"),
        ({"cameras": "a=/x/image,a=/y/image"}, "cameras: 'a' is given twice"),
    ],
)
def test_launch_fails_before_starting_anything(args, message):
    """The real launch system turns the exception into one error line; no node was created."""
    nodes = []
    with pytest.raises(launch_arguments.LaunchError, match=message):
        _load_launch_file_with_recording_fakes(args, nodes=nodes)
    assert nodes == []


def test_launch_file_with_real_launch_ros():
    """Runs only where launch_ros is installed (a ROS 2 machine); CI has no launch_ros wheel."""
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI")
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location(
        "depth_launch", ROOT / "launch" / "depth.launch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)


def test_parse_bool():
    assert launch_arguments.parse_bool("True") and not launch_arguments.parse_bool("false")
    with pytest.raises(launch_arguments.LaunchError):
        launch_arguments.parse_bool("maybe")
