"""depthclip-fleet on a local Ray with the tiny random CLIP on CPU: an archive of MCAP and
sqlite3 bags (one with two cameras) and a corrupt one, each output equal to what
`depthclip-bag process` writes; a killed model worker replaced and its bag retried; a run
interrupted with Ctrl-C resumed without doing a bag twice. The CLI runs as its own process, as
users run it."""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bag_factory import deserialize, read_bag, write_bag
from helpers import VARYING_BINS, wait_until

from depthclip_ros.bag import cli as bag_cli
from depthclip_ros.errors import BagError, FleetError
from depthclip_ros.fleet import discovery, manifest

pytest.importorskip("ray", reason="depthclip-fleet needs ray (requirements.txt installs it)")

TOPICS = ("/cam/image_raw", "/rear/image_raw")


@pytest.fixture
def params_file(tiny_checkpoint, tmp_path):
    import yaml

    path = tmp_path / "params.yaml"
    params = dict(
        model=str(tiny_checkpoint),
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        temperature=1.0,
        input_width=128,
        input_height=96,
        cloud_stride=4,
    )
    path.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": params}}))
    return path


def make_archive(root, frames=3, count=3):
    """`count` bags: root/day1/run0 (MCAP), root/day1/run1 (sqlite3), root/day2/both (MCAP, two
    cameras), then root/day3/run3... (MCAP)."""
    write_bag(root / "day1" / "run0", "mcap", frames=frames)
    write_bag(root / "day1" / "run1", "sqlite3", frames=frames, width=128, height=96)
    write_bag(
        root / "day2" / "both",
        "mcap",
        frames=frames,
        cameras={"/cam": (160, 120), "/rear": (128, 96)},
    )
    for i in range(3, count):
        write_bag(root / "day3" / f"run{i}", "mcap", frames=frames)


def fleet(*argv, params_file, wait=True, **popen):
    command = [sys.executable, "-m", "depthclip_ros.fleet.cli", *map(str, argv)]
    command += [f"--image-topic={t}" for t in TOPICS] + ["--params", str(params_file), "--quiet"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )
    if not wait:
        return process
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def manifest_lines(outdir):
    path = outdir / manifest.MANIFEST_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def assert_equal_to_bag_tool(job_input, output, topics, params_file, tmp_path, options=()):
    """Byte for byte, with torch on the one thread a 1-CPU worker gives it (float sums run in
    another order on two threads); `options`: more of the fleet run's processing options."""
    import torch

    reference = tmp_path / "reference" / job_input.name / output.name
    argv = ["process", job_input, reference, "--params", params_file, "--quiet", *options]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert bag_cli.main([str(a) for a in argv + [f"--image-topic={t}" for t in topics]]) == 0
    finally:
        torch.set_num_threads(threads)
    written = read_bag(output)[0]
    assert written == read_bag(reference)[0]
    for topic in topics:  # each camera's clouds, points/clearing beside points
        namespace = topic.removesuffix("/compressed").rsplit("/", 1)[0]
        assert {f"{namespace}/points", f"{namespace}/points/clearing"} <= set(written), topic


def assert_outputs_equal_to_bag_tool(entries, params_file, tmp_path, depth_topics=None):
    """Every manifest entry's output against the bag tool on its input (make_archive's bags:
    'both' has both cameras); `depth_topics`: {image topic: its --anchor-depth-topic}."""
    for entry in entries:
        topics = TOPICS if entry["input"].endswith("both") else TOPICS[:1]
        options = [f"--anchor-depth-topic={depth_topics[t]}" for t in topics if depth_topics]
        assert_equal_to_bag_tool(
            Path(entry["input"]), Path(entry["output"]), topics, params_file, tmp_path, options
        )


def no_staging_left(outdir):
    return [p for p, dirs, _ in os.walk(outdir) for d in dirs if ".partial-" in d]


