"""The depthclip node over real rclpy / DDS on this machine, with a tiny random CLIP."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import (
    ALL_ENCODINGS,
    camera_info,
    decode_like_the_plugin,
    encode,
    stamp,
    structured_image,
    wait_until,
)
from PIL import Image as PILImage
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import client_node, running_node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from depthclip_ros.config.params_files import default_params_file
from depthclip_ros.messages import decoding, outputs, point_cloud
from depthclip_ros.node.camera_pipeline import output_qos_profile
from depthclip_ros.tools.node_process import DDS_PROFILE_VARIABLES, node_arguments

RGB = structured_image()
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def send_and_receive(tester, msg, sec, topic="depth/image", timeout=20.0, publisher=None):
    stamp(msg, sec)
    if publisher is None:
        publisher = tester.compressed_pub if isinstance(msg, CompressedImage) else tester.image_pub
    publisher.publish(msg)
    return tester.wait_for(topic, predicate=lambda m: m.header.stamp.sec == sec, timeout=timeout)[
        -1
    ]


def diag_values(tester, predicate=lambda v: True, timeout=10.0):
    msgs = tester.wait_for(
        "/diagnostics",
        timeout=timeout,
        predicate=lambda m: predicate({kv.key: kv.value for kv in m.status[0].values}),
    )
    return {kv.key: kv.value for kv in msgs[-1].status[0].values}


def test_environment_is_local_private_and_untuned():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["ROS_DOMAIN_ID"] != "0"
    for variable in DDS_PROFILE_VARIABLES:  # the middleware's defaults, as on a robot
        assert variable not in os.environ


def test_outputs_are_reliable():
    from rclpy.qos import ReliabilityPolicy

    profile = output_qos_profile()
    assert profile.reliability == ReliabilityPolicy.RELIABLE and profile.depth == 5


def test_depth_cloud_and_info_carry_the_input_header(node_and_tester):
    node, tester = node_and_tester
    tester.info_pub.publish(
        stamp(
            camera_info(width=1280, height=960, fx=1000.0, fy=960.0, cx=640.0, cy=480.0), 42, 123
        )
    )
    wait_until(lambda: node.camera.camera_infos.latest is not None)
    msg = Image(**outputs.rgb8_image_fields(RGB))
    stamp(msg, 42, 123)
    tester.image_pub.publish(msg)
    depth_msg = tester.wait_for("depth/image")[0]
    cloud = tester.wait_for("points")[0]
    info = tester.wait_for("depth/camera_info")[0]
    for out in (depth_msg, cloud, info):
        assert (out.header.stamp.sec, out.header.stamp.nanosec) == (42, 123)
        assert out.header.frame_id == "camera_optical_frame"
    assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", 480, 640)
    depth = decoding.depth_image_to_array(depth_msg)
    bins = node.estimator.config.depth_bins
    assert np.isfinite(depth).all() and bins[0] <= depth.min() and depth.max() <= bins[-1]
    # camera_info was for a 2x larger image: intrinsics scale to the depth image.
    assert (info.width, info.height) == (640, 480)
    np.testing.assert_allclose(np.array(info.k)[[0, 2, 4, 5]], [500, 320, 480, 240])
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb", "std"]
    assert [f.offset for f in cloud.fields] == [0, 4, 8, 12, 16]
    assert all(f.datatype == 7 and f.count == 1 for f in cloud.fields)
    assert (cloud.height, cloud.width) == (60, 80) and cloud.point_step == 20
    points = point_cloud.pointcloud_to_array(cloud)
    v, u = 24 * 8, 37 * 8
    z = depth[v, u]
    np.testing.assert_allclose(
        points[24, 37, :3], [(u - 320) * z / 500, (v - 240) * z / 480, z], rtol=1e-5
    )
    assert points[24, 37, 3:].view(np.uint32)[0] == point_cloud.pack_rgb(RGB[v, u])[()].view(
        np.uint32
    )


def test_every_encoding_gives_the_rgb8_depth(node_and_tester):
    node, tester = node_and_tester
    reference = decoding.depth_image_to_array(
        send_and_receive(tester, Image(**outputs.rgb8_image_fields(RGB)), 1)
    )
    grey = np.repeat(RGB[..., :1], 3, axis=2)
    grey_ref = decoding.depth_image_to_array(
        send_and_receive(tester, Image(**outputs.rgb8_image_fields(grey)), 2)
    )
    cases = [(e, 0, False) for e in ALL_ENCODINGS] + [
        ("bgr8", 7, False),
        ("rgb16", 6, True),
        ("mono16", 2, True),
    ]
    for sec, (enc, padding, big) in enumerate(cases, start=10):
        depth = decoding.depth_image_to_array(
            send_and_receive(tester, encode(RGB, enc, padding, big), sec)
        )
        expected = grey_ref if enc.startswith("mono") else reference
        tol = 5e-3 if enc.startswith(("bayer", "yuv")) else 1e-6
        np.testing.assert_allclose(
            depth, expected, atol=tol, err_msg=f"{enc} pad={padding} be={big}"
        )


def test_malformed_flood_then_valid_frame_is_answered(node_and_tester):
    node, tester = node_and_tester
    good = encode(RGB, "rgb8")
    kinds = [
        dict(encoding="16UC1"),
        dict(encoding="32FC1"),
        dict(encoding="nv12"),
        dict(width=0),
        dict(height=0),
        dict(step=3),
        dict(data=b"\x01" * 10),
        dict(encoding="yuv422", width=639, step=1278),
        dict(encoding="rgb16"),
    ]
    for i in range(100):
        bad = encode(RGB, "rgb8")
        for k, v in kinds[i % len(kinds)].items():
            setattr(bad, k, v)
        tester.image_pub.publish(stamp(bad, 1000 + i))
        time.sleep(0.002)  # a 500 Hz stream of bad frames
    for i in range(5):
        tester.compressed_pub.publish(
            stamp(CompressedImage(format="jpeg", data=b"\xff\xd8\x00junk"), 2000 + i)
        )
    answered = send_and_receive(tester, good, 7)
    assert answered.height == 480
    assert not [m for m in tester.received["depth/image"] if m.header.stamp.sec >= 1000]
    values = diag_values(tester, lambda v: int(v["rejected frames (last 10 s)"]) > 0)
    assert (
        int(values["rejected frames (last 10 s)"]) > 0
        and values["failed frames (last 10 s)"] == "0"
    )


def test_parameter_changes(node_and_tester):
    node, tester = node_and_tester
    before = decoding.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 1))
    bad = [
        Parameter("depth_bins", value=[1.0, 2.0, 1.5, 3.0, 3.5, 4.0, 5.0]),
        Parameter("depth_tokens", value=["near", "far"]),
        Parameter("prompt_template", value="no placeholders"),
        Parameter("temperature", value=0.0),
        Parameter("cloud_stride", value=-1),
        Parameter("prompt_template", value="This {object} is " + "very " * 80 + "{token}"),
    ]
    for p in bad:
        result = node.set_parameters([p])[0]
        assert not result.successful and result.reason, p.name
    ro = node.set_parameters([Parameter("device", value="cuda")])[0]
    assert not ro.successful
    same = decoding.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 2))
    np.testing.assert_array_equal(same, before)

    ok = node.set_parameters_atomically(
        [
            Parameter("depth_tokens", value=["very close", "close", "far", "very far"]),
            Parameter("depth_bins", value=[2.0, 3.0, 4.0, 5.0]),
        ]
    )
    assert ok.successful, ok.reason
    after = decoding.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 3))
    assert 2.0 <= after.min() and after.max() <= 5.0 and not np.allclose(after, before)


def test_beyond_the_paper_options_change_at_run_time(node_and_tester):
    """dense_features, a template ensemble and head_precision set like any parameter: the next
    frame's depth is the core's with those options; invalid values get the schema's message."""
    node, tester = node_and_tester
    rejected = node.set_parameters([Parameter("dense_features", value="pooled")])[0]
    assert not rejected.successful and "must be one of subsampled, projected" in rejected.reason
    templates = ["This {object} is {token}", "a photo of a {token} {object}."]
    changes = [
        Parameter("dense_features", value="projected"),
        Parameter("prompt_template", value=templates),
        Parameter("head_precision", value="model"),
    ]
    assert node.set_parameters_atomically(changes).successful
    wait_until(lambda: node.estimator.config.dense_features == "projected")
    depth = decoding.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 4))
    config = node.estimator.config
    assert config.prompt_template == tuple(templates) and config.head_precision == "model"
    np.testing.assert_allclose(depth, node.estimator.predict(RGB).depth[0], atol=1e-6)
    paper = config.replace(dense_features="subsampled", prompt_template=tuple(templates[:1]))
    from depthclip_ros.estimator.core import DepthClip

    assert np.abs(DepthClip(paper).predict(RGB).depth[0] - depth).max() > 1e-4  # a real change


