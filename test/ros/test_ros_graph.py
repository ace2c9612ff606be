"""The node as users reach it through the ROS graph: the node runs as its own process on the
middleware's defaults; parameters change through its parameter services (what `ros2 param set`
and `ros2 param load` send), and cameras are driver processes with real camera_info timing."""

import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import (
    VARYING_BINS,
    camera_info,
    encode,
    ramp_image,
    stamp,
    structured_image,
    wait_until,
)
from PIL import Image as PILImage
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import call, client_node, remote_values
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from depthclip_ros.config.params_files import default_params_file
from depthclip_ros.messages import decoding
from depthclip_ros.node import diagnostics
from depthclip_ros.runtime import health
from depthclip_ros.tools.node_process import node_arguments, start_node_process

pytestmark = pytest.mark.slow
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@contextlib.contextmanager
def node_process(checkpoint, tmp_path, remaps=None, **overrides):
    """The depthclip node as `ros2 run` starts it: its own process, the shipped params file."""
    params = {
        "model": checkpoint,
        "device": "cpu",
        "cache_dir": tmp_path / "cache",
        "temperature": 1.0,
        **overrides,
    }
    log = tmp_path / "node.log"
    proc = start_node_process(default_params_file(), params, {}, log, remaps=remaps)
    try:
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def set_one(client, name, value):
    """(successful, reason) of one change sent as `ros2 param set` sends it."""
    result = call(client.set_parameters, [Parameter(name, value=value)]).results[0]
    return result.successful, result.reason


def connect_to_the_node(node, log):
    """From `node`: the depthclip node's parameter client, (image, camera_info) publishers it
    subscribes to, and the list its depth images arrive in."""
    client = AsyncParameterClient(node, "/depthclip")
    assert client.wait_for_services(timeout_sec=60), log.read_text()[-2000:]
    received = []
    depth = node.create_subscription(Image, "depth/image", received.append, RELIABLE)
    publishers = (
        node.create_publisher(Image, "image", RELIABLE),
        node.create_publisher(CameraInfo, "camera_info", RELIABLE),
    )
    # Both ways matched: the node processes nothing while it sees no subscriber of its outputs
    wait_until(lambda: publishers[0].get_subscription_count() > 0, timeout=60)
    wait_until(lambda: depth.get_publisher_count() > 0, timeout=60)
    return client, publishers, received


def depth_of_next_frame(node, publishers, received, sec):
    """Publish a frame (and its camera_info) stamped `sec`, again every 2 s until its depth
    comes, as a camera keeps streaming (a frame that came before the node saw this test's
    subscription is not processed: seen once in CI run 54); its depth image as an array."""
    image_pub, info_pub = publishers
    image = stamp(encode(structured_image(120, 160), "rgb8"), sec)
    info = stamp(camera_info(160, 120, 200.0, 200.0, 80.0, 60.0), sec)

    def its_depth():
        return next((m for m in received if m.header.stamp.sec == sec), None)

    deadline = time.monotonic() + 30
    while its_depth() is None:
        assert time.monotonic() < deadline, f"no depth of the frame stamped {sec} in 30 s"
        image_pub.publish(image)
        info_pub.publish(info)
        resend_at = time.monotonic() + 2.0
        while time.monotonic() < resend_at and its_depth() is None:
            time.sleep(0.02)
    return decoding.depth_image_to_array(its_depth())


