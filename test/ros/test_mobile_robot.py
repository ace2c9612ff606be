"""docs/mobile_robot.md as a user follows it: `ros2 launch depthclip_ros depth.launch.py` in the
camera's namespace with the shipped config/mobile_robot.yaml (real launch and launch_ros, the
package as colcon installs it), the robot's frames from robot_state_publisher's kind of
StaticTransformBroadcaster, odometry on /tf and a 2D lidar's scans, each from a process of its
own, over the default middleware (support/robot_drivers.py)."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tf2_from_source
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from helpers import camera_info, encode, model_config, structured_image, wait_until
from launch_harness import NO_SOURCES, launch_sources, ros2_launch, shared_install_prefix
from range_factory import LASER_TO_OPTICAL, scan_of
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import client_node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.messages import decoding

pytestmark = pytest.mark.slow
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
DRIVERS = Path(__file__).resolve().parents[1] / "support" / "robot_drivers.py"
IMAGE = structured_image(240, 320)
INFO = camera_info(width=320, height=240, fx=300.0, fy=300.0, cx=160.0, cy=120.0)
K = np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1]])
NAMESPACE = "/camera/color"
# The room is 2.5 times as deep as the random model says (2.46 m everywhere, its std 0.6 m):
# no point is sure enough to mark (std 1.5 m), and the clearing depths reach past 3 m.
SCALE = 2.5
# The URDF's fixed joints: base_link -> laser, the camera on the laser (its optical frame by
# REP 103's turn): the image's frame_id camera_optical_frame.
URDF = ["0.2 0 0.15 0 0 0 base_link laser", *LASER_TO_OPTICAL]


def installed_params(prefix, tiny_checkpoint, cache_dir, folder) -> Path:
    """The installed config/mobile_robot.yaml with the test's random CLIP for RN50 (which
    cannot be downloaded here) and temperature 1.0 (a random CLIP saturates the softmax at
    0.1); everything else as shipped."""
    shipped = prefix / "share" / "depthclip_ros" / "config" / "mobile_robot.yaml"
    text = re.sub(r"(?m)^(\s*model:) RN50\b", rf"\1 {tiny_checkpoint}", shipped.read_text())
    text += f'    cache_dir: "{cache_dir}"\n    temperature: 1.0\n'
    path = folder / "mobile_robot.yaml"
    path.write_text(text)
    assert yaml.safe_load(text)["/**/depthclip"]["ros__parameters"]["model"] != "RN50"
    return path


def start_driver(role, given, folder) -> subprocess.Popen:
    path = folder / f"{role}.json"
    path.write_text(json.dumps(given))
    with open(folder / f"{role}.log", "w") as log:  # the process keeps its own descriptor
        command = [sys.executable, str(DRIVERS), role, str(path)]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def status_values(msgs) -> dict:
    values = {}
    for msg in msgs[-3:]:
        for status in msg.status:
            values.update({kv.key: kv.value for kv in status.values})
    return values


def test_the_mobile_robot_page_from_launch_to_fitted_clouds(
    tmp_path, tmp_path_factory, tiny_checkpoint
):
    """Before any scan: the depth goes out, no cloud (metric_scale_require), the status ERROR
    `metric_scale never fitted`. With the robot's frames and scans: the depth SCALE times the
    model's, `metric scale` SCALE, the laser joined to the camera through tf2 (nothing in
    static_transforms), each ray moved through odom; both clouds on the costmap's topics of
    config/nav2_depthclip.yaml: nothing marked where the calibrated std is above
    cloud_max_std, every clearing point within cloud_max_range (those beyond pulled in)."""
    sources = launch_sources()
    if not sources:
        pytest.skip(NO_SOURCES)
    if tf2_from_source.missing():
        pytest.skip(tf2_from_source.missing())
    prefix = shared_install_prefix(tmp_path_factory, tiny_checkpoint)
    params = installed_params(prefix, tiny_checkpoint, tmp_path / "cache", tmp_path)
    node_params = yaml.safe_load(params.read_text())["/**/depthclip"]["ros__parameters"]
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core")).predict(IMAGE)
    scan = scan_of(core, K, SCALE, 0)
    arguments = (
        f"namespace:={NAMESPACE}",
        "image_topic:=image_raw",
        "camera_info_topic:=camera_info",
        f"params_file:={params}",
    )
    drivers = []
    with (
        ros2_launch(sources[0], prefix, tmp_path / "launch.log", *arguments) as launched,
        client_node() as node,
    ):
        got = {"depth": [], "points": [], "clearing": [], "diagnostics": []}
        for key, kind, topic in (
            ("depth", Image, f"{NAMESPACE}/depth/image"),
            ("points", PointCloud2, f"{NAMESPACE}/points"),
            ("clearing", PointCloud2, f"{NAMESPACE}/points/clearing"),
            ("diagnostics", DiagnosticArray, "/diagnostics"),
        ):
            node.create_subscription(kind, topic, got[key].append, RELIABLE)
        images = node.create_publisher(Image, f"{NAMESPACE}/image_raw", RELIABLE)
        infos = node.create_publisher(CameraInfo, f"{NAMESPACE}/camera_info", RELIABLE)

        image = encode(IMAGE, "rgb8")

        def publish_frame():
            # A camera's stamp is its exposure, a little before the frame reaches the node
            # (odometry's newest sample is then after it, as tf2 needs).
            when = node.get_clock().now().nanoseconds - 100_000_000
            for msg in (INFO, image):
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(when, 10**9)
                msg.header.frame_id = "camera_optical_frame"
            infos.publish(INFO)
            images.publish(image)

        def frames_until(condition, timeout=60.0):
            deadline = time.monotonic() + timeout
            while not condition():
                assert launched.returncode() is None, launched.output[-3000:]
                assert time.monotonic() < deadline, launched.output[-3000:]
                publish_frame()
                time.sleep(0.2)

        try:
            frames_until(lambda: len(got["depth"]) >= 3)
            time.sleep(0.5)
            assert not got["points"] and not got["clearing"]  # never fitted: no clouds
            wait_until(
                lambda: any(
                    "metric_scale never fitted" in status.message
                    for msg in got["diagnostics"]
                    for status in msg.status
                )
            )

            drivers.append(start_driver("frames", URDF, tmp_path))
            given = dict(
                angle_min=scan.angle_min,
                angle_increment=scan.angle_increment,
                ranges=list(scan.ranges),
                frame="laser",
            )
            drivers.append(start_driver("scan", given, tmp_path))

            def fitted():
                # The drivers' first messages may come before odometry covers a frame's stamp
                # (that frame: the robot taken as still, said); then every frame through odom.
                values = status_values(got["diagnostics"])
                scale = float(values.get("metric scale", "nan").split()[0])
                moved = values.get("metric motion") == "moved through odom at each point's time"
                return abs(scale - SCALE) < 1e-3 * SCALE and moved and got["clearing"]

            frames_until(fitted)
            values = status_values(got["diagnostics"])
            assert values["metric transforms"].startswith("static_transforms, then tf2"), values
            got["depth"].clear()
            frames_until(lambda: got["depth"])
            depth = decoding.depth_image_to_array(got["depth"][-1])
            np.testing.assert_allclose(depth, SCALE * core.depth[0], rtol=1e-3)
            points, clearing = (
                np.frombuffer(bytes(got[key][-1].data), "<f4").reshape(-1, 5)
                for key in ("points", "clearing")
            )
            assert np.isnan(points[:, :3]).all()  # cloud_max_std 0.35 m: nothing marked
            z = clearing[:, 2][np.isfinite(clearing[:, 2])]
            assert len(z) == len(clearing)  # every ray cleared, up to cloud_max_range at most
            assert z.max() == np.float32(node_params["cloud_max_range"])
            assert z.min() >= node_params["cloud_min_range"]
        finally:
            for driver in drivers:
                driver.terminate()
                driver.wait(timeout=10)
    assert "Traceback" not in launched.output and "[ERROR]" not in launched.output