def test_scene_bins_auto_reports_the_scene_in_diagnostics(node_and_tester):
    node, tester = node_and_tester
    assert node.set_parameters([Parameter("scene_bins", value="auto")])[0].successful
    wait_until(lambda: node.estimator.config.scene_bins == "auto")
    depth = decoding.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 6))
    values = diag_values(tester, lambda v: v.get("scene", "none yet") != "none yet")
    scene = values["scene"]
    assert scene in node.estimator.config.scenes and 0.0 < float(values["scene score"]) <= 1.0
    expected = node.estimator.predict(RGB, scenes=[scene]).depth[0]
    np.testing.assert_allclose(depth, expected, atol=1e-6)
    bad = node.set_parameters([Parameter("scene_presets", value=["bathroom:nope"])])[
        0
    ]  # auto: checked
    assert not bad.successful and "unknown preset" in bad.reason


def test_run_time_changes_while_fusing_answer_every_frame(tiny_checkpoint, tmp_path):
    """temporal_filter mixture on, then the network input, the preprocessing, the bins and
    the temperature changed through the parameter interface: every next frame is answered,
    the first after each change being the frame alone under the new config (the state restarts
    on a new feature grid, region or head: before, a new input_width broke every frame)."""
    with running_node(
        tiny_checkpoint, tmp_path, temporal_filter="mixture", input_width=128, input_height=96
    ) as (node, tester):
        for sec in (1, 2):
            send_and_receive(tester, encode(RGB, "rgb8"), sec)
        changes = [
            {"input_width": 160},
            {"preprocessing": "crop"},
            {"preprocessing": "resize", "input_height": 128},
            {"depth_bins": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]},
            {"temperature": 2.0},
        ]
        assert_each_change_restarts_the_fusion(node, tester, changes, first_sec=3)