def test_every_kind_of_parameter_changes_through_the_services_from_another_process(
    tiny_checkpoint, tmp_path
):
    with node_process(tiny_checkpoint, tmp_path) as log, client_node() as node:
        client, publishers, received = connect_to_the_node(node, log)

        # Accepted, in the types the services deliver them (rclpy: array.array for arrays).
        changes = {
            "depth_bins": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],  # double array
            "temperature": 2,  # an integer where a double is declared
            "cloud_stride": 4,  # integer
            "flip": True,  # bool
            "colormap": "viridis",  # string
            "prompt_template": ["A {object} that is {token}", "This {object} is {token}"],
            "camera_info_slop": 0.01,
        }
        for name, value in changes.items():
            assert set_one(client, name, value) == (True, ""), name
        assert remote_values(client, list(changes)) == changes  # `ros2 param dump` reads these
        depth = depth_of_next_frame(node, publishers, received, 1)
        assert 2.0 <= np.nanmin(depth) and np.nanmax(depth) <= 8.0  # from the next frame on

        # An integer array for numbers: taken as doubles.
        assert set_one(client, "depth_bins", [3, 4, 5, 6, 7, 8, 9]) == (True, "")
        depth = depth_of_next_frame(node, publishers, received, 2)
        assert 3.0 <= np.nanmin(depth) and np.nanmax(depth) <= 9.0

        # Refused: the reason names the field and the rule; the old value stays.
        refused = {
            "depth_bins": ([3.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0], "strictly increasing"),
            "cloud_stride": (2.5, "must be an integer"),
            "temperature": (-1.0, "from 0.0001 to 100.0"),
            "colormap": ("rainbow", "one of turbo, viridis, gray"),
            "depth_tokens": (["near", "far"], "2 tokens but 7 depth_bins"),
            "model": ("RN101", "read-only"),
        }
        for name, (value, rule) in refused.items():
            ok, reason = set_one(client, name, value)
            assert not ok and name in reason and rule in reason, (name, reason)
        assert remote_values(client, ["depth_bins", "cloud_stride"]) == {
            "depth_bins": [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],  # as set (an integer array)
            "cloud_stride": 4,
        }

        # Tokens and bins of another count change together, atomically.
        together = [
            Parameter("depth_tokens", value=["close", "middle", "far"]),
            Parameter("depth_bins", value=[1.0, 5.0, 20.0]),
        ]
        assert call(client.set_parameters_atomically, together).result.successful
        depth = depth_of_next_frame(node, publishers, received, 3)
        assert 1.0 <= np.nanmin(depth) and np.nanmax(depth) <= 20.0

        # A parameter file, as `ros2 param load /depthclip FILE` sends it (ros2param matches the
        # node's full name or `/**`, not rcl's `/**/depthclip`): one by one in file order, each
        # checked against the values of the moment.
        params_file = tmp_path / "load.yaml"
        params_file.write_text(
            "/depthclip:\n  ros__parameters:\n    temperature: 0.5\n    colormap: gray\n"
            "    scene_presets: ['kitchen:bins_class_dependent_3']\n"
            "    scenes: [kitchen, office]\n"
        )
        results = call(client.load_parameter_file, str(params_file))
        assert all(r.successful for r in results.results), results
        assert remote_values(client, ["temperature", "colormap", "scenes"]) == {
            "temperature": 0.5,
            "colormap": "gray",
            "scenes": ["kitchen", "office"],
        }


# The node's main() on an rclpy whose Node has no pre/post-set parameter callbacks (Iron added
# them): Humble's Node, as far as the node's parameter path goes.
WITHOUT_IRON_PARAMETER_CALLBACKS = """
import sys
from rclpy.node import Node
for name in ("add_pre_set_parameters_callback", "remove_pre_set_parameters_callback",
             "add_post_set_parameters_callback", "remove_post_set_parameters_callback"):
    delattr(Node, name)
print("rclpy Node with", [n for n in dir(Node) if n.endswith("set_parameters_callback")
                         and not n.startswith("_")], flush=True)
from depthclip_ros.node.entry_point import main
sys.exit(main())
"""