def test_bags_are_found_and_their_layout_mirrored(tmp_path):
    archive = tmp_path / "archive"
    make_archive(archive, count=4)
    (archive / "single.mcap").write_bytes(b"not really")  # a loose file counts as a bag
    (archive / "notes.txt").write_text("not a bag")
    jobs = discovery.find_bags([archive, archive / "day1" / "run0"], tmp_path / "out")
    found = [
        (str(j.input.relative_to(tmp_path)), str(j.output.relative_to(tmp_path))) for j in jobs
    ]
    assert found == [  # a folder's own files first, then its subfolders, each sorted
        ("archive/single.mcap", "out/single"),
        ("archive/day1/run0", "out/day1/run0"),
        ("archive/day1/run1", "out/day1/run1"),
        ("archive/day2/both", "out/day2/both"),
        ("archive/day3/run3", "out/day3/run3"),
        ("archive/day1/run0", "out/run0"),  # a bag given by itself: OUTDIR/<its name>
    ]
    with pytest.raises(BagError, match="would both be written"):
        discovery.find_bags([archive / "day1", archive / "day1"], tmp_path / "out")
    with pytest.raises(BagError, match="does not exist"):
        discovery.find_bags([tmp_path / "nowhere"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no rosbag2 bag"):
        discovery.find_bags([tmp_path / "empty"], tmp_path / "out")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(BagError, match="OUTDIR .*a_file is a file, not a folder"):
        discovery.find_bags([archive], tmp_path / "a_file")
    with pytest.raises(BagError, match="OUTDIR .*a_file/out is inside a file, not a folder"):
        discovery.find_bags([archive], tmp_path / "a_file" / "out")


def test_manifest_keeps_the_latest_line_of_each_bag_and_skips_cut_lines(tmp_path):
    job = discovery.BagJob(tmp_path / "in", tmp_path / "out" / "in")
    record = manifest.Manifest(tmp_path / "out")
    record.record(job, manifest.FAILED, error="boom", model="m", config="c")
    record.record(job, manifest.DONE, frames=3, model="m", config="c")
    with open(record.path, "a") as f:
        f.write('{"input": "cut by a kil')  # a run killed while writing its line
    again = manifest.Manifest(tmp_path / "out")
    assert again.latest[str(job.input)]["status"] == manifest.DONE
    job.output.mkdir(parents=True)
    assert again.done_before(job, "m", "c")
    assert not again.done_before(job, "other model", "c")
    assert not again.done_before(job, "m", "other config")
    again.compact()
    assert [e["status"] for e in manifest_lines(tmp_path / "out")] == [manifest.DONE]
    assert manifest.config_hash({"a": 1}, {"t": ["/x"]}) != manifest.config_hash(
        {"a": 2}, {"t": ["/x"]}
    )


def test_archive_on_ray_equals_the_bag_tool_and_a_corrupt_bag_fails_alone(tmp_path, params_file):
    """Its bags of every kind, a JPEG camera's among them (decoded on a thread ahead in the
    fleet's bag task, whose model runs elsewhere; in turn in the bag tool's reference)."""
    archive, outdir = tmp_path / "archive", tmp_path / "out"
    make_archive(archive, count=4)
    jpeg = "/cam/image_raw/compressed"
    write_bag(archive / "day4" / "jpeg", "mcap", frames=3, compressed=True)
    (archive / "broken").mkdir()
    (archive / "broken" / "broken.mcap").write_bytes(b"\x89MCAP0\r\n" + os.urandom(64))
    (archive / "broken" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    argv = [archive, "--out", outdir, "--workers", 2, f"--image-topic={jpeg}"]
    rc, out, err = fleet(*argv, params_file=params_file)
    assert rc == 1, err
    assert "| bags done | 5 |" in out and "| bags failed | 1 |" in out
    assert f"failed: {archive / 'broken'}:" in err and "Traceback" not in err
    entries = {e["input"]: e for e in manifest_lines(outdir)}
    assert len(entries) == 6 and entries[str(archive / "broken")]["status"] == "failed"
    assert entries[str(archive / "broken")]["error"]
    assert not (outdir / "broken").exists() and no_staging_left(outdir) == []
    for name, topics in (
        ("day1/run0", TOPICS[:1]),
        ("day1/run1", TOPICS[:1]),
        ("day2/both", TOPICS),
        ("day3/run3", TOPICS[:1]),
        ("day4/jpeg", (jpeg,)),
    ):
        entry = entries[str(archive / name)]
        assert entry["status"] == "done" and entry["frames"] == 3 * len(topics)
        assert entry["model"].startswith("tiny_clip.pt@sha256:") and entry["config"]
        assert_equal_to_bag_tool(archive / name, outdir / name, topics, params_file, tmp_path)
    assert (outdir / "day1" / "run1" / "run1.db3").exists()  # sqlite3 in, sqlite3 out


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_streams_on_ray_equal_the_bag_tool_and_the_one_stream_output(
    tmp_path, params_file, tiny_checkpoint, backend
):
    """inference_streams 2 and the temporal filter: the fleet's worker and depthclip-bag run a
    bag's frames two at a time, one a stream; the fleet's output is byte for byte the bag
    tool's, and both are the one-stream model's (the streams change when, not what)."""
    import yaml
    from helpers import model_config

    from depthclip_ros.export.graph import export

    graph = tmp_path / "tiny.onnx"
    config = model_config(tiny_checkpoint, tmp_path / "cache", input_width=128, input_height=96)
    export(config, graph, reference=False)
    params = yaml.safe_load(params_file.read_text())
    values = params["depthclip"]["ros__parameters"]
    values.update(model=str(graph), backend=backend, temporal_filter="mixture")
    values["inference_threads"] = 2  # each stream's one thread: the same kernels as alone
    one_stream = tmp_path / "one_stream.yaml"
    one_stream.write_text(yaml.safe_dump(params))
    values["inference_streams"] = 2
    streams = tmp_path / "streams.yaml"
    streams.write_text(yaml.safe_dump(params))
    archive, outdir = tmp_path / "archive", tmp_path / "out"
    write_bag(archive / "run0", "mcap", frames=5)  # two pairs and one alone
    rc, out, err = fleet(archive, "--out", outdir, "--workers", 1, params_file=streams)
    assert rc == 0, err
    assert_equal_to_bag_tool(archive / "run0", outdir / "run0", TOPICS[:1], streams, tmp_path)
    reference = tmp_path / "one_stream_out"
    argv = ["process", archive / "run0", reference, "--params", one_stream, "--quiet"]
    assert bag_cli.main([str(a) for a in [*argv, f"--image-topic={TOPICS[0]}"]]) == 0
    assert read_bag(outdir / "run0")[0] == read_bag(reference)[0]


def wall_scan(frame):
    """A LaserScan (rosbags) from a laser on a mount turned by 0.01 rad a frame (mount_tf) on
    the laser frame of LASER_TO_OPTICAL: a wall of returns 3 m around, across the 160x120
    camera's view, stamped as write_bag's frame."""
    from bag_factory import frame_stamp
    from range_factory import rosbags_scan
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import LaserScan

    sec, nanosec = frame_stamp(frame)
    scan = LaserScan(
        angle_min=-0.4 - 0.01 * frame,
        angle_max=0.4 - 0.01 * frame,
        angle_increment=0.01,
        range_min=0.1,
        range_max=50.0,
        ranges=[3.0] * 81,
    )
    scan.header.stamp.sec, scan.header.stamp.nanosec = sec, nanosec
    scan.header.frame_id = "tilt_laser"
    return rosbags_scan(scan, get_typestore(Stores.ROS2_KILTED))


def mount_tf(frame):
    """/tf (rosbags) of wall_scan's mount, laser -> tilt_laser at 0.01 rad a frame, and of the
    robot driving forward at 0.1 m/s (odom -> laser), each 25 ms either side of the frame's
    stamp."""
    from bag_factory import T0_NS, frame_stamp
    from range_factory import rosbags_mount_tf, rosbags_tf
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    msg = rosbags_mount_tf(*frame_stamp(frame), lambda *_: 0.01 * frame, store)
    sec, nanosec = frame_stamp(frame)
    driving = []
    for offset in (-25_000_000, 25_000_000):
        at = sec * 10**9 + nanosec + offset
        driving.append((f"{0.1 * (at - T0_NS) * 1e-9!r} 0 0 0 0 0 odom laser", *divmod(at, 10**9)))
    msg.transforms.extend(rosbags_tf(driving, store).transforms)
    return msg


def wall_cloud(frame):
    """A lidar's cloud (rosbags) in the laser frame of LASER_TO_OPTICAL: 20,000 points of a
    wall 5 m ahead of the camera, past every edge of the 160x120 camera's view (more points
    than metric_scale reads of a cloud), stamped as write_bag's frame."""
    from bag_factory import frame_stamp
    from range_factory import LASER_TO_OPTICAL, rosbags_cloud
    from rosbags.typesys import Stores, get_typestore

    from depthclip_ros import transforms

    x, y = np.meshgrid(np.linspace(-4.0, 4.0, 200), np.linspace(-3.0, 3.0, 100))
    wall = np.stack([x.ravel(), y.ravel(), np.full(x.size, 5.0)], -1)
    to_laser = transforms.StaticTransforms.parse(LASER_TO_OPTICAL).lookup(
        "laser", "camera_optical_frame"
    )
    store = get_typestore(Stores.ROS2_KILTED)
    return rosbags_cloud(to_laser.apply(wall), *frame_stamp(frame), "laser", store)


def plane_depth(left, right, frame="camera_optical_frame"):
    """A depth image (rosbags) registered to a 160x120 camera whose optical frame is `frame`:
    a plane from `left` metres at its left to `right` at its right, stamped as write_bag's
    frame (a function of it): the `depth` source's anchors, over a span of depths that a scale
    and shift, and each bin, can be fitted to."""
    from bag_factory import frame_stamp
    from range_factory import rosbags_depth_image
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    plane = np.tile(np.linspace(left, right, 160, dtype=np.float32), (120, 1))

    def depth(i):
        return rosbags_depth_image(plane, *frame_stamp(i), store, frame)

    return depth


def depth_images(bag, camera="/cam"):
    """[(log time, raw message, type) of the camera's depth/image] of an output bag."""
    return read_bag(bag)[0][f"{camera}/depth/image"]


def test_the_temporal_filter_and_metric_scale_on_ray_equal_the_bag_tool(
    tmp_path, params_file, unbiased_checkpoint, capsys
):
    """temporal_filter mixture (a threshold no patch reaches, so every frame fuses), scene_bins
    auto and metric_scale (mode bins: its bin probabilities fetched) fitted to a scan in one
    bag (from a laser on a turning mount of a robot driving, both on the bag's /tf: each scan
    moved through odom; each scan logged after its image),
    to a registered depth image in
    another, to a lidar's cloud (read as the node reads it, a sample of its points) in the
    third, and two cameras each to its own registered depth image (--anchor-depth-topic once
    per --image-topic) in the fourth, on the unbiased tiny CLIP over VARYING_BINS (a depth
    that varies over the image):
    the scan's wall, one row of cells at one depth, and the cloud's wall fall back to a scale;
    the depth image's slanted plane moves each bin (its depth is neither mode scale's nor mode
    scale_shift's, and near the latter's).
    Ray hands the workers' arrays back read-only and each camera's scene choice and scale run in
    the worker; every bag is done and byte for byte what depthclip-bag writes, its depth at its
    anchors' distance (3 m by the scan, 6 m in the middle by the depth image, 5 m by the cloud:
    the bags' camera frames are the same, so each scale is its own source's)."""
    import yaml
    from range_factory import LASER_TO_OPTICAL
    from rosbags.typesys import Stores, get_typestore

    from depthclip_ros.messages import decoding

    store = get_typestore(Stores.ROS2_KILTED)
    archive, outdir = tmp_path / "archive", tmp_path / "out"
    for name, extra, at in (
        (
            "a",
            {
                "/scan": (store, "sensor_msgs/msg/LaserScan", wall_scan),
                "/tf": (store, "tf2_msgs/msg/TFMessage", mount_tf),
            },
            40_000_000,  # each scan (and the mount's /tf) logged 40 ms after its image
        ),
        (
            "b",
            {"/anchors/depth": (store, "sensor_msgs/msg/Image", plane_depth(4.0, 8.0))},
            -50_000_000,
        ),
        (
            "c",
            {"/anchors/points": (store, "sensor_msgs/msg/PointCloud2", wall_cloud)},
            -50_000_000,
        ),
    ):
        write_bag(archive / name, "mcap", frames=12, extra=extra, extra_at=at)
    image = "sensor_msgs/msg/Image"
    write_bag(  # two cameras, each with its own registered depth camera
        archive / "d_both",
        "mcap",
        frames=12,
        cameras={"/cam": (160, 120), "/rear": (160, 120)},
        frame_ids={"/rear": "rear_optical_frame"},
        extra={
            "/anchors/depth": (store, image, plane_depth(4.0, 8.0)),
            "/rear/aligned_depth": (store, image, plane_depth(8.0, 16.0, "rear_optical_frame")),
        },
        extra_at=-50_000_000,
    )
    params = yaml.safe_load(params_file.read_text())
    params["depthclip"]["ros__parameters"].update(
        model=str(unbiased_checkpoint),
        depth_bins=list(VARYING_BINS),
        input_width=256,
        input_height=192,
        temporal_filter="mixture",
        temporal_change_threshold=255.0,
        scene_bins="auto",
        metric_scale="bins",
        metric_scale_sources=["scan", "depth", "points"],
        static_transforms=LASER_TO_OPTICAL,
        metric_scale_min_anchors=3,
        metric_scale_max=20.0,  # the rear camera's plane: a scale near 7 of its model's depth
    )
    fused = tmp_path / "fused.yaml"
    fused.write_text(yaml.safe_dump(params))
    # Each camera's registered depth, in the order of fleet()'s --image-topic (TOPICS).
    depth_topics = dict(zip(TOPICS, ["/anchors/depth", "/rear/aligned_depth"], strict=True))
    options = [f"--anchor-depth-topic={depth_topics[t]}" for t in TOPICS]
    rc, out, err = fleet(archive, "--out", outdir, "--workers", 1, *options, params_file=fused)
    assert rc == 0, err
    entries = manifest_lines(outdir)
    assert sorted(e["status"] for e in entries) == [manifest.DONE] * 4, entries
    capsys.readouterr()
    assert_outputs_equal_to_bag_tool(entries, fused, tmp_path, depth_topics)
    # Bag a's scans went through odom; the other bags have no odometry: each of their cameras
    # (b's, c's, and d_both's two) says once that its robot is taken as still.
    still = [line for line in capsys.readouterr().err.splitlines() if "taken as still" in line]
    assert len(still) == 4, still
    (both,) = [Path(e["output"]) for e in entries if Path(e["output"]).name == "d_both"]
    for camera, metres in (("/cam", 6.0), ("/rear", 12.0)):  # each its own plane's middle
        _, raw = depth_images(both, camera)[-1][:2]
        depth = decoding.depth_image_to_array(deserialize(raw, "sensor_msgs/msg/Image"))
        assert 0.8 * metres < np.median(depth[59:61]) < 1.2 * metres, camera
    walls = {"a": 3.0, "b": 6.0, "c": 5.0}  # the scan's wall 3 m away (2.76 m at the view's
    # edge), the image's 6, the cloud's 5
    for entry in [e for e in entries if Path(e["output"]).name in walls]:
        wall = walls[Path(entry["output"]).name]
        _, raw = depth_images(Path(entry["output"]))[-1][:2]
        depth = decoding.depth_image_to_array(deserialize(raw, "sensor_msgs/msg/Image"))
        assert 0.8 * wall < np.median(depth[59:61]) < 1.2 * wall, (entry["output"], wall)
    (fitted,) = [Path(e["output"]) for e in entries if Path(e["output"]).name == "b"]
    by_bins = [deserialize(m[1], "sensor_msgs/msg/Image") for m in depth_images(fitted)]
    for mode in ("scale", "scale_shift"):
        params["depthclip"]["ros__parameters"]["metric_scale"] = mode
        other = tmp_path / f"{mode}.yaml"
        other.write_text(yaml.safe_dump(params))
        out = tmp_path / mode
        argv = ["process", archive / "b", out, "--params", other, "--quiet"]
        assert bag_cli.main([str(a) for a in [*argv, "--image-topic=/cam/image_raw"]]) == 0
        by_mode = [deserialize(m[1], "sensor_msgs/msg/Image") for m in depth_images(out)]
        assert len(by_mode) == len(by_bins) == 12
        for bins_msg, mode_msg in zip(by_bins, by_mode):
            assert bytes(bins_msg.data) != bytes(mode_msg.data), mode  # each bin moved
            if mode == "scale_shift":  # a fit, not a refusal: near the affine one
                depth, affine = (decoding.depth_image_to_array(m) for m in (bins_msg, mode_msg))
                assert 0.9 < np.nanmedian(depth / affine) < 1.1


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def descends_from(pid, ancestor):
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parent_of(pid)
    return False


def model_worker_pids(driver):
    """Processes of the model actors of the Ray that `driver` started (Ray titles an actor's
    process after its class; the driver's Ray processes are its descendants)."""
    pids = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::ModelWorker") and descends_from(int(name), driver):
                    pids.append(int(name))
        except (OSError, ValueError):  # not a process, or one that just ended
            continue
    return pids


def stop(process):
    """End a fleet run left running by a failed test the way Ctrl-C does: Ray stops with it."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def test_killed_model_worker_is_replaced_and_its_bag_retried(tmp_path, params_file):
    archive, outdir = tmp_path / "archive", tmp_path / "out"
    make_archive(archive, frames=12, count=6)
    process = fleet(
        archive, "--out", outdir, "--bags-in-flight", 1, params_file=params_file, wait=False
    )
    try:
        # A guard: Ray's start and a first bag took over 120 s beside a CPU-bound process.
        wait_until(lambda: manifest_lines(outdir), timeout=600)
        (victim,) = model_worker_pids(process.pid)
        # Stopped, the worker holds the forward the next bag is waiting for: killing it then
        # loses a forward in flight (the case the retry is for), not an idle process.
        os.kill(victim, signal.SIGSTOP)
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: set(model_worker_pids(process.pid)) - {victim}, timeout=600)
        out, err = process.communicate(timeout=300)
    finally:
        stop(process)
    assert process.returncode == 0, err
    # The bag whose forward was lost with the worker (ActorDied or ActorUnavailable) again.
    assert re.search(r"retrying \S+: RayTaskError\(Actor\w+Error\)", err), err
    assert "| bags done | 6 |" in out
    entries = manifest_lines(outdir)
    assert len(entries) == 6 and {e["status"] for e in entries} == {"done"}
    assert no_staging_left(outdir) == []
    assert_outputs_equal_to_bag_tool(entries, params_file, tmp_path)


def test_interrupted_run_leaves_nothing_half_written_and_resumes(tmp_path, params_file):
    archive, outdir = tmp_path / "archive", tmp_path / "out"
    # Bags long enough that Ctrl-C after the first one finds others still running.
    make_archive(archive, frames=36, count=6)
    process = fleet(
        archive,
        "--out",
        outdir,
        "--bags-in-flight",
        2,
        params_file=params_file,
        wait=False,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    try:
        # A guard: Ray's start and a first bag took over 120 s beside a CPU-bound process.
        wait_until(lambda: manifest_lines(outdir), timeout=600)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        out, err = process.communicate(timeout=120)
    finally:
        stop(process)
    assert process.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    first = manifest_lines(outdir)
    done_first = {e["input"] for e in first if e["status"] == "done"}
    assert 1 <= len(done_first) < 6
    assert no_staging_left(outdir) == [], err
    written = {str(p.parent) for p in outdir.rglob("metadata.yaml")}
    assert written >= {e["output"] for e in first if e["status"] == "done"}
    for extra in written - {e["output"] for e in first}:  # finished as Ctrl-C came: complete
        assert len(read_bag(extra)[0]["/cam/depth/image"]) == 36

    rc, out, err = fleet(archive, "--out", outdir, "--resume", params_file=params_file)
    assert rc == 0, err
    assert f"| bags skipped (done before) | {len(done_first)} |" in out
    assert f"| bags done | {6 - len(done_first)} |" in out  # no bag done twice
    entries = manifest_lines(outdir)
    assert len(entries) == 6 and {e["status"] for e in entries} == {"done"}
    assert [e for e in entries if e["input"] in done_first] == [  # kept, not redone
        e for e in first if e["input"] in done_first
    ]
    assert_outputs_equal_to_bag_tool(entries, params_file, tmp_path)


def test_usage_and_model_errors_are_one_line_and_exit_2(tmp_path, params_file):
    archive = tmp_path / "archive"
    make_archive(archive, frames=1, count=1)
    rc, _, err = fleet(archive, "--out", tmp_path / "o", "--workers", 0, params_file=params_file)
    assert rc == 2 and "--workers must be >= 1" in err
    rc, _, err = fleet(tmp_path / "nothing", "--out", tmp_path / "o", params_file=params_file)
    assert rc == 2 and "does not exist" in err and "Traceback" not in err
    missing = tmp_path / "missing.yaml"
    missing.write_text(params_file.read_text().replace("tiny_clip.pt", "no_such_model.pt"))
    rc, _, err = fleet(archive, "--out", tmp_path / "o", params_file=missing)
    assert rc == 2 and "depthclip-fleet: error: a model worker could not start" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # Two cameras and one depth image's topic: refused before any bag (or Ray) is started.
    import yaml

    depth = yaml.safe_load(params_file.read_text())
    depth["depthclip"]["ros__parameters"].update(
        metric_scale="scale", metric_scale_sources=["depth"]
    )
    one_topic = tmp_path / "one_depth_topic.yaml"
    one_topic.write_text(yaml.safe_dump(depth))
    rc, _, err = fleet(archive, "--out", tmp_path / "d", params_file=one_topic)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("depthclip-fleet: error: metric_scale source depth with 2 cameras")
    assert not (tmp_path / "d").exists()


def test_a_manifest_that_cannot_be_written_is_a_fleet_error_keeping_earlier_lines(tmp_path):
    """A full disk (here: a file-size limit on this process, which fails writes as a full disk
    does): one FleetError naming the manifest; the lines written before stay readable."""
    jobs = [discovery.BagJob(tmp_path / f"in{i}", tmp_path / "out" / f"in{i}") for i in range(2)]
    record = manifest.Manifest(tmp_path / "out")
    record.record(jobs[0], manifest.DONE, frames=3, model="m", config="c")
    size = record.path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))
    try:
        with pytest.raises(FleetError, match=f"cannot write {record.path}: File too large"):
            record.record(jobs[1], manifest.DONE, frames=3, model="m", config="c")
        with pytest.raises(FleetError, match=f"cannot write {record.path}"):
            record.compact()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    kept = manifest.Manifest(tmp_path / "out")
    assert kept.latest[str(jobs[0].input)]["status"] == manifest.DONE
    assert [p.name for p in record.path.parent.iterdir()] == [manifest.MANIFEST_NAME]


def test_the_kuberay_manifest_runs_options_the_fleet_has():
    """deploy/kuberay's RayJob: its entrypoint parses with depthclip-fleet's own parser, joins
    the cluster, and every pod mounts the storage the bags are read from and written to."""
    import shlex
    from pathlib import Path

    import yaml

    from depthclip_ros.fleet.cli import build_parser

    root = Path(__file__).resolve().parents[2]
    job = yaml.safe_load((root / "deploy/kuberay/depthclip_fleet_rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    program, *argv = shlex.split(job["spec"]["entrypoint"])
    assert program == "depthclip-fleet"
    args = build_parser().parse_args(argv)
    assert args.address == "auto" and args.resume
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == __import__("ray").__version__
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        assert any(Path(p).is_relative_to(mount) for mount in mounts for p in args.inputs)
        assert any(Path(args.out).is_relative_to(mount) for mount in mounts)
    workers = cluster["workerGroupSpecs"][0]
    gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert args.workers * args.gpus_per_worker <= workers["replicas"] * int(gpus)


def test_a_gpu_workers_batches_from_several_bags_are_in_flight_together(tiny_checkpoint, tmp_path):
    """A model worker on a GPU takes as many batches at once as the core has frames in flight
    (Ray's max_concurrency): each begun in turn, waited for while the other runs. Here its class
    without Ray, the core on (stand-in) CUDA graphs whose arrays are held: two bags' batches are
    both begun before either comes back, and each gets its own frames' depth."""
    import threading

    from captured_frame_stand_in import Held, stand_in

    from depthclip_ros.estimator.cuda_graph import SLOTS, CapturedFrames
    from depthclip_ros.estimator.result import ForwardEnd
    from depthclip_ros.fleet.run import GPU_BATCHES_IN_FLIGHT
    from depthclip_ros.fleet.workers import ModelWorker

    assert GPU_BATCHES_IN_FLIGHT == SLOTS
    gate, begun = ForwardEnd(), []

    class HeldCapture(stand_in()):  # a new size's capture and check run apart: not held
        def start(self, *args, **kwargs):
            begun.append(1)
            return Held(super().start(*args, **kwargs), gate)

    worker_class = ModelWorker.__ray_metadata__.modified_class.__mro__[1]
    params = {"model": str(tiny_checkpoint), "device": "cpu", "cache_dir": str(tmp_path)}
    worker = worker_class(params)
    worker.estimator.graphs = CapturedFrames(worker.estimator, HeldCapture)
    frames = [np.full((1, 48, 64, 3), value, np.uint8) for value in (40, 200)]
    worker.predict(frames[0])  # captured and checked
    assert begun == []
    results = {}
    threads = [
        threading.Thread(target=lambda i=i: results.update({i: worker.predict(frames[i])[0]}))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(begun) == 2)  # the second begun while the first is held
    assert results == {}
    gate.set()
    for thread in threads:
        thread.join(10)
    for i, frame in enumerate(frames):
        expected = worker.estimator.predict_eager(frame).depth
        np.testing.assert_array_equal(results[i].depth, expected)


def test_a_bags_batches_on_ray_are_in_flight_together():
    """A bag task sends its next batches to the workers before the first comes back (its
    reading and writing go on meanwhile): on a local Ray, a worker holding every batch until
    told, two batches are begun, then answered in their order. A refusal of the model is said
    where the bag takes the batch; under scene_bins auto a batch runs at once, its cameras'
    scene states back before the next batch leaves."""
    import threading
    import types

    import ray

    from depthclip_ros.errors import ImageSizeError
    from depthclip_ros.fleet.workers import ActorModel
    from depthclip_ros.runtime.scene_hysteresis import SceneChoice

    @ray.remote
    class HeldWorker:  # ModelWorker's predict: (result, the scenes as run here)
        def __init__(self):
            self.told = threading.Event()

        def release(self):
            self.told.set()

        def predict(self, images, scenes=None, arrays=None):
            self.told.wait()
            if images.shape[1] != 4:
                raise ImageSizeError("frames of 4x5 refused here")
            if scenes is not None:
                scenes.hystereses[0].scene = "office"
            return float(images.mean()), scenes

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        worker = HeldWorker.options(max_concurrency=4).remote()
        about = {"device": "cuda:0", "model": "m", "chooses_scenes": False}
        model = ActorModel([worker], about, 0)
        frames = [np.full((1, 4, 4, 3), value, np.uint8) for value in (10, 20)]
        begun = []
        beginning = threading.Thread(target=lambda: begun.extend(map(model.begin_predict, frames)))
        beginning.start()
        beginning.join(60)
        assert len(begun) == 2  # both sent while the worker holds them
        ray.get(worker.release.remote())
        assert [answer() for answer in begun] == [10.0, 20.0]
        refused = model.begin_predict(np.zeros((1, 5, 4, 3), np.uint8))
        with pytest.raises(ImageSizeError, match="refused here"):
            refused()

        model = ActorModel([worker], {**about, "chooses_scenes": True}, 0)
        camera = types.SimpleNamespace(scene="kitchen")
        answer = model.begin_predict(frames[0], scenes=SceneChoice([camera], 1))
        assert camera.scene == "office"  # taken back before the bag's next batch
        assert answer() == 10.0
    finally:
        ray.shutdown()
