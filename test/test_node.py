"""The depthclip node over real rclpy / DDS on this machine, with a tiny random CLIP."""
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image as PILImage
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from depthclip_ros import conversions
from depthclip_ros.node import OUTPUT_QOS

from conftest import structured_image
from msg_factory import ALL_ENCODINGS, encode
from ros_harness import camera_info, running_node, stamp

RGB = structured_image()


def send_and_receive(tester, msg, sec, topic="depth/image", timeout=20.0):
    stamp(msg, sec)
    (tester.compressed_pub if isinstance(msg, CompressedImage) else tester.image_pub).publish(msg)
    return tester.wait_for(topic, predicate=lambda m: m.header.stamp.sec == sec, timeout=timeout)[-1]


def diag_values(tester, predicate=lambda v: True, timeout=10.0):
    msgs = tester.wait_for("/diagnostics", timeout=timeout,
                           predicate=lambda m: predicate({kv.key: kv.value for kv in m.status[0].values}))
    return {kv.key: kv.value for kv in msgs[-1].status[0].values}


def test_environment_is_local_private_and_untuned():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["ROS_DOMAIN_ID"] != "0"
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ  # the middleware's defaults, as on a robot


def test_outputs_are_reliable():
    from rclpy.qos import ReliabilityPolicy
    assert OUTPUT_QOS.reliability == ReliabilityPolicy.RELIABLE and OUTPUT_QOS.depth == 5


def test_depth_cloud_and_info_carry_the_input_header(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        tester.info_pub.publish(camera_info(width=1280, height=960, fx=1000.0, fy=960.0, cx=640.0, cy=480.0))
        time.sleep(0.3)
        msg = Image(**conversions.rgb8_image_fields(RGB))
        stamp(msg, 42, 123)
        tester.image_pub.publish(msg)
        depth_msg = tester.wait_for("depth/image")[0]
        cloud = tester.wait_for("points")[0]
        info = tester.wait_for("depth/camera_info")[0]
        for out in (depth_msg, cloud, info):
            assert (out.header.stamp.sec, out.header.stamp.nanosec) == (42, 123)
            assert out.header.frame_id == "camera_optical_frame"
        assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", 480, 640)
        depth = conversions.depth_image_to_array(depth_msg)
        bins = node.estimator.config.depth_bins
        assert np.isfinite(depth).all() and bins[0] <= depth.min() and depth.max() <= bins[-1]
        # camera_info was for a 2x larger image: intrinsics scale to the depth image.
        assert (info.width, info.height) == (640, 480)
        np.testing.assert_allclose(np.array(info.k)[[0, 2, 4, 5]], [500, 320, 480, 240])
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
        assert all(f.datatype == 7 for f in cloud.fields)
        assert (cloud.height, cloud.width) == (60, 80) and cloud.point_step == 16
        points = conversions.pointcloud_to_array(cloud)
        v, u = 24 * 8, 37 * 8
        z = depth[v, u]
        np.testing.assert_allclose(points[24, 37, :3], [(u - 320) * z / 500, (v - 240) * z / 480, z], rtol=1e-5)
        assert points[24, 37, 3:].view(np.uint32)[0] == conversions.pack_rgb(RGB[v, u])[()].view(np.uint32)


def test_every_encoding_gives_the_rgb8_depth(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        reference = conversions.depth_image_to_array(
            send_and_receive(tester, Image(**conversions.rgb8_image_fields(RGB)), 1))
        grey = np.repeat(RGB[..., :1], 3, axis=2)
        grey_ref = conversions.depth_image_to_array(
            send_and_receive(tester, Image(**conversions.rgb8_image_fields(grey)), 2))
        cases = [(e, 0, False) for e in ALL_ENCODINGS] + [("bgr8", 7, False), ("rgb16", 6, True),
                                                            ("mono16", 2, True)]
        for sec, (enc, padding, big) in enumerate(cases, start=10):
            depth = conversions.depth_image_to_array(
                send_and_receive(tester, encode(RGB, enc, padding, big), sec))
            expected = grey_ref if enc.startswith("mono") else reference
            tol = 5e-3 if enc.startswith(("bayer", "yuv")) else 1e-6
            np.testing.assert_allclose(depth, expected, atol=tol, err_msg=f"{enc} pad={padding} be={big}")


def test_malformed_flood_then_valid_frame_is_answered(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        good = encode(RGB, "rgb8")
        kinds = [dict(encoding="16UC1"), dict(encoding="32FC1"), dict(encoding="nv12"),
                 dict(width=0), dict(height=0), dict(step=3), dict(data=b"\x01" * 10),
                 dict(encoding="yuv422", width=639, step=1278), dict(encoding="rgb16")]
        for i in range(100):
            bad = encode(RGB, "rgb8")
            for k, v in kinds[i % len(kinds)].items():
                setattr(bad, k, v)
            tester.image_pub.publish(stamp(bad, 1000 + i))
            time.sleep(0.002)
        for i in range(5):
            tester.compressed_pub.publish(stamp(CompressedImage(format="jpeg", data=b"\xff\xd8\x00junk"), 2000 + i))
        answered = send_and_receive(tester, good, 7)
        assert answered.height == 480
        assert not [m for m in tester.received["depth/image"] if m.header.stamp.sec >= 1000]
        values = diag_values(tester, lambda v: int(v["rejected frames"]) > 0)
        assert int(values["rejected frames"]) > 0 and values["failed frames"] == "0"


def test_parameter_changes(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        before = conversions.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 1))
        bad = [Parameter("depth_bins", value=[1.0, 2.0, 1.5, 3.0, 3.5, 4.0, 5.0]),
               Parameter("depth_tokens", value=["near", "far"]),
               Parameter("prompt_template", value="no placeholders"),
               Parameter("temperature", value=0.0),
               Parameter("cloud_stride", value=-1),
               Parameter("prompt_template", value="This {object} is " + "very " * 80 + "{token}")]
        for p in bad:
            result = node.set_parameters([p])[0]
            assert not result.successful and result.reason, p.name
        ro = node.set_parameters([Parameter("device", value="cuda")])[0]
        assert not ro.successful
        same = conversions.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 2))
        np.testing.assert_array_equal(same, before)

        ok = node.set_parameters_atomically([
            Parameter("depth_tokens", value=["very close", "close", "far", "very far"]),
            Parameter("depth_bins", value=[2.0, 3.0, 4.0, 5.0])])
        assert ok.successful, ok.reason
        after = conversions.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 3))
        assert 2.0 <= after.min() and after.max() <= 5.0 and not np.allclose(after, before)