def assert_each_change_restarts_the_fusion(node, tester, changes, first_sec):
    """Each of `changes` set through the parameter interface while the temporal filter fuses:
    the next frame is that frame alone under the new config, the one after it answered too; no
    frame failed."""
    sec = first_sec
    for change in changes:
        result = node.set_parameters_atomically(
            [Parameter(name, value=value) for name, value in change.items()]
        )
        assert result.successful, result.reason
        wanted = {k: tuple(v) if isinstance(v, list) else v for k, v in change.items()}

        def applied(wanted=wanted):
            return all(getattr(node.estimator.config, k) == v for k, v in wanted.items())

        wait_until(applied)
        first = decoding.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), sec))
        alone = node.estimator.predict(RGB).depth[0]
        np.testing.assert_allclose(first, alone, atol=1e-5, equal_nan=True, err_msg=change)
        send_and_receive(tester, encode(RGB, "rgb8"), sec + 1)  # fused: answered too
        sec += 2
    assert diag_values(tester)["failed frames (last 10 s)"] == "0"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_two_forwards_in_flight_answer_frames_in_order_and_take_run_time_changes(
    tiny_checkpoint, tmp_path, backend
):
    """inference_streams 2 on each runtime of exported graphs: the node
    starts a frame beside the one in flight (diagnostics: 2 forwards in flight), a third once
    one has ended; they are published in stamp order, fused by the temporal filter, without a
    failed frame; a temperature and new bins changed at run time give the next frame the new
    config's depth alone (the filter restarts on a new head)."""
    from helpers import model_config

    from depthclip_ros.estimator.result import ForwardEnd, Started
    from depthclip_ros.export.graph import export

    graph = tmp_path / "tiny.onnx"
    config = model_config(tiny_checkpoint, tmp_path / "cache", input_width=128, input_height=96)
    export(config, graph, reference=False)
    with running_node(
        str(graph),
        tmp_path,
        backend=backend,
        inference_streams=2,
        temporal_filter="mixture",
        input_width=128,
        input_height=96,
    ) as (node, tester):
        send_and_receive(tester, encode(RGB, "rgb8"), 1)
        assert (
            diag_values(tester, lambda v: "forwards in flight" in v)["forwards in flight"] == "2"
        )
        # Each forward's end held until the test lets them all end: the second frame must start
        # while the first is in flight, the third wait for a free stream.
        gate, begun = ForwardEnd(), []
        start_one = node.estimator._start_one

        def held(fields, feeds):
            started = start_one(fields, feeds)
            begun.append(started)
            return Started(
                lambda: (wait_until(gate.is_set), started())[1],
                lambda: gate.is_set() and started.done(),
                lambda callback: gate.when_set(lambda: started.when_done(callback)),
            )

        node.estimator._start_one = held
        frames = [structured_image(seed=seed) for seed in range(3)]
        for sec, frame in enumerate(frames, start=2):
            tester.image_pub.publish(stamp(encode(frame, "rgb8"), sec))
            wait_until(lambda n=sec: len(begun) == min(n - 1, 2))
        time.sleep(0.3)
        assert len(begun) == 2  # the third frame waits: two forwards in flight at most
        secs = lambda: [m.header.stamp.sec for m in tester.received["depth/image"]]  # noqa: E731
        assert secs() == [1]  # nothing published while the forwards are held
        gate.set()
        tester.wait_for("depth/image", predicate=lambda m: m.header.stamp.sec == 4)
        assert secs() == [1, 2, 3, 4]  # every frame, in order
        assert len(begun) == 3
        changes = [{"temperature": 2.0}, {"depth_bins": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]}]
        assert_each_change_restarts_the_fusion(node, tester, changes, first_sec=10)


def test_frames_in_flight_on_cuda_graphs_answer_in_order_with_each_frames_depth(
    tiny_checkpoint, tmp_path
):
    """The core with CUDA graphs (CPU stand-ins of the captures): the node starts a frame
    while the one before is on its way back (diagnostics: 2 forwards in flight), a third once
    one has arrived; they are published in stamp order, each with its own frame's depth."""
    from captured_frame_stand_in import Held, stand_in

    from depthclip_ros.estimator.cuda_graph import CapturedFrames
    from depthclip_ros.estimator.result import ForwardEnd

    gate, begun, holding = ForwardEnd(), [], []

    class HeldCapture(stand_in()):
        def start(self, *args, **kwargs):
            if not holding:  # the warm-up at camera_info and the first frame
                return super().start(*args, **kwargs)
            begun.append(1)
            return Held(super().start(*args, **kwargs), gate)

    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        node.estimator.graphs = CapturedFrames(node.estimator, HeldCapture)
        tester.info_pub.publish(camera_info())
        frames = [structured_image(seed=seed) for seed in range(4)]
        send_and_receive(tester, encode(frames[0], "rgb8"), 1)
        assert (
            diag_values(tester, lambda v: "forwards in flight" in v)["forwards in flight"] == "2"
        )
        holding.append(True)
        for sec, frame in enumerate(frames[1:], start=2):
            tester.image_pub.publish(stamp(encode(frame, "rgb8"), sec))
            wait_until(lambda n=sec: len(begun) == min(n - 1, 2))
        time.sleep(0.3)
        assert len(begun) == 2  # the third frame waits: two in flight at most
        secs = lambda: [m.header.stamp.sec for m in tester.received["depth/image"]]  # noqa: E731
        assert secs() == [1]  # nothing published while their arrays are held
        gate.set()
        tester.wait_for("depth/image", predicate=lambda m: m.header.stamp.sec == 4)
        assert secs() == [1, 2, 3, 4] and len(begun) == 3  # every frame, in order
        for msg, frame in zip(tester.received["depth/image"], frames):
            expected = node.estimator.predict_eager(frame).depth[0]
            np.testing.assert_allclose(
                decoding.depth_image_to_array(msg), expected, rtol=0, atol=1e-6
            )


def test_all_model_work_runs_on_the_worker_thread(monkeypatch, tiny_checkpoint, tmp_path):
    """Loading, warm-up, config changes and frames: one thread (torch on two threads is slower)."""
    import threading

    from depthclip_ros.estimator.core import DepthClip

    calls = []
    for name in ("__init__", "warm_up", "update_config", "begin_predict"):
        real = getattr(DepthClip, name)

        def recorder(self, *args, _real=real, _name=name, **kwargs):
            calls.append((_name, threading.current_thread().name))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(DepthClip, name, recorder)
    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        send_and_receive(tester, encode(RGB, "rgb8"), 1)
        assert node.set_parameters(
            [Parameter("depth_bins", value=[1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])]
        )[0].successful
        after = decoding.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 2))
    assert [name for name, _ in calls][:2] == ["__init__", "warm_up"]
    assert {"update_config", "begin_predict"} <= {name for name, _ in calls}
    assert {thread for _, thread in calls} == {"depthclip-worker"}
    assert after.max() > 3.0  # the change reached the frame after it


def test_a_cameras_size_is_prepared_from_its_camera_info_at_max_batch(
    monkeypatch, tiny_checkpoint, tmp_path
):
    """Where an estimator builds per image size (CUDA graphs, TensorRT engines), the node asks
    for a camera's size and max_batch when its camera_info comes, on the worker thread, once:
    not on its first frames."""
    import threading

    from depthclip_ros.estimator.core import DepthClip

    prepared = []
    monkeypatch.setattr(DepthClip, "prepares_image_sizes", property(lambda self: True))
    real = DepthClip.warm_up

    def recorder(self, image_size=None, max_batch=1):
        prepared.append((image_size, max_batch, threading.current_thread().name))
        return real(self, image_size, 1)  # the CPU's work: one image

    monkeypatch.setattr(DepthClip, "warm_up", recorder)
    with running_node(tiny_checkpoint, tmp_path, max_batch=3) as (node, tester):
        for _ in range(2):
            tester.info_pub.publish(camera_info(width=320, height=240))
        wait_until(lambda: len(prepared) == 2)
        tester.info_pub.publish(camera_info(width=320, height=240))
        send_and_receive(tester, encode(RGB, "rgb8"), 1)
    assert prepared == [
        (None, 1, "depthclip-worker"),  # configure: the network's size
        ((240, 320), 3, "depthclip-worker"),
    ]


def test_burst_drops_old_frames_and_answers_the_newest(node_and_tester):
    node, tester = node_and_tester
    tester.info_pub.publish(camera_info())
    real_begin = node.estimator.begin_predict

    def slow_begin(images, **kwargs):
        time.sleep(0.15)
        return real_begin(images, **kwargs)

    node.estimator.begin_predict = slow_begin
    msg = encode(RGB, "rgb8")
    send_and_receive(tester, msg, 1)  # warm up

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def burst(first):
        tester.clear()
        for i in range(50):
            tester.image_pub.publish(stamp(msg, first + i))
            time.sleep(0.01)
        return tester.wait_for("depth/image", predicate=lambda m: m.header.stamp.sec == first + 49)

    burst(100)
    rss_before = rss_mb()
    outputs = burst(200)
    rss_after = rss_mb()  # 249 was the newest frame: nothing is answered after it
    secs = [m.header.stamp.sec for m in tester.received["depth/image"]]
    assert len(secs) < 50 and secs[-1] == 249 and secs == sorted(secs)
    values = diag_values(tester, lambda v: int(v["dropped frames (last 10 s)"]) > 0)
    assert int(values["dropped frames (last 10 s)"]) >= 50 - len(secs) - 5
    assert rss_after - rss_before < 30, (rss_before, rss_after)
    assert len(outputs) >= 1


def test_depth_without_camera_info_and_coarse_cloud(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, cloud_stride=0) as (node, tester):
        send_and_receive(tester, encode(RGB, "rgb8"), 1)
        values = diag_values(tester, lambda v: v["published frames (since activation)"] == "1")
        assert values["camera_info"] == "missing"
        assert values["cuda graphs"] == "not used"  # CPU: every frame runs eagerly
        # One frame timed: its forward is part of its latency (publish time - stamp from 1970).
        assert 0 < float(values["inference median (ms)"]) < float(values["latency median (ms)"])
        # Where its time went, stage by stage, each part of the latency too.
        stages = ("decode", "after the model", "outputs")
        assert all(0 < float(values[f"{s} median (ms)"]) for s in stages), values
        assert sum(float(values[f"{s} median (ms)"]) for s in (*stages, "inference")) < float(
            values["latency median (ms)"]
        )
        # The threads' CPU: the worker's and the executor's (which took the frame) named.
        assert {"CPU, worker (% of a core)", "CPU, executor (% of a core)"} <= set(values)
        tester.info_pub.publish(camera_info())
        wait_until(lambda: node.camera.camera_infos.latest is not None)
        send_and_receive(tester, encode(RGB, "rgb8"), 2)
        cloud = tester.wait_for("points")[0]
        # In order on one reliable publisher: a cloud of frame 1 would have come before this one.
        assert [m.header.stamp.sec for m in tester.received["points"]] == [2]
        assert (cloud.height, cloud.width) == (13, 17)  # 416x544 grid of the default resize input
        pts = point_cloud.pointcloud_to_array(cloud)
        # The last grid cell sits exactly on the last pixel (639, 479).
        z = pts[-1, -1, 2]
        np.testing.assert_allclose(
            pts[-1, -1, :2], [(639 - 320) * z / 500, (479 - 240) * z / 480], rtol=1e-5
        )


def test_compressed_input_and_colored_output(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, use_compressed=True) as (node, tester):
        tester.subscribe_colored()
        wait_until(lambda: node.camera.outputs["colored"].get_subscription_count() > 0)
        buf = io.BytesIO()
        PILImage.fromarray(RGB).save(buf, format="PNG")
        depth = send_and_receive(tester, CompressedImage(format="png", data=buf.getvalue()), 5)
        reference = node.estimator.predict(RGB).depth[0]
        np.testing.assert_allclose(decoding.depth_image_to_array(depth), reference, atol=1e-6)
        colored = tester.wait_for("depth/colored")[0]
        assert (colored.encoding, colored.height, colored.width) == ("rgb8", 480, 640)
        assert colored.header.stamp.sec == 5


@pytest.mark.slow
def test_start_up_errors_are_one_line_under_the_nodes_full_name(tmp_path):
    missing = tmp_path / "no_such_clip.pt"
    cases = [
        (["-p", f"model:={missing}"], str(missing)),
        (
            ["-p", "qos_overrides./front/image.subscription.reliability:=sometimes"],
            "qos_overrides./front/image.subscription.reliability",
        ),
        # The schema's own message, word for word what depthclip-bag and depthclip-eval say.
        (
            ["-p", "temperature:=150"],
            "invalid config field 'temperature' = 150.0: must be from 0.0001 to 100.0",
        ),
        (
            ["-p", "cloud_stride:=2.5"],
            "invalid config field 'cloud_stride' = 2.5: must be an integer",
        ),
        (["-p", "autostart:=maybe"], "invalid config field 'autostart' = 'maybe'"),
        (["-p", "executor:=threads"], "invalid config field 'executor' = 'threads'"),
    ]
    for args, expected in cases:  # one after the other (see README, Tests: start-up errors)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "depthclip_ros.node",
                "--ros-args",
                "-r",
                "__ns:=/front",
                "-p",
                "device:=cpu",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, proc.stderr
        fatal = [line for line in proc.stderr.splitlines() if "FATAL" in line]
        assert len(fatal) == 1 and "[front.depthclip]" in fatal[0] and expected in fatal[0], (
            proc.stderr
        )
        assert "Traceback" not in proc.stderr


def test_the_executor_is_rclpys_events_executor_where_it_has_one(monkeypatch):
    """auto: the EventsExecutor on this rclpy (Jazzy's and Kilted's wheels have it); on one
    without it (Humble) the SingleThreadedExecutor, and `events` there one line that says so."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from depthclip_ros.errors import ConfigError
    from depthclip_ros.node.process import make_executor

    rclpy.init()
    try:
        assert type(make_executor("auto")).__name__ == "EventsExecutor"
        assert isinstance(make_executor("single_threaded"), SingleThreadedExecutor)
        monkeypatch.setitem(sys.modules, "rclpy.experimental.events_executor", None)  # Humble
        assert isinstance(make_executor("auto"), SingleThreadedExecutor)
        with pytest.raises(ConfigError, match="no EventsExecutor"):
            make_executor("events")
    finally:
        rclpy.shutdown()


# The node's entry point with its modules' import held (as torch's and rclpy's take seconds),
# saying when it is there: a Ctrl-C then must not print a KeyboardInterrupt traceback.
_SLOW_IMPORT = """
import importlib.abc, sys, time

class Held(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "depthclip_ros.node.lifecycle_node":
            print("importing", flush=True)
            time.sleep(60)

sys.meta_path.insert(0, Held())
from depthclip_ros.node.entry_point import main
sys.exit(main())
"""


def test_ctrl_c_while_the_node_loads_its_modules_ends_it_quietly():
    """SIGINT while the entry point imports the node's modules (before rclpy is up): exit 0,
    nothing on stderr (launch would otherwise show a KeyboardInterrupt traceback)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_IMPORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "importing\n"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and stderr == "", stderr


# The node's process up to where it would run the node: what it leaves torch's threads to do.
_WAIT_POLICY_AT_RUN = """
import os, sys
from depthclip_ros.node import process

def run(args=None):
    print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules, flush=True)
    return 0

process.run = run
from depthclip_ros.node.entry_point import main
main()
"""


@pytest.mark.parametrize("chosen", [None, "ACTIVE"])
def test_the_nodes_torch_threads_wait_without_spinning_unless_the_user_chose(chosen):
    """The node's process sets OMP_WAIT_POLICY=PASSIVE before torch is imported (libgomp reads
    it then), and keeps a user's own choice."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if chosen:
        env["OMP_WAIT_POLICY"] = chosen
    proc = subprocess.run(
        [sys.executable, "-c", _WAIT_POLICY_AT_RUN], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [chosen or "PASSIVE", "False"]


def node_entry_point(
    script: str, tiny_checkpoint, tmp_path, executor="auto", **popen
) -> subprocess.Popen:
    """`script` (ending in the node's main) as the node's process, with the shipped params
    file, the tiny model and `executor`."""
    overrides = {"model": tiny_checkpoint, "device": "cpu", "cache_dir": tmp_path}
    overrides["executor"] = executor
    cmd = [sys.executable, "-c", script, *node_arguments(default_params_file(), overrides)]
    return subprocess.Popen(cmd, stderr=subprocess.STDOUT, text=True, **popen)


# The first camera_info rclpy builds (the node takes camera_infos serialized and deserializes
# each in its callback, under either executor) sends the process a SIGINT while rclpy's C++
# builds the message: where a Ctrl-C lands on a busy node now and then.
_INTERRUPTED_WHILE_TAKING = """
import os, signal, sys
from sensor_msgs.msg import CameraInfo

built = CameraInfo.__init__

def interrupted_while_built(self, *args, **kwargs):
    if sys._getframe(1).f_code.co_name == "deserialize_message":
        print("interrupting", flush=True)
        os.kill(os.getpid(), signal.SIGINT)
    built(self, *args, **kwargs)

CameraInfo.__init__ = interrupted_while_built
from depthclip_ros.node.entry_point import main
sys.exit(main())
"""


def _signalled_in(method: str, signum: str, said: str) -> str:
    """A node process whose DepthClipNode.`method`, called, says `said`, sends the process
    `signum`, waits for rclpy to shut the middleware down, then runs as it would."""
    return f"""
import os, signal, sys, time
from depthclip_ros.node.lifecycle_node import DepthClipNode

real = DepthClipNode.{method}

def after_the_shutdown(self):
    print("{said}", flush=True)
    os.kill(os.getpid(), signal.{signum})
    while self.context.ok():
        time.sleep(0.01)
    real(self)

DepthClipNode.{method} = after_the_shutdown
from depthclip_ros.node.entry_point import main
sys.exit(main())
"""


# The diagnostics timer's callback, in hand when the SIGINT comes, publishes once rclpy's own
# thread has shut the middleware down.
_INTERRUPTED_IN_A_TIMER = _signalled_in("_publish_diagnostics", "SIGINT", "interrupting")


@pytest.mark.parametrize(
    "script, executor",
    [
        (_INTERRUPTED_WHILE_TAKING, "events"),
        (_INTERRUPTED_WHILE_TAKING, "single_threaded"),
        (_INTERRUPTED_IN_A_TIMER, "auto"),
    ],
    ids=["taking-events", "taking-single_threaded", "timer"],
)
def test_ctrl_c_in_a_running_nodes_callbacks_ends_it_quietly(
    script, executor, tiny_checkpoint, tmp_path
):
    """A KeyboardInterrupt raised while rclpy builds a message (in rclpy's take it became a
    RuntimeError, 'Unable to convert call argument'), a callback in hand fails on the shut-down
    middleware (RCLError: 'the publisher's context is invalid'): each was a traceback and exit
    1 (seen under ros2 launch in CI). The running node takes a Ctrl-C by rclpy's shutdown
    alone: exit 0, no traceback."""
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = node_entry_point(script, tiny_checkpoint, tmp_path, executor, stdout=out)
    try:
        with client_node() as node:
            image_pub = node.create_publisher(Image, "image", RELIABLE)
            info_pub = node.create_publisher(CameraInfo, "camera_info", RELIABLE)
            wait_until(lambda: info_pub.get_subscription_count() > 0, timeout=60)
            info_pub.publish(stamp(camera_info(160, 120, 200.0, 200.0, 80.0, 60.0), 1))
            image_pub.publish(stamp(encode(structured_image(120, 160), "rgb8"), 1))
            proc.wait(timeout=30)
    finally:
        proc.kill()
    output = log.read_text()
    assert "interrupting" in output.splitlines(), output[-3000:]
    assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]


# A SIGTERM (a scheduler, launch's escalation) in the instant the node activates: rclpy shuts
# the middleware down before the node's inputs and outputs are made.
_TERMINATED_WHILE_ACTIVATING = _signalled_in("_update_inputs", "SIGTERM", "terminating")


def test_a_sigterm_while_the_node_activates_ends_it_quietly(tiny_checkpoint, tmp_path):
    """Making a publisher on the shut-down middleware raised (RCLError: 'rcl node's context is
    invalid'), which the node took for a failed activation: a FATAL line and exit 1. A stop
    asked for while it starts is no failure: exit 0, no FATAL, no traceback."""
    proc = node_entry_point(
        _TERMINATED_WHILE_ACTIVATING, tiny_checkpoint, tmp_path, stdout=subprocess.PIPE
    )
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "terminating" in output.splitlines(), output[-3000:]
    assert proc.returncode == 0, output[-3000:]
    assert "FATAL" not in output and "Traceback" not in output, output[-3000:]


# Says when Python starts to exit (atexit: before the interpreter's own finalization, which
# puts its SIGINT handlers back to the default), and when that finalization tears its modules
# down (an object of __main__ deleted).
_SAYS_WHEN_EXITING = """
import atexit, sys
from depthclip_ros.node.entry_point import main

class SaysWhenTornDown:
    def __del__(self):
        print("torn down", flush=True)

held = SaysWhenTornDown()
atexit.register(print, "exiting", flush=True)
sys.exit(main())
"""


def test_a_second_ctrl_c_while_the_node_exits_does_not_end_it_by_the_signal(
    tiny_checkpoint, tmp_path
):
    """ros2 launch without a terminal sends the node its own SIGINT after the group's: one may
    come as Python exits. The node running (it answers a frame), a Ctrl-C, then
    SIGINTs all through the exit: still exit 0 (not -2, launch's 'process has died'). The
    process ends after the atexit handlers without Python's teardown of its modules (with torch
    loaded it took 1 to 3 s, past launch's 5 s grace after a SIGINT on a loaded machine: an
    [ERROR] and a SIGTERM)."""
    proc = node_entry_point(_SAYS_WHEN_EXITING, tiny_checkpoint, tmp_path, stdout=subprocess.PIPE)
    output = []
    try:
        with client_node() as node:
            answers = []
            node.create_subscription(Image, "depth/image", answers.append, RELIABLE)
            image_pub = node.create_publisher(Image, "image", RELIABLE)
            frame = stamp(encode(structured_image(120, 160), "rgb8"), 1)

            def answered():  # until the answer's subscription has matched too
                image_pub.publish(frame)
                return bool(answers)

            wait_until(answered, timeout=60, interval=0.2)
        proc.send_signal(signal.SIGINT)
        for line in iter(proc.stdout.readline, ""):
            output.append(line)
            if line == "exiting\n":
                break
        while proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            time.sleep(0.001)
    finally:
        proc.kill()
        output += proc.stdout.readlines()
        proc.stdout.close()
    assert "exiting\n" in output and proc.wait() == 0, "".join(output)[-3000:]
    assert "torn down\n" not in output, "".join(output)[-3000:]


# ------------------------------------------------------------------ the transport users have

CAMERA_PROCESS = os.path.join(os.path.dirname(__file__), "..", "support", "camera_process.py")


def run_camera_process(width, height, reliability, count, namespace="", timeout=20.0):
    """The camera stand-in as its own process (frames one at a time, each waited for): its
    report."""
    proc = subprocess.run(
        [
            sys.executable,
            CAMERA_PROCESS,
            str(width),
            str(height),
            reliability,
            str(count),
            str(timeout),
            namespace,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def subscription_reliability(tester, topic):
    infos = [
        i for i in tester.node.get_subscriptions_info_by_topic(topic) if i.node_name == "depthclip"
    ]
    return {i.qos_profile.reliability.name.lower() for i in infos}


@pytest.mark.slow
def test_vga_frames_from_a_reliable_publisher_in_another_process_are_all_answered(
    tiny_checkpoint, tmp_path
):
    """Default middleware, no XML profile: a 900 KB frame crosses processes as fragmented UDP."""
    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        report = run_camera_process(640, 480, "reliable", 10)
        assert report["answered"] == list(range(1, 11))
        assert node.camera.inputs[0].reliability == "reliable"


def test_a_best_effort_publisher_is_served_best_effort(node_and_tester):
    """A best-effort publisher does not match a reliable subscription: the input adapts to it."""
    node, tester = node_and_tester
    report = run_camera_process(320, 240, "best_effort", 10)
    # Answers at all mean the input matched the best-effort publisher (a reliable subscription
    # does not). Best effort may lose a frame; 10 of 10 were answered in every run here.
    assert len(report["answered"]) >= 8, report
    wait_until(
        lambda: node.camera.inputs[0].reliability == "reliable"
    )  # only the tester's reliable pub left
    assert subscription_reliability(tester, "/image") == {"reliable"}


def test_input_reliability_follows_publishers_and_can_be_forced(tiny_checkpoint, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    with running_node(tiny_checkpoint, tmp_path) as (node, tester):
        assert subscription_reliability(tester, "/image") == {"reliable"}
        best_effort = tester.node.create_publisher(
            Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        wait_until(lambda: subscription_reliability(tester, "/image") == {"best_effort"})
        answered = send_and_receive(tester, encode(RGB, "rgb8"), 3, publisher=best_effort)
        assert answered.header.stamp.sec == 3
        tester.node.destroy_publisher(best_effort)
        wait_until(lambda: subscription_reliability(tester, "/image") == {"reliable"})
    forced = {
        "qos_overrides./image.subscription.reliability": "best_effort",
        "qos_overrides./depth/image.publisher.reliability": "best_effort",
    }
    with running_node(tiny_checkpoint, tmp_path, **forced) as (node, tester):
        # The input saw the tester's reliable publisher (auto would now switch to reliable).
        wait_until(lambda: node.camera.inputs[0].told)
        assert subscription_reliability(tester, "/image") == {"best_effort"}
        assert subscription_reliability(tester, "/camera_info") == {"reliable"}
        offered = {
            i.qos_profile.reliability.name.lower()
            for i in tester.node.get_publishers_info_by_topic("/depth/image")
        }
        assert offered == {"best_effort"}
        assert (
            node.get_parameter("qos_overrides./points.publisher.reliability").value == "reliable"
        )


# ------------------------------------------------------------------ camera_info paired by stamp


def test_camera_info_published_after_its_image_pairs_by_stamp(tiny_checkpoint, tmp_path):
    """Drivers publish the image first, its camera_info right after: each frame gets its own K."""
    with running_node(tiny_checkpoint, tmp_path, camera_info_wait=2.0) as (node, tester):
        for sec in range(1, 6):
            fx = 400.0 + 20 * sec
            tester.image_pub.publish(stamp(encode(RGB, "rgb8"), sec))
            time.sleep(0.05)  # the camera_info comes 50 ms after its image
            tester.info_pub.publish(stamp(camera_info(fx=fx, fy=fx), sec))
            info = tester.wait_for(
                "depth/camera_info", predicate=lambda m, s=sec: m.header.stamp.sec == s
            )[0]
            cloud = tester.wait_for("points", predicate=lambda m, s=sec: m.header.stamp.sec == s)[
                0
            ]
            assert info.k[0] == fx and info.p[0] == fx, sec
            depth = decoding.depth_image_to_array(
                tester.wait_for("depth/image", predicate=lambda m, s=sec: m.header.stamp.sec == s)[
                    0
                ]
            )
            points = point_cloud.pointcloud_to_array(cloud)
            z = depth[0, 0]
            np.testing.assert_allclose(points[0, 0, 0], (0 - 320) * z / fx, rtol=1e-5)
        values = diag_values(tester, lambda v: v["published frames (since activation)"] == "5")
        assert values["frames paired with another stamp's camera_info (last 10 s)"] == "0"


def test_without_a_matching_stamp_the_latest_camera_info_is_used(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, camera_info_wait=0.2) as (node, tester):
        tester.info_pub.publish(stamp(camera_info(fx=555.0, fy=555.0), 99, frame="other_frame"))
        wait_until(lambda: node.camera.camera_infos.latest is not None)
        send_and_receive(tester, encode(RGB, "rgb8"), 7)
        info = tester.wait_for("depth/camera_info")[0]
        assert info.k[0] == 555.0 and info.header.stamp.sec == 7
        assert info.header.frame_id == "camera_optical_frame"  # outputs keep the image's frame
        values = diag_values(tester, lambda v: v["published frames (since activation)"] == "1")
        assert values["frames paired with another stamp's camera_info (last 10 s)"] == "1"


def test_binning_and_roi_are_applied_once(node_and_tester):
    from sensor_msgs.msg import RegionOfInterest

    node, tester = node_and_tester
    full = camera_info(width=1280, height=960, fx=1000.0, fy=1000.0, cx=700.0, cy=500.0)
    full.binning_x = full.binning_y = 2
    full.roi = RegionOfInterest(x_offset=40, y_offset=20, width=1280, height=960)
    tester.image_pub.publish(stamp(encode(RGB, "rgb8"), 3))  # 640x480: the binned full frame
    tester.info_pub.publish(stamp(full, 3))
    info = tester.wait_for("depth/camera_info")[0]
    assert (info.width, info.height, info.binning_x, info.binning_y) == (640, 480, 0, 0)
    assert (info.roi.x_offset, info.roi.width) == (0, 0)
    np.testing.assert_allclose(
        np.array(info.k)[[0, 2, 4, 5]], [500, (700 - 40) / 2, 500, (500 - 20) / 2]
    )


# ------------------------------------------------------------------ namespaces and parameter files


@pytest.mark.slow
def test_two_namespaced_instances_each_use_their_params_file(tiny_checkpoint, tmp_path):
    """Two cameras, two node processes, one `/**/depthclip:` file each, as the launch file starts
    them."""
    from depthclip_ros.tools.demo import start_node_process

    bins = {"/front": [4.0, 5.0, 6.0, 7.0], "/rear": [8.0, 9.0, 10.0, 11.0]}
    nodes = []
    try:
        for ns, depth_bins in bins.items():
            params = tmp_path / f"{ns[1:]}.yaml"
            params.write_text(
                "/**/depthclip:\n  ros__parameters:\n"
                f"    model: {tiny_checkpoint}\n    device: cpu\n    temperature: 1.0\n"
                f"    cache_dir: {tmp_path / 'cache'}\n    depth_tokens: [a, b, c, d]\n"
                f"    depth_bins: {depth_bins}\n"
            )
            nodes.append(
                start_node_process(params, {}, {}, tmp_path / f"{ns[1:]}.log", namespace=ns)
            )
        for ns, depth_bins in bins.items():
            report = run_camera_process(160, 120, "reliable", 3, namespace=ns, timeout=60)
            assert report["answered"] == [1, 2, 3], (ns, report)
            assert (
                depth_bins[0]
                <= report["depth_range"][0]
                <= report["depth_range"][1]
                <= depth_bins[-1]
            )
    finally:
        for proc in nodes:
            proc.terminate()
            proc.wait(timeout=30)


def test_depth_std_is_lazy_and_the_cloud_filters_change_at_run_time(node_and_tester):
    """depth/std goes out only while subscribed, with the depth's header; the cloud's `std`
    field is the same std; cloud_max_std and the range limits drop points from the next frame."""
    node, tester = node_and_tester
    tester.info_pub.publish(stamp(camera_info(), 1))
    wait_until(lambda: node.camera.camera_infos.latest is not None)
    send_and_receive(tester, encode(RGB, "rgb8"), 1)
    assert node.camera.outputs["std"].get_subscription_count() == 0  # nobody asked: not sent
    stds = []
    tester.node.create_subscription(Image, "depth/std", stds.append, 10)
    wait_until(lambda: node.camera.outputs["std"].get_subscription_count() > 0)
    tester.info_pub.publish(stamp(camera_info(), 2))
    send_and_receive(tester, encode(RGB, "rgb8"), 2)
    wait_until(lambda: any(m.header.stamp.sec == 2 for m in stds))
    std_msg = next(m for m in stds if m.header.stamp.sec == 2)
    depth_msg = tester.wait_for("depth/image", predicate=lambda m: m.header.stamp.sec == 2)[0]
    assert std_msg.header == depth_msg.header and std_msg.encoding == "32FC1"
    std = decoding.depth_image_to_array(std_msg)
    depth = decoding.depth_image_to_array(depth_msg)
    cloud = tester.wait_for("points", predicate=lambda m: m.header.stamp.sec == 2)[0]
    points = point_cloud.pointcloud_to_array(cloud)
    np.testing.assert_array_equal(points[..., 4], std[::8, ::8])
    assert np.isfinite(points[..., 2]).all()

    limit = float(np.median(std[::8, ::8]))
    near, far = float(np.percentile(depth, 30)), float(np.percentile(depth, 80))
    results = node.set_parameters(
        [
            Parameter("cloud_max_std", value=limit),
            Parameter("cloud_min_range", value=near),
            Parameter("cloud_max_range", value=far),
        ]
    )
    assert all(r.successful for r in results)
    tester.info_pub.publish(stamp(camera_info(), 3))
    send_and_receive(tester, encode(RGB, "rgb8"), 3)
    cloud = tester.wait_for("points", predicate=lambda m: m.header.stamp.sec == 3)[0]
    points = point_cloud.pointcloud_to_array(cloud)
    z, s = depth[::8, ::8], std[::8, ::8]  # the same frame content: the same depth and std
    expected = (s <= limit) & (z >= near) & (z <= far)
    assert 0 < expected.sum() < expected.size
    np.testing.assert_array_equal(np.isfinite(points[..., 2]), expected)
    assert cloud.is_dense is False


def test_a_camera_info_subscriber_alone_costs_no_cloud(tiny_checkpoint, tmp_path, monkeypatch):
    """depth/camera_info goes out with its image's stamp while nobody subscribes to points:
    no cloud is made and predict brings back no std for one; points subscribed, the next frame
    has its cloud."""
    clouds, fetched = [], []
    made = point_cloud.cloud_points
    monkeypatch.setattr(point_cloud, "cloud_points", lambda *a: clouds.append(1) or made(*a))
    with running_node(tiny_checkpoint, tmp_path, listen=False) as (node, tester):
        begin = node.estimator.begin_predict

        def spied(images, scenes=None, arrays=None):
            fetched.append(arrays)
            return begin(images, scenes=scenes, arrays=arrays)

        node.estimator.begin_predict = spied
        infos = []
        tester.node.create_subscription(Image, "depth/image", tester._store("depth/image"), 10)
        tester.node.create_subscription(CameraInfo, "depth/camera_info", infos.append, 10)
        wait_until(lambda: node.camera.outputs["camera_info"].get_subscription_count() > 0)
        tester.info_pub.publish(stamp(camera_info(), 1))
        wait_until(lambda: node.camera.camera_infos.latest is not None)
        send_and_receive(tester, encode(RGB, "rgb8"), 1)
        wait_until(lambda: any(m.header.stamp.sec == 1 for m in infos))
        assert clouds == [] and fetched == [("depth",)]
        tester.listen()  # points too
        wait_until(lambda: node.camera.outputs["points"].get_subscription_count() > 0)
        tester.info_pub.publish(stamp(camera_info(), 2))
        send_and_receive(tester, encode(RGB, "rgb8"), 2)
        tester.wait_for("points", predicate=lambda m: m.header.stamp.sec == 2)
        assert clouds == [1] and fetched[-1] == ("depth", "depth_std")


def test_compressed_depth_is_lazy_and_decodes_as_image_transport_does(node_and_tester):
    """depth/image/compressedDepth goes out only while subscribed, with the depth's header, in
    compressed_depth_image_transport's format: decoded, the depth within one code step."""
    node, tester = node_and_tester
    send_and_receive(tester, encode(RGB, "rgb8"), 1)
    publisher = node.camera.outputs["compressed_depth"]
    assert publisher.get_subscription_count() == 0  # nobody asked: not encoded
    received = []
    tester.node.create_subscription(
        CompressedImage, "depth/image/compressedDepth", received.append, 10
    )
    wait_until(lambda: publisher.get_subscription_count() > 0)
    depth_msg = send_and_receive(tester, encode(RGB, "rgb8"), 2)
    wait_until(lambda: any(m.header.stamp.sec == 2 for m in received))
    msg = next(m for m in received if m.header.stamp.sec == 2)
    assert msg.header == depth_msg.header
    decoded, quant_a, _, header_format = decode_like_the_plugin(msg.format, bytes(msg.data))
    depth = decoding.depth_image_to_array(depth_msg)
    assert header_format == 0 and quant_a == np.float32(100.0 * 101.0)  # the plugin's defaults
    valid = np.isfinite(depth) & (depth < 10.0)
    np.testing.assert_array_equal(np.isnan(decoded), ~valid)
    step = depth[valid] ** 2 / quant_a
    assert (np.abs(decoded[valid] - depth[valid]) <= step * 1.01 + 1e-5).all()


def test_without_post_set_callbacks_a_list_applies_what_was_accepted(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """Humble's Node (no post-set callbacks): node.set_parameters checks a list one parameter
    at a time and the node applies after it returns; a refused parameter after an accepted one
    leaves the accepted one applied."""
    from rclpy.node import Node

    monkeypatch.delattr(Node, "add_post_set_parameters_callback")
    with running_node(tiny_checkpoint, tmp_path / "cache") as (node, tester):
        assert node._apply_after_setters
        results = node.set_parameters(
            [
                Parameter("depth_bins", value=[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
                Parameter("temperature", value=0.0),  # below its minimum: refused
                Parameter("use_sim_time", value=False),  # not the schema's
            ]
        )
        assert [r.successful for r in results] == [True, False, True]
        wait_until(lambda: node.estimator.config.depth_bins[0] == 2.0)
        depth = decoding.depth_image_to_array(send_and_receive(tester, encode(RGB, "rgb8"), 1))
        assert 2.0 <= np.nanmin(depth) and np.nanmax(depth) <= 8.0