def test_on_an_rclpy_without_post_set_callbacks_changes_still_apply(tiny_checkpoint, tmp_path):
    """Humble's Node lacks add_post_set_parameters_callback: the node starts, accepted changes
    from another process apply from the next frame, refused ones leave the running config."""
    log = tmp_path / "node.log"
    overrides = {"model": tiny_checkpoint, "device": "cpu", "cache_dir": tmp_path / "cache"}
    arguments = node_arguments(default_params_file(), {**overrides, "temperature": 1.0})
    cmd = [sys.executable, "-c", WITHOUT_IRON_PARAMETER_CALLBACKS, *arguments]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        with client_node() as node:
            client, publishers, received = connect_to_the_node(node, log)
            depth = depth_of_next_frame(node, publishers, received, 1)
            assert 1.0 <= np.nanmin(depth) and np.nanmax(depth) <= 3.0  # the shipped bins

            assert set_one(client, "depth_bins", [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == (True, "")
            depth = depth_of_next_frame(node, publishers, received, 2)
            assert 2.0 <= np.nanmin(depth) and np.nanmax(depth) <= 8.0

            ok, reason = set_one(client, "depth_bins", [3.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0])
            assert not ok and "strictly increasing" in reason
            together = [
                Parameter("depth_tokens", value=["close", "far"]),
                Parameter("depth_bins", value=[10.0, 20.0]),
            ]
            assert call(client.set_parameters_atomically, together).result.successful
            depth = depth_of_next_frame(node, publishers, received, 3)
            assert 10.0 <= np.nanmin(depth) and np.nanmax(depth) <= 20.0

            # One by one (not atomic): the accepted change applies though a later one is refused.
            mixed = [
                Parameter("depth_bins", value=[20.0, 30.0]),
                Parameter("temperature", value=0.0),
            ]
            results = call(client.set_parameters, mixed).results
            assert [r.successful for r in results] == [True, False], results
            depth = depth_of_next_frame(node, publishers, received, 4)
            assert 20.0 <= np.nanmin(depth) and np.nanmax(depth) <= 30.0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    first = text.splitlines()[0]
    humble_like = "['add_on_set_parameters_callback', 'remove_on_set_parameters_callback']"
    assert first == f"rclpy Node with {humble_like}", text[-2000:]
    assert "Traceback" not in text, text[-2000:]


def run_driver(*args, timeout=180) -> dict:
    """The camera driver stand-in as its own process; its JSON report."""
    out = subprocess.run(
        [sys.executable, "-m", "depthclip_ros.tools.camera_driver", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_camera_info_timing_never_holds_the_depth_and_clouds_pair_by_stamp(
    tiny_checkpoint, tmp_path
):
    """One node; a driver publishing camera_info in each pattern drivers have. A long
    camera_info_wait: if pairing held the model, the 1 Hz pattern would answer 1 frame a
    second."""
    with node_process(tiny_checkpoint, tmp_path, camera_info_wait=1.0):
        reports = {
            pattern: run_driver("--rate", 10, "--seconds", 3, "--warmup", 1, "--info", pattern)
            for pattern in ("none", "after", "before", "offset", "1hz")
        }
    for pattern, report in reports.items():
        camera = report["cameras"][""]
        # Depth at once. A model held by the pairing would answer at most one frame per
        # camera_info: none without, about 4 in the 1 Hz pattern's 3 s (and its warm-up). The
        # bound is more than that, not a share of the frames sent: a loaded machine answers
        # fewer (12 of 30 seen with another process beside the tests, 7 with the benchmark).
        held = {"none": 0, "1hz": 4}.get(pattern)
        if held is not None:
            assert camera["received"] >= held + 2, (pattern, camera)
        assert camera["received"] > 0, (pattern, camera)
        infos = camera["camera_infos"]
        # What the middleware reports lost on the way to the driver is not the node's (see
        # test_three_cameras_under_overload_are_served_alike).
        lost = camera["lost on the way"]["camera_info"]
        if pattern == "none":
            assert infos == {"own": 0, "other": 0}, infos  # no camera_info: depth only
        elif pattern == "1hz":
            # Every frame's cloud: its own camera_info once a second (one frame each at most),
            # the latest otherwise: all but those few with the latest. (Not a share of the
            # frames: a loaded machine answers few, 7 in 3 s seen in CI, 3 of them with their
            # own camera_info.)
            assert infos["own"] + infos["other"] + lost >= 0.9 * camera["received"], infos
            assert infos["own"] <= 5, infos
            status = report["diagnostics"]["/depthclip: depth estimation"]
            fallbacks = "frames paired with another stamp's camera_info (last 10 s)"
            assert int(status[fallbacks]) > 0
        elif pattern == "before":
            # Measured on the default middleware: a camera_info sent just before a VGA image is
            # the one sample that can arrive late (p90 0.24 s, at most 0.6 s seen) or after the
            # wait; its cloud then uses the latest camera_info. How many come in time is the
            # machine's load (26 of 30 paired on a quiet CI, 1 of 5 under three workers' load):
            # here every frame gets its cloud and pairing by stamp happens; the rule for a
            # camera_info that comes first is test_input_qos_and_stamp_pairing's.
            paired = infos["own"] + infos["other"] + lost
            assert paired >= 0.9 * camera["received"], (pattern, camera)
            assert infos["own"] >= 1, (pattern, infos)
        else:  # after, 1 us off: the clouds with the frame's own camera_info, but for one whose
            # camera_info came after the wait: a reliable sample lost on a busy loopback is sent
            # again at the writer's next heartbeat (Fast DDS: every 3 s by default). CI on Jazzy
            # saw 1 of 28 so; its cloud used the latest camera_info, as it should.
            assert infos["own"] + lost >= 0.9 * camera["received"], (pattern, camera)
            assert infos["other"] <= 0.1 * camera["received"], (pattern, infos)
    # A 10 Hz camera the model keeps up with (judged: the last run ends past the first 5 s).
    last = reports["1hz"]["diagnostics"]["/depthclip: depth estimation"]
    assert last["input faster than the model"] == "no", last


def test_a_100_hz_vga_camera_in_another_process_reaches_the_node(tiny_checkpoint, tmp_path):
    """Default middleware: the node's image subscription takes most frames of a fast camera.
    (A keep-last-1 reliable reader took 28 of 100 frames/s here, a plain one under 3: each
    frame's fragments evicted the one being reassembled.)"""
    with node_process(tiny_checkpoint, tmp_path):
        report = run_driver("--rate", 100, "--seconds", 4, "--warmup", 1)
    # Its first status after the stream: its 10 s window holds all of the stream (the last
    # comes after the driver waited for the last answers, up to 5 s).
    status = report["diagnostics at the stream's end"]["/depthclip: depth estimation"]
    received = int(status["received frames (last 10 s)"])
    sent = report["cameras"][""]["sent"]  # of the 4 s measured; the warm-up's 1 s adds more
    # Here every frame of the 5 s arrived (500 against 400 measured); keep last 1: 208.
    assert received >= 0.8 * sent, (received, sent, status)


@pytest.mark.parametrize("max_batch", [1, 3])
def test_three_cameras_under_overload_are_served_alike(tiny_checkpoint, tmp_path, max_batch):
    """Offered 3 x 30 Hz while the model (a large input) takes far fewer frames: each camera
    answered as often as the others, within 20 % or, on a machine so loaded that each gets a
    few frames, within 2 frames (the windows' ends: a camera served last in one round)."""
    names = ("a", "b", "c")
    with node_process(
        tiny_checkpoint,
        tmp_path,
        cameras=f"[{','.join(names)}]",
        max_batch=max_batch,
        input_width=1024,
        input_height=768,
        camera_info_wait=1.0,  # the CPU is saturated: camera_infos come late
    ) as log:
        camera_args = [arg for name in names for arg in ("--camera", name)]
        # 10 s, not 6: a camera's frames held up on the way for a moment (the saturated CPU
        # stalls the middleware, not the node's turns) weigh less against 20 % of more answers
        # (CI run 121: 11, 12 and 9 answered in 6 s).
        report = run_driver("--rate", 30, "--seconds", 10, *camera_args)
    received = [report["cameras"][name]["received"] for name in names]
    offered = sum(report["cameras"][name]["sent"] for name in names)
    assert sum(received) < 0.8 * offered, received  # overloaded: frames had to be dropped
    # The node says so, in its status and once in its log, with what would answer more: in its
    # last status while the cameras streamed once judged (5 s of frames: CI run 93 heard none
    # judged before the stream ended) and in its first status after. Not its last: the driver
    # waits 1.5 to 5 s for the last answers first, so that one's 10 s window is partly idle
    # (its input fell to 24 Hz of the stream's 82 in a run here; CI run 100 heard `no` there).
    statuses = [
        report[key]["/depthclip: depth estimation"]
        for key in ("diagnostics while streaming", "diagnostics at the stream's end")
    ]
    judged = [s for s in statuses if s["input faster than the model"] != "not judged yet"]
    assert judged, statuses  # the status at the stream's end covers its 10 s
    for status in judged:
        outpaced = status["input faster than the model"]
        assert outpaced.startswith("yes: ") and "depthclip-export" in outpaced, json.dumps(status)
        assert 0 < float(status["model busy (% of the time)"]) <= 100, status  # capped
    assert log.read_text().count("input faster than the model: ") == 1
    # A depth the middleware reported lost on the way was served (the node sent it): counted.
    answered = [
        got + report["cameras"][name]["lost on the way"]["depth"]
        for name, got in zip(names, received)
    ]
    seen = {  # what a failure shows: each camera's frames sent, answered, lost
        name: (report["cameras"][name]["sent"], got, report["cameras"][name]["lost on the way"])
        for name, got in zip(names, received)
    }
    assert min(received) > 0, seen
    assert max(answered) - min(answered) <= max(2, 0.2 * max(answered)), seen
    for name in names:  # each frame's cloud, with its own camera_info: kept 10 s, it outlives
        # the slow forwards here (the 30 kept before were 1 s: CI run 36 saw 0 of 5). Some are
        # lost over the wire: a reliable sample lost while the saturated CPU stalls the driver
        # is sent again only while the node's writer keeps it (the last 5: docs/node.md, QoS),
        # and the middleware reports it lost. Those are not the node's (CI run 97 missed 5 of a
        # camera's 18; runs here with each publication logged showed the node had sent every
        # one, and the driver heard each missing one reported lost). A depth lost so is not
        # counted at all; a camera_info the node's input lost so makes a cloud with another's.
        camera = report["cameras"][name]
        infos = camera["camera_infos"]
        unexplained = (
            len(camera["answered without camera_info"]) - camera["lost on the way"]["camera_info"]
        )
        allowed = max(2, 0.2 * received[names.index(name)])
        assert unexplained <= allowed and infos["other"] <= allowed, (name, camera)
        assert infos["own"] > 0, (name, infos)


def test_cameras_faster_than_the_model_are_told_what_would_answer_more():
    """The advice of /diagnostics' `input faster than the model`, by backend and device."""
    load = health.ModelLoad(input_rate=15.0, answered_rate=9.5, capacity=9.8, busy=0.96)
    assert load.outpaced

    def detail(backend, device="cpu", in_flight=1, threads=2):
        params = SimpleNamespace(config=SimpleNamespace(backend=backend, model="a.onnx"))
        estimator = SimpleNamespace(device=device, frames_in_flight=in_flight, cpu_threads=threads)
        return diagnostics.outpaced_detail(load, params, estimator)

    figures = (
        "15.0 Hz in, 9.8 Hz the model's forwards allow, 9.5 Hz answered, the model busy 96% of "
        "the time; "
    )
    assert detail("torch").startswith(figures + "an exported int8 graph (depthclip-export)")
    assert detail("auto") == detail("onnxruntime")  # auto: the .onnx model's runtime
    for backend in ("onnxruntime", "openvino"):
        assert detail(backend) == figures + (
            "inference_streams: 2 runs two frames' forwards side by side: more frames a "
            "second, each later (docs/onnx.md#two-frames-in-flight)"
        )
        # Streams already on, one thread (one stream a thread), or a GPU: nothing to change.
        for other in (dict(in_flight=2), dict(threads=1), dict(device="cuda")):
            assert detail(backend, **other).endswith(
                "each camera's newest frame is taken, the others dropped"
            )
    assert detail("torch", device="cuda:0").endswith("the others dropped")
    values = {
        kv.key: kv.value
        for kv in diagnostics.load_values(None, None, SimpleNamespace(device="cpu"))
    }
    assert values == {
        "model busy (% of the time)": "-",
        "input faster than the model": "not judged yet",
    }


def test_the_clearing_cloud_from_another_process_equals_the_reference(tiny_checkpoint, tmp_path):
    """points/clearing as Nav2 receives it, against the reference computed from the same
    model's probabilities in this process; clearing_quantile changed through the services."""
    from clearing_reference import clearing_cloud

    from depthclip_ros.config.params_files import load_config
    from depthclip_ros.estimator.core import DepthClip
    from depthclip_ros.messages.point_cloud import pointcloud_to_array

    overrides = {"model": tiny_checkpoint, "device": "cpu", "temperature": 1.0}
    reference = DepthClip(load_config(overrides={**overrides, "cache_dir": str(tmp_path / "c")}))
    rgb = structured_image(120, 160)
    result = reference.predict(rgb)
    # A first camera_info on a new connection may come later than the default wait: this test
    # is about the cloud's values, not the pairing's timing.
    with (
        node_process(tiny_checkpoint, tmp_path, cloud_stride=8, camera_info_wait=3.0) as log,
        client_node() as node,
    ):
        client, (image_pub, info_pub), _ = connect_to_the_node(node, log)
        clouds = {"points": [], "points/clearing": []}
        for topic, store in clouds.items():
            node.create_subscription(PointCloud2, topic, store.append, RELIABLE)
        wait_until(lambda: node.count_publishers("points/clearing") > 0, timeout=30)

        frames = iter(range(1, 1000))

        def clouds_of_next_frame():
            """(points, points/clearing) of the first frame that gets both. Until DDS has
            matched a new subscription at both ends, a frame may go out without it: the node
            makes points/clearing only for subscribers it sees at the forward, and a
            camera_info sent before its subscription matched is lost."""
            for _ in range(10):
                sec = next(frames)
                image_pub.publish(stamp(encode(rgb, "rgb8"), sec))
                info_pub.publish(stamp(camera_info(160, 120, 200.0, 200.0, 80.0, 60.0), sec))

                def of_frame(store, sec=sec):
                    return [m for m in store if m.header.stamp.sec == sec]

                try:
                    wait_until(lambda: all(map(of_frame, clouds.values())), timeout=5)
                except AssertionError:
                    continue
                msgs = [of_frame(store)[0] for store in clouds.values()]
                assert msgs[1].header.frame_id == msgs[0].header.frame_id
                assert msgs[0].header.frame_id == "camera_optical_frame"
                return [pointcloud_to_array(m) for m in msgs]
            raise AssertionError(f"no frame got both clouds: {log.read_text()[-2000:]}")

        for q in (0.1, 0.5, 0.95):
            if q != 0.1:  # the default, then changed as `ros2 param set` changes it
                assert set_one(client, "clearing_quantile", q) == (True, "")
            points, clearing = clouds_of_next_frame()
            expected = clearing_cloud(result, 0, q, (200.0, 200.0, 80.0, 60.0), 8, 0.0)
            assert clearing.shape[:2] == points.shape[:2] == (15, 20)
            np.testing.assert_allclose(clearing[..., :3], expected, rtol=1e-5, atol=1e-5)
        ok, reason = set_one(client, "clearing_quantile", 1.0)
        assert not ok and "clearing_quantile" in reason and "excluded" in reason, reason


def test_answers_on_the_names_of_nav2s_depth_estimation_pipeline(tiny_checkpoint, tmp_path):
    """navigation2.ai's nav2_depth_estimation_ai (use_composition:=False) feeds its estimator a
    compressed image on ~/input/image and ~/input/camera_info and reads ~/output/depth_image:
    the node started with the remaps of docs/nav2.md answers on those names."""
    remaps = {
        "image/compressed": "~/input/image",
        "camera_info": "~/input/camera_info",
        "depth/image": "~/output/depth_image",
    }
    with (
        node_process(tiny_checkpoint, tmp_path, remaps=remaps, use_compressed=True) as log,
        client_node() as node,
    ):
        received = []
        node.create_subscription(Image, "/depthclip/output/depth_image", received.append, RELIABLE)
        image_pub = node.create_publisher(CompressedImage, "/depthclip/input/image", RELIABLE)
        info_pub = node.create_publisher(CameraInfo, "/depthclip/input/camera_info", RELIABLE)
        wait_until(lambda: image_pub.get_subscription_count() > 0, timeout=60)
        wait_until(lambda: info_pub.get_subscription_count() > 0, timeout=30)
        buf = io.BytesIO()
        PILImage.fromarray(structured_image(120, 160)).save(buf, format="JPEG")
        for sec in range(1, 4):  # the first may meet a subscription still matching
            image_pub.publish(stamp(CompressedImage(format="jpeg", data=buf.getvalue()), sec))
            info_pub.publish(stamp(camera_info(160, 120, 200.0, 200.0, 80.0, 60.0), sec))
            wait_until(lambda: received, timeout=30)
        assert received, log.read_text()[-2000:]
        depth = decoding.depth_image_to_array(received[-1])
        assert depth.shape == (120, 160) and np.isfinite(depth).all()
        assert received[-1].header.stamp.sec in (1, 2, 3)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_stopped_mid_stream_the_node_exits_cleanly(tiny_checkpoint, tmp_path, signal_name):
    """`kill`, Ctrl-C, a launch file's shutdown while frames flow: the node ends at once with
    exit code 0, no traceback and no ERROR (measured: a worker asking a publisher for its
    subscriber count after the signal died, and the process then hung in its exit)."""
    import signal

    rgb = encode(structured_image(), "rgb8")
    for round_ in range(3):  # the signal lands at another moment of a frame each time
        log = tmp_path / f"node{round_}.log"
        params = {"model": tiny_checkpoint, "device": "cpu", "cache_dir": tmp_path / "cache"}
        proc = start_node_process(default_params_file(), params, {}, log)
        try:
            with client_node() as node:
                received = []
                node.create_subscription(Image, "depth/image", received.append, RELIABLE)
                image_pub = node.create_publisher(Image, "image", RELIABLE)
                info_pub = node.create_publisher(CameraInfo, "camera_info", RELIABLE)
                sec = 0
                while len(received) < 3 + round_:
                    sec += 1
                    image_pub.publish(stamp(rgb, sec))
                    info_pub.publish(stamp(camera_info(), sec))
                    threading.Event().wait(0.03)
                    assert proc.poll() is None and sec < 2000, log.read_text()[-2000:]
                proc.send_signal(getattr(signal, signal_name))
                for _ in range(10):  # frames keep coming while it stops
                    image_pub.publish(stamp(rgb, sec + 1))
                    threading.Event().wait(0.01)
            assert proc.wait(timeout=20) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log.read_text()
        assert "Traceback" not in text and "[ERROR]" not in text, text[-3000:]


def test_a_laserscan_from_another_process_scales_the_nodes_depth(unbiased_checkpoint, tmp_path):
    """metric_scale as a robot runs it: the node its own process on the shipped parameters,
    metric_scale and static_transforms set through its parameter services while it runs, a
    LaserScan from this process whose returns lie where a scene twice the model's depth is: the
    depth comes out doubled and /diagnostics reports the scale; mode bins set through the
    services fits each bin; a new input size while in bins takes the next scan's scale. The
    unbiased tiny CLIP over VARYING_BINS: a depth that varies over the image, so the fits are
    of a scale and of each bin, not the fallback of anchors at one depth."""
    from diagnostic_msgs.msg import DiagnosticArray
    from range_factory import LASER_TO_OPTICAL, intrinsics, scan_of
    from sensor_msgs.msg import LaserScan

    from depthclip_ros.config.params_files import load_config
    from depthclip_ros.estimator.core import DepthClip

    size = dict(input_width=256, input_height=192)
    image, info = ramp_image(120, 160), camera_info(160, 120, 200.0, 200.0, 80.0, 60.0)
    model_params = dict(depth_bins=list(VARYING_BINS), **size)
    config = dict(model=unbiased_checkpoint, device="cpu", cache_dir=str(tmp_path / "core"))
    config.update(temperature=1.0, depth_bins=VARYING_BINS)  # as node_process starts the node

    def core_of(size):
        return DepthClip(load_config(default_params_file(), overrides={**config, **size}))

    model = core_of(size).predict(image)
    spread = np.ptp(model.coarse_depth[0]) / np.median(model.coarse_depth[0])
    assert spread > 0.15  # fit.MIN_SPREAD: more than one depth
    with (
        node_process(unbiased_checkpoint, tmp_path, **model_params) as log,
        client_node() as node,
    ):
        client, (image_pub, info_pub), received = connect_to_the_node(node, log)
        statuses = {}

        def on_diagnostics(msg):
            for status in msg.status:
                statuses.update({kv.key: kv.value for kv in status.values})

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        scan_pub = node.create_publisher(LaserScan, "scan", RELIABLE)
        changes = [
            Parameter("metric_scale", value="scale"),
            Parameter("metric_scale_sources", value=["scan"]),
            Parameter("static_transforms", value=LASER_TO_OPTICAL),
            Parameter("metric_scale_min_anchors", value=5),
        ]
        assert call(client.set_parameters_atomically, changes).result.successful
        wait_until(lambda: scan_pub.get_subscription_count() > 0, timeout=60)
        seconds = iter(range(1, 1000))

        def frames_until_the_depth_is(factor, model, reported=lambda: True):
            """Frames with a scan `factor` times `model`'s depth until one's depth is and
            /diagnostics has `reported`: the scan and the image travel on two topics, and a
            frame taken before its scan is here keeps the last fit (anchors never delay the
            depth)."""
            for _, sec in zip(range(20), seconds):
                info_pub.publish(stamp(info, sec))
                scan_pub.publish(scan_of(model, intrinsics(info), factor, sec))
                image_pub.publish(stamp(encode(image, "rgb8"), sec))
                wait_until(lambda s=sec: any(m.header.stamp.sec == s for m in received), 30)
                msg = next(m for m in received if m.header.stamp.sec == sec)
                depth = decoding.depth_image_to_array(msg)
                if np.allclose(depth, factor * model.depth[0], rtol=1e-4, equal_nan=True):
                    try:  # diagnostics come once a second
                        wait_until(reported, timeout=2.0)
                        return
                    except AssertionError:
                        pass
            raise AssertionError(f"{statuses}\n" + log.read_text()[-2000:])

        frames_until_the_depth_is(2.0, model)
        wait_until(lambda: statuses.get("metric scale", "").startswith("2 "), timeout=30)
        # Mode bins through the service while on: each bin fitted (here the scan's scale is
        # every bin's), reported in /diagnostics; then a new input size while in bins: another
        # model's scale, the next scan's taken at once.
        set_bins = [Parameter("metric_scale", value="bins")]
        assert call(client.set_parameters, set_bins).results[0].successful
        frames_until_the_depth_is(2.0, model, lambda: "metric bins (m)" in statuses)
        assert statuses["metric last fit"] == "bins"  # not a fallback to a scale
        reported = [float(b) for b in statuses["metric bins (m)"].split(", ")]
        np.testing.assert_allclose(reported, 2.0 * np.asarray(model.bins), rtol=2e-3)
        larger = dict(input_width=384, input_height=288)
        changes = [Parameter(name, value=value) for name, value in larger.items()]
        assert call(client.set_parameters_atomically, changes).result.successful
        frames_until_the_depth_is(3.0, core_of(larger).predict(image))
        assert statuses["metric scale mode"] == "bins"