def test_all_model_work_runs_on_the_worker_thread(tiny_checkpoint, tmp_path, monkeypatch):
    """Loading, warm-up, config changes and frames: one thread (torch on two threads is slower)."""
    import threading
    from depthclip_ros.core import DepthClip
    calls = []
    for name in ("__init__", "warm_up", "update_config", "predict"):
        real = getattr(DepthClip, name)

        def recorder(self, *args, _real=real, _name=name, **kwargs):
            calls.append((_name, threading.current_thread().name))
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(DepthClip, name, recorder)
    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        send_and_receive(tester, encode(RGB, "rgb8"), 1)
        assert node.set_parameters([Parameter("depth_bins", value=[1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])])[0].successful
        after = conversions.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 2))
    assert [name for name, _ in calls][:2] == ["__init__", "warm_up"]
    assert {"update_config", "predict"} <= {name for name, _ in calls}
    assert {thread for _, thread in calls} == {"depthclip-worker"}
    assert after.max() > 3.0  # the change reached the frame after it


def test_burst_drops_old_frames_and_answers_the_newest(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        tester.info_pub.publish(camera_info())
        real_predict = node.estimator.predict

        def slow_predict(images):
            time.sleep(0.15)
            return real_predict(images)
        node.estimator.predict = slow_predict
        msg = encode(RGB, "rgb8")
        send_and_receive(tester, msg, 1)  # warm up

        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

        def burst(first):
            tester.clear()
            for i in range(50):
                tester.image_pub.publish(stamp(msg, first + i))
                time.sleep(0.01)
            return tester.wait_for("depth/image", predicate=lambda m: m.header.stamp.sec == first + 49)

        burst(100)
        rss_before = rss_mb()
        outputs = burst(200)
        rss_after = rss_mb()
        time.sleep(0.5)
        secs = [m.header.stamp.sec for m in tester.received["depth/image"]]
        assert len(secs) < 50 and secs[-1] == 249 and secs == sorted(secs)
        values = diag_values(tester, lambda v: int(v["dropped frames"]) > 0)
        assert int(values["dropped frames"]) >= 50 - len(secs) - 5
        assert rss_after - rss_before < 30, (rss_before, rss_after)
        assert len(outputs) >= 1


def test_depth_without_camera_info_and_coarse_cloud(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, cloud_stride=0) as (node, tester):
        send_and_receive(tester, encode(RGB, "rgb8"), 1)
        time.sleep(0.3)
        assert tester.received["points"] == []
        values = diag_values(tester, lambda v: v["frames published"] == "1")
        assert values["camera_info"] == "missing"
        # One frame timed: its forward is part of its latency (publish time - stamp from 1970).
        assert 0 < float(values["inference median (ms)"]) < float(values["latency median (ms)"])
        tester.info_pub.publish(camera_info())
        time.sleep(0.3)
        send_and_receive(tester, encode(RGB, "rgb8"), 2)
        cloud = tester.wait_for("points")[0]
        assert (cloud.height, cloud.width) == (13, 17)  # 416x544 grid of the default resize input
        pts = conversions.pointcloud_to_array(cloud)
        # The last grid cell sits exactly on the last pixel (639, 479).
        z = pts[-1, -1, 2]
        np.testing.assert_allclose(pts[-1, -1, :2], [(639 - 320) * z / 500, (479 - 240) * z / 480], rtol=1e-5)


def test_compressed_input_and_colored_output(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, use_compressed=True) as (node, tester):
        tester.subscribe_colored()
        time.sleep(0.5)
        buf = io.BytesIO()
        PILImage.fromarray(RGB).save(buf, format="PNG")
        depth = send_and_receive(tester, CompressedImage(format="png", data=buf.getvalue()), 5)
        reference = node.estimator.predict(RGB).depth[0]
        np.testing.assert_allclose(conversions.depth_image_to_array(depth), reference, atol=1e-6)
        colored = tester.wait_for("depth/colored")[0]
        assert (colored.encoding, colored.height, colored.width) == ("rgb8", 480, 640)
        assert colored.header.stamp.sec == 5


def test_model_load_failure_exits_with_one_clear_error(tmp_path):
    missing = tmp_path / "no_such_clip.pt"
    proc = subprocess.run([sys.executable, "-m", "depthclip_ros.node", "--ros-args",
                           "-p", f"model:={missing}", "-p", "device:=cpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr
