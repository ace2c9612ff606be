"""depthclip-bag: info and process on real rosbag2 files (MCAP and sqlite3) written by the
tests."""

import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from bag_factory import as_recorded_on_humble, deserialize, frame_stamp, read_bag, write_bag
from bag_player import play
from clearing_reference import clearing_cloud
from helpers import decode_like_the_plugin, run_on_a_full_disk
from ros_harness import running_node

from depthclip_ros.bag import cli, processing, reading
from depthclip_ros.config.params_files import load_config
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.messages import decoding, point_cloud
from depthclip_ros.messages.camera_model import PinholeCamera

IMAGE_TOPIC = "/cam/image_raw"


@pytest.fixture
def params_file(tiny_checkpoint, tmp_path):
    """The tool's parameter file: the tiny model, a small network input, temperature 1 (see
    conftest)."""
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "depthclip": {
                    "ros__parameters": {
                        "model": str(tiny_checkpoint),
                        "device": "cpu",
                        "cache_dir": str(tmp_path / "cache"),
                        "temperature": 1.0,
                        "input_width": 128,
                        "input_height": 96,
                        "cloud_stride": 4,
                    }
                }
            }
        )
    )
    return path


def run_tool(*argv):
    return cli.main([str(a) for a in argv])


def leftovers(folder):
    return [p for p in os.listdir(folder) if ".partial-" in p]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_process_adds_depth_info_and_cloud_and_copies_everything(
    tmp_path, params_file, storage, compressed
):
    src, dst = tmp_path / "in_bag", tmp_path / "out_bag"
    written = write_bag(src, storage, frames=3, compressed=compressed, encoding="bgr8")
    image_topic = "/cam/image_raw/compressed" if compressed else IMAGE_TOPIC
    assert (
        run_tool(
            "process", src, dst, "--image-topic", image_topic, "--params", params_file, "--quiet"
        )
        == 0
    )

    out, files = read_bag(dst)
    assert files == ["metadata.yaml", f"out_bag.{'mcap' if storage == 'mcap' else 'db3'}"]
    # Every input message is there, byte for byte, at its log time.
    for topic, msgs in written.items():
        assert [(t, raw) for t, raw, _ in out[topic]] == msgs
    images = written[image_topic]
    depth, stds, infos, clouds = (
        out["/cam/depth/image"],
        out["/cam/depth/std"],
        out["/cam/depth/camera_info"],
        out["/cam/points"],
    )
    clearings = out["/cam/points/clearing"]
    assert len(depth) == len(stds) == len(infos) == len(clouds) == len(clearings) == 3
    assert len(images) == 3
    estimator = DepthClip(load_config(params_file))
    for i, (t_img, raw_img) in enumerate(images):
        image = deserialize(raw_img, out[image_topic][0][2])
        for t, _, _ in (depth[i], stds[i], infos[i], clouds[i]):
            assert t == t_img  # the image's log time
        d = deserialize(depth[i][1], "sensor_msgs/msg/Image")
        assert (d.header.stamp.sec, d.header.stamp.nanosec) == frame_stamp(i)
        assert d.header.frame_id == image.header.frame_id == "camera_optical_frame"
        assert (d.encoding, d.height, d.width, d.step) == ("32FC1", 120, 160, 640)
        # The same core on the same decoded frame gives the same depth: one pipeline, not two.
        result = estimator.predict(decoding.decode_image(image))
        expected = result.depth[0]
        np.testing.assert_allclose(decoding.depth_image_to_array(d), expected, rtol=1e-5)
        std = deserialize(stds[i][1], "sensor_msgs/msg/Image")  # depth/std beside the depth
        assert std.header == d.header and (std.encoding, std.height, std.width) == d_layout(d)
        np.testing.assert_allclose(
            decoding.depth_image_to_array(std), result.depth_std[0], rtol=1e-5, atol=1e-6
        )

        info = deserialize(infos[i][1], "sensor_msgs/msg/CameraInfo")
        assert info.header.stamp == d.header.stamp and (info.width, info.height) == (160, 120)
        cloud = deserialize(clouds[i][1], "sensor_msgs/msg/PointCloud2")
        assert cloud.header.stamp == d.header.stamp
        names = [f.name for f in cloud.fields]
        assert names == ["x", "y", "z", "rgb", "std"] and cloud.point_step == 20
        assert (cloud.height, cloud.width) == (math.ceil(120 / 4), math.ceil(160 / 4))
        points = point_cloud.pointcloud_to_array(cloud)
        np.testing.assert_allclose(points[..., 2], expected[::4, ::4], rtol=1e-5)  # z: depth
        np.testing.assert_allclose(points[..., 4], result.depth_std[0][::4, ::4], rtol=1e-5)
        # points/clearing beside points: the reference's clearing cloud at the default q
        clearing = deserialize(clearings[i][1], "sensor_msgs/msg/PointCloud2")
        assert clearing.header == cloud.header and clearings[i][0] == t_img
        intrinsics = PinholeCamera.from_camera_info(info).intrinsics()
        np.testing.assert_allclose(
            point_cloud.pointcloud_to_array(clearing)[..., :3],
            clearing_cloud(result, 0, 0.1, intrinsics, 4, 0.0),
            rtol=1e-5,
            atol=1e-6,
        )
    assert leftovers(tmp_path) == []


def d_layout(image):
    return image.encoding, image.height, image.width


def test_batches_give_the_same_depth_as_single_frames(tmp_path, params_file):
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=5)
    assert (
        run_tool(
            "process",
            src,
            tmp_path / "b1",
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            params_file,
            "--quiet",
        )
        == 0
    )
    assert (
        run_tool(
            "process",
            src,
            tmp_path / "b4",
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            params_file,
            "--batch-size",
            "4",
            "--quiet",
        )
        == 0
    )
    one, _ = read_bag(tmp_path / "b1")
    four, _ = read_bag(tmp_path / "b4")
    assert len(four["/cam/depth/image"]) == 5
    for a, b in zip(one["/cam/depth/image"], four["/cam/depth/image"]):
        da = decoding.depth_image_to_array(deserialize(a[1], "sensor_msgs/msg/Image"))
        db = decoding.depth_image_to_array(deserialize(b[1], "sensor_msgs/msg/Image"))
        np.testing.assert_allclose(da, db, rtol=1e-4, atol=1e-5)


def test_storage_can_be_converted_and_output_is_in_log_time_order(tmp_path, params_file):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames=4)
    assert (
        run_tool(
            "process",
            src,
            dst,
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            params_file,
            "--storage",
            "sqlite3",
            "--batch-size",
            "3",
            "--quiet",
        )
        == 0
    )
    _, files = read_bag(dst)
    assert files == ["metadata.yaml", "out.db3"]
    from rosbags.rosbag2 import Reader

    with Reader(dst) as reader:  # file order, not the reader's merge: stored sorted by log time
        times = [t for _, t, _ in reader.messages()]
    # 4 frames of 3 input messages, and 5 outputs each (depth, std, camera_info, points,
    # points/clearing)
    assert times == sorted(times) and len(times) == 4 * 3 + 4 * 5


def test_without_camera_info_only_depth_is_written(tmp_path, params_file, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames=2, with_info=False)
    assert (
        run_tool(
            "process", src, dst, "--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"
        )
        == 0
    )
    out, _ = read_bag(dst)
    assert len(out["/cam/depth/image"]) == 2 and "/cam/points" not in out
    assert "no point cloud: no camera_info" in capsys.readouterr().err
    from rosbags.rosbag2 import Reader

    with Reader(dst) as reader:  # no empty topics either
        assert sorted(c.topic for c in reader.connections) == [
            "/cam/depth/image",
            "/cam/depth/std",
            IMAGE_TOPIC,
            "/chatter",
        ]


def custom_thing_topic():
    """{topic: (typestore, type, message(i))} of a type no distribution defines."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 value\nstring label", "my_robot_msgs/msg/Thing"))
    thing = store.types["my_robot_msgs/msg/Thing"]
    return {"/thing": (store, "my_robot_msgs/msg/Thing", lambda i: thing(value=i, label="x"))}


def humble_range_topic():
    """{topic: ...} of sensor_msgs/Range as Humble defines it (Iron added a field to it)."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    t = store.types

    def message(i):
        header = t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=i, nanosec=7), frame_id="sonar"
        )
        return t["sensor_msgs/msg/Range"](
            header=header,
            radiation_type=0,
            field_of_view=0.5,
            min_range=0.1,
            max_range=4.0,
            range=1.0 + i,
        )

    return {"/sonar": (store, "sensor_msgs/msg/Range", message)}


def out_connections(path):
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        return {c.topic: c for c in reader.connections}


def decoded_with_own_definition(conn, raw):
    """The message as a reader that trusts only the bag's own definition decodes it."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
    return store.deserialize_cdr(raw, conn.msgtype)


def test_messages_of_custom_types_are_copied_with_their_definitions(tmp_path, params_file):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames=3, extra=custom_thing_topic())
    argv = ["--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"]
    assert run_tool("process", src, dst, *argv) == 0
    before, _ = read_bag(src)
    after, _ = read_bag(dst)
    assert after["/thing"] == before["/thing"] and len(after["/thing"]) == 3
    conn = out_connections(dst)["/thing"]
    assert conn.msgdef.data.startswith("int32 value\nstring label")
    assert conn.digest == out_connections(src)["/thing"].digest


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bags_recorded_on_humble_are_copied_with_definitions_and_hashes(
    tmp_path, params_file, storage
):
    """Humble records no type hashes (and no definitions in sqlite3): OUT, a version 8 bag, gets
    both: the recorded definition hashed here, or Humble's own definition of a standard type."""
    src, dst, iron = tmp_path / "in", tmp_path / "out", tmp_path / "as_iron_records"
    extra = {**humble_range_topic(), **(custom_thing_topic() if storage == "mcap" else {})}
    for path in (src, iron):
        write_bag(path, storage, frames=3, extra=extra)
    as_recorded_on_humble(src)
    hashes = {c.topic: c.digest for c in out_connections(src).values()}
    assert set(hashes.values()) == {""}  # what Humble records
    argv = ["--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"]
    assert run_tool("process", src, dst, *argv) == 0
    before, _ = read_bag(src)
    after, _ = read_bag(dst)
    assert len(after["/cam/depth/image"]) == 3 and len(after["/cam/points"]) == 3
    copied, recorded_with_hashes = out_connections(dst), out_connections(iron)
    for topic in before:  # every copied topic: the hash a recorder with hashes writes
        assert after[topic] == before[topic]
        assert copied[topic].digest == recorded_with_hashes[topic].digest, topic
    sonar = [decoded_with_own_definition(copied["/sonar"], raw) for _, raw, _ in after["/sonar"]]
    assert [m.range for m in sonar] == [1.0, 2.0, 3.0] and not hasattr(sonar[0], "variance")


def test_a_bare_mcap_file_is_copied_with_definitions_and_hashes(tmp_path, params_file):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames=2, extra=custom_thing_topic())
    (mcap,) = src.glob("*.mcap")
    argv = ["--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"]
    assert run_tool("process", mcap, dst, *argv) == 0
    recorded = out_connections(src)
    copied = out_connections(dst)
    assert {t: copied[t].digest for t in recorded} == {t: c.digest for t, c in recorded.items()}


def test_a_humble_sqlite3_bag_with_a_custom_type_is_refused_in_one_line(
    tmp_path, params_file, capsys
):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "sqlite3", frames=2, extra=custom_thing_topic())
    as_recorded_on_humble(src)
    argv = ["--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"]
    assert run_tool("process", src, dst, *argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot copy /thing: the bag records no definition of its type" in line
    assert "ros2 bag convert" in line and not dst.exists()


def test_undecodable_frames_are_skipped_and_counted(tmp_path, params_file, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(
        src, "mcap", frames=2, encoding="mono16"
    )  # decodable; then make one frame a depth image
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    bad = tmp_path / "bad"
    with (
        Reader(src) as reader,
        Writer(bad, version=9, storage_plugin=StoragePlugin.MCAP) as writer,
    ):
        conns = {
            c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest)
            for c in reader.connections
        }
        first = True
        for c, t, raw in reader.messages():
            if c.topic == IMAGE_TOPIC and first:
                msg = deserialize(raw, c.msgtype)
                msg.encoding = "16UC1"
                from rosbags.typesys import Stores, get_typestore

                raw = get_typestore(Stores.ROS2_KILTED).serialize_cdr(msg, c.msgtype)
                first = False
            writer.write(conns[c.id], t, raw)
    assert (
        run_tool(
            "process", bad, dst, "--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"
        )
        == 0
    )
    out, _ = read_bag(dst)
    assert len(out["/cam/depth/image"]) == 1 and len(out[IMAGE_TOPIC]) == 2
    err = capsys.readouterr()
    assert "1 frames rejected" in err.out and "16UC1" in err.err


def test_info_lists_topics_types_counts_and_marks_images(tmp_path, capsys):
    src = tmp_path / "in"
    write_bag(src, "sqlite3", frames=3, compressed=True)
    assert run_tool("info", src) == 0
    text = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("/")
    }
    assert rows["/cam/image_raw/compressed"] == [
        "sensor_msgs/msg/CompressedImage",
        "3",
        "<-",
        "image",
    ]
    assert rows["/cam/camera_info"] == ["sensor_msgs/msg/CameraInfo", "3"]
    assert rows["/chatter"] == ["std_msgs/msg/String", "3"]
    assert "storage:  sqlite3" in text and "messages: 9" in text


# ------------------------------------------------------------------------- errors


def test_unknown_topic_names_the_image_topics(tmp_path, params_file, capsys):
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=1)
    assert (
        run_tool(
            "process", src, tmp_path / "out", "--image-topic", "/nope", "--params", params_file
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "topic /nope is not in bag" in err and "/cam/image_raw" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_non_image_topic_is_refused_with_its_type(tmp_path, params_file, capsys):
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=1)
    assert (
        run_tool(
            "process", src, tmp_path / "out", "--image-topic", "/chatter", "--params", params_file
        )
        == 2
    )
    assert "/chatter" in (err := capsys.readouterr().err) and "std_msgs/msg/String" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_a_clear_error_and_leaves_nothing(tmp_path, params_file, capsys, storage):
    src = tmp_path / "in"
    write_bag(src, storage, frames=4)
    data_file = next(p for p in src.iterdir() if p.suffix in (".mcap", ".db3"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    assert (
        run_tool(
            "process",
            src,
            tmp_path / "out",
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            params_file,
            "--quiet",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("depthclip-bag: error: ") and str(src) in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert run_tool("info", src) == 2


def test_missing_bag_and_non_bag_paths(tmp_path, capsys):
    assert run_tool("info", tmp_path / "absent") == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello")
    assert run_tool("info", tmp_path / "notes.txt") == 2
    assert "is not a rosbag2" in capsys.readouterr().err


def test_output_inside_a_file_is_refused_before_the_model_loads(tmp_path, params_file, capsys):
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=1)
    (tmp_path / "notes.txt").write_text("hello")
    argv = ["--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"]
    assert run_tool("process", src, tmp_path / "notes.txt" / "out", *argv) == 2
    assert "is inside a file, not a folder" in capsys.readouterr().err


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path, params_file, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames=2)
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    assert (
        run_tool("process", src, dst, "--image-topic", IMAGE_TOPIC, "--params", params_file) == 2
    )
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert os.listdir(dst) == ["keep.txt"]
    assert (
        run_tool(
            "process",
            src,
            dst,
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            params_file,
            "--overwrite",
            "--quiet",
        )
        == 0
    )
    assert sorted(os.listdir(dst)) == ["metadata.yaml", "out.mcap"] and leftovers(tmp_path) == []


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "overlapped"])
def test_failure_mid_run_leaves_no_output_and_keeps_the_old_one(
    tmp_path, params_file, monkeypatch, overlap
):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames=4)
    assert (
        run_tool(
            "process", src, dst, "--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"
        )
        == 0
    )
    before = read_bag(dst)
    calls = []

    def interrupted_after_one_frame(self, chunk):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # what Ctrl-C or SIGTERM does mid-run
        return original(self, chunk)

    original = processing.BagProcessor._write_chunk
    monkeypatch.setattr(processing.BagProcessor, "_write_chunk", interrupted_after_one_frame)
    monkeypatch.setattr(processing, "model_leaves_cpu_free", lambda *args: overlap)
    assert (
        run_tool(
            "process",
            src,
            dst,
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            params_file,
            "--overwrite",
            "--quiet",
        )
        == 130
    )
    assert read_bag(dst) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_image_logged_before_its_camera_info_gets_its_own_k(tmp_path, params_file, storage):
    """image_transport logs the image first, its camera_info right after: pairing is by stamp."""
    src, dst = tmp_path / "in", tmp_path / "out"
    focal = lambda i: 100.0 + 10 * i  # noqa: E731
    write_bag(src, storage, frames=4, image_first=True, focal=focal)
    assert (
        run_tool(
            "process", src, dst, "--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"
        )
        == 0
    )
    out, _ = read_bag(dst)
    infos = [deserialize(raw, t) for _, raw, t in out["/cam/depth/camera_info"]]
    clouds = [deserialize(raw, t) for _, raw, t in out["/cam/points"]]
    depths = [deserialize(raw, t) for _, raw, t in out["/cam/depth/image"]]
    assert len(infos) == len(clouds) == len(depths) == 4
    for i, (info, cloud, depth) in enumerate(zip(infos, clouds, depths)):
        assert (info.header.stamp.sec, info.header.stamp.nanosec) == frame_stamp(i)
        assert info.k[0] == info.k[4] == focal(i)
        z = decoding.depth_image_to_array(depth)[4, 8]  # the cloud's point (1, 2) at stride 4
        point = point_cloud.pointcloud_to_array(cloud)[1, 2]
        np.testing.assert_allclose(
            point[:2], [(8 - 80) * z / focal(i), (4 - 60) * z / focal(i)], rtol=1e-5
        )


def test_output_metadata_is_the_form_humble_reads(tmp_path, params_file):
    """Humble's rosbag2 parses offered_qos_profiles as a YAML string (metadata version <= 8)."""
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "sqlite3", frames=1)
    assert (
        run_tool(
            "process", src, dst, "--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"
        )
        == 0
    )
    info = yaml.safe_load((dst / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    for topic in info["topics_with_message_count"]:
        assert isinstance(topic["topic_metadata"]["offered_qos_profiles"], str), topic


@pytest.mark.ros
def test_bag_outputs_are_the_topics_a_node_in_the_camera_namespace_publishes():
    import rclpy
    from helpers import rclpy_context

    from depthclip_ros.messages import topics

    with rclpy_context():
        node = rclpy.create_node("depthclip", namespace="/camera/color")
        resolved = {key: node.resolve_topic_name(name) for key, name in topics.OUTPUTS.items()}
        node.destroy_node()
    for image_topic in ("/camera/color/image_raw", "/camera/color/image_raw/compressed"):
        assert reading.output_topics(image_topic) == {
            k: resolved[k] for k in ("depth", "std", "camera_info", "points", "clearing")
        }
    assert resolved["depth"] == "/camera/color/depth/image"


def test_already_processed_bag_is_refused(tmp_path, params_file, capsys):
    src, once = tmp_path / "in", tmp_path / "once"
    write_bag(src, "mcap", frames=1)
    assert (
        run_tool(
            "process", src, once, "--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"
        )
        == 0
    )
    assert (
        run_tool(
            "process",
            once,
            tmp_path / "twice",
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            params_file,
        )
        == 2
    )
    assert (
        "already has /cam/depth/camera_info, /cam/depth/image, /cam/depth/std, /cam/points"
        in capsys.readouterr().err
    )


@pytest.mark.slow
def test_console_entry_point_reports_config_errors(tmp_path):
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=1)
    bad = tmp_path / "bad.yaml"
    bad.write_text("depthclip:\n  ros__parameters:\n    cloud_stride: -3\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "depthclip_ros.bag.cli",
            "process",
            str(src),
            str(tmp_path / "out"),
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        "invalid config field 'cloud_stride' = -3" in proc.stderr
        and "Traceback" not in proc.stderr
    )


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_damaged_bags_give_an_error_or_a_complete_output_never_a_crash(
    tmp_path, params_file, capsys, storage
):
    """Blocks of random bytes anywhere in the file: exit 0 with a full output, or exit 2 with
    nothing."""
    clean = tmp_path / "clean"
    write_bag(clean, storage, frames=3)
    data_file = next(p for p in clean.iterdir() if p.suffix in (".mcap", ".db3"))
    data = data_file.read_bytes()
    outcomes = set()
    for seed in range(12):
        rng = random.Random(seed)
        damaged = bytearray(data)
        start = rng.randrange(len(damaged))
        for i in range(start, min(len(damaged), start + rng.randrange(16, 4096))):
            damaged[i] = rng.randrange(256)
        src, dst = tmp_path / f"damaged{seed}", tmp_path / f"out{seed}"
        shutil.copytree(clean, src)
        (src / data_file.name).write_bytes(bytes(damaged))
        rc = run_tool(
            "process", src, dst, "--image-topic", IMAGE_TOPIC, "--params", params_file, "--quiet"
        )
        err = capsys.readouterr().err
        assert rc in (0, 2), err
        if rc == 2:
            assert "depthclip-bag: error:" in err and not dst.exists()
        else:
            assert sorted(os.listdir(dst)) == ["metadata.yaml", f"out{seed}{data_file.suffix}"]
        outcomes.add(rc)
    assert 2 in outcomes and leftovers(tmp_path) == []


# ------------------------------------------------------------------------- live replay


@pytest.mark.ros
def test_bag_replayed_with_clock_into_a_sim_time_node(tmp_path, tiny_checkpoint):
    """`ros2 bag play BAG --clock` into the node with use_sim_time: the depth carries the bag's
    stamps."""
    bag = tmp_path / "recorded"
    frames = 5
    write_bag(bag, "mcap", frames=frames)
    bag_stamps = [frame_stamp(i) for i in range(frames)]
    remap = {"image": IMAGE_TOPIC, "camera_info": "/cam/camera_info"}
    with running_node(tiny_checkpoint, tmp_path, remappings=remap, use_sim_time=True) as (
        node,
        tester,
    ):
        play(tester.node, bag, rate=0.25)  # 10 Hz recording at 2.5 Hz: the node keeps up
        depth = tester.wait_for("depth/image", count=frames, timeout=20)
        clouds = tester.wait_for("points", count=frames, timeout=20)
        node_now = node.get_clock().now().nanoseconds
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in depth]
    assert stamps == bag_stamps  # every frame, in order, with its recorded stamp
    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in clouds] == bag_stamps
    # The node runs on the bag's clock (2023), not the wall clock.
    last_log_ns = 1_700_000_000 * 10**9 + (frames - 1) * 100_000_000
    assert last_log_ns <= node_now <= last_log_ns + 10**9


def test_a_replayed_bag_equals_the_nodes_temporal_filter(tmp_path, tiny_checkpoint):
    """temporal_filter mixture: depthclip-bag's depth equals the node's for the same frames (the
    node fed by `ros2 bag play` of the same bag, frame by frame), and differs from each frame
    alone after the first. Every frame of the bag is another image, and the threshold lets
    none restart, so the fusion shows (the tiny random CLIP barely responds to small changes)."""
    bag = tmp_path / "frames"
    frames = 10
    write_bag(bag, "mcap", frames=frames)
    common = dict(
        temperature=1.0,
        input_width=128,
        input_height=96,
        temporal_filter="mixture",
        temporal_change_threshold=255.0,
    )
    params = tmp_path / "params.yaml"
    for name, filter_mode in (("filtered", "mixture"), ("alone", "off")):
        settings = dict(model=str(tiny_checkpoint), device="cpu", cache_dir=str(tmp_path / "c"))
        settings.update(common, temporal_filter=filter_mode)
        params.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": settings}}))
        assert run_tool("process", bag, tmp_path / name, "--params", params) == 0

    def depth_of(name):
        messages = read_bag(tmp_path / name)[0]["/cam/depth/image"]
        return [decoding.depth_image_to_array(deserialize(raw, kind)) for _, raw, kind in messages]

    filtered, alone = depth_of("filtered"), depth_of("alone")
    assert len(filtered) == frames
    # The first frame is itself (its depth step from the grid's, as a fused frame's).
    np.testing.assert_allclose(filtered[0], alone[0], atol=1e-5, equal_nan=True)
    assert all(np.abs(f - a).max() > 1e-4 for f, a in zip(filtered[1:], alone[1:]))
    remap = {"image": IMAGE_TOPIC, "camera_info": "/cam/camera_info"}
    with running_node(tiny_checkpoint, tmp_path, remappings=remap, **common) as (_, tester):
        play(tester.node, bag, rate=0.25)  # 10 Hz recording at 2.5 Hz: every frame answered
        depth = tester.wait_for("depth/image", count=frames, timeout=30)
    node = [decoding.depth_image_to_array(m) for m in depth]
    for from_bag, from_node in zip(filtered, node, strict=True):
        np.testing.assert_allclose(from_node, from_bag, atol=1e-6, equal_nan=True)


@pytest.mark.slow
def test_sigterm_mid_run_removes_the_partial_output(tmp_path, params_file):
    import signal
    import time

    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames=100, width=320, height=240)
    slow = tmp_path / "slow.yaml"  # the full-size network input: a run of several seconds
    slow.write_text(
        params_file.read_text()
        .replace("input_width: 128", "input_width: 544")
        .replace("input_height: 96", "input_height: 416")
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "depthclip_ros.bag.cli",
            "process",
            str(src),
            str(dst),
            "--image-topic",
            IMAGE_TOPIC,
            "--params",
            str(slow),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def staged_bytes():
        return sum(
            f.stat().st_size for d in leftovers(tmp_path) for f in (tmp_path / d).rglob("*.mcap")
        )

    # Mid-run: frames are being written (a 320x240 frame is 230 kB), the run is under way.
    deadline = time.monotonic() + 60
    while staged_bytes() < 500_000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (
        "interrupted; no output written" in err and "%" in err
    )  # it was under way (progress bar)
    assert not dst.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_several_cameras_in_one_pass_with_one_model(tmp_path, params_file, storage, monkeypatch):
    """Two cameras of different sizes and a third of the first's size, image_transport's log
    order: each gets its own outputs, stamps and K, depth equal to the core's on its own frame;
    frames of one size from different cameras share batches; the model is loaded once."""
    src, dst = tmp_path / "in", tmp_path / "out"
    cameras = {"/front": (160, 120), "/rear": (128, 96), "/left": (160, 120)}
    written = write_bag(src, storage, frames=3, image_first=True, cameras=cameras)
    loads, batch_sizes = [], []
    real_init, real_begin = DepthClip.__init__, DepthClip.begin_predict

    def counted_init(self, *args, **kwargs):
        loads.append(1)
        real_init(self, *args, **kwargs)

    def recorded_begin(self, images, scenes=None, arrays=None):
        batch_sizes.append(len(images))
        return real_begin(self, images, scenes, arrays)

    monkeypatch.setattr(DepthClip, "__init__", counted_init)
    monkeypatch.setattr(DepthClip, "begin_predict", recorded_begin)
    argv = [f"--image-topic={ns}/image_raw" for ns in cameras]
    assert run_tool("process", src, dst, *argv, "--batch-size", 4, "--params", params_file) == 0
    assert loads == [1]
    # front and left (160x120) share batches: 4 frames when the fourth arrives (frame 1), then
    # the rest (2) at the end; rear (128x96) goes with each flush: 2, then 1.
    assert sorted(batch_sizes) == [1, 2, 2, 4]
    monkeypatch.undo()
    out, _ = read_bag(dst)
    for topic, msgs in written.items():  # every input message, byte for byte
        assert [(t, raw) for t, raw, _ in out[topic]] == msgs
    estimator = DepthClip(load_config(params_file))
    for ns, (width, height) in cameras.items():
        depths = out[f"{ns}/depth/image"]
        infos = out[f"{ns}/depth/camera_info"]
        assert len(depths) == len(infos) == len(out[f"{ns}/points"]) == 3
        for i, (t_img, raw_img) in enumerate(written[f"{ns}/image_raw"]):
            image = deserialize(raw_img, "sensor_msgs/msg/Image")
            depth = deserialize(depths[i][1], "sensor_msgs/msg/Image")
            info = deserialize(infos[i][1], "sensor_msgs/msg/CameraInfo")
            assert depths[i][0] == t_img  # the image's log time
            assert (depth.header.stamp.sec, depth.header.stamp.nanosec) == frame_stamp(i)
            assert (depth.width, depth.height) == (info.width, info.height) == (width, height)
            assert info.k[0] == width * 0.8  # this camera's K
            expected = estimator.predict(decoding.decode_image(image)).depth[0]
            got = decoding.depth_image_to_array(depth)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_overlapped_stages_write_the_same_bag_as_one_thread(
    tmp_path, params_file, monkeypatch, storage
):
    """The model and the finishing of frames (results taken, output messages built) on threads
    of their own beside reading and writing (the GPU and many-core path) write the messages
    the steps run in turn write, in the same order (MCAP: byte for byte); sqlite3 bags are read
    and written, their output topics added, from the thread that opened them."""
    src = tmp_path / "in"
    cameras = {"/a": (160, 120), "/b": (128, 96)}
    write_bag(src, storage, frames=5, image_first=True, cameras=cameras)
    files, contents = {}, {}
    for overlap in (False, True):
        monkeypatch.setattr(processing, "model_leaves_cpu_free", lambda *a, o=overlap: o)
        dst = tmp_path / str(overlap) / "out"  # one name: the file records it
        argv = ["--image-topic=/a/image_raw", "--image-topic=/b/image_raw", "--batch-size", 2]
        assert run_tool("process", src, dst, *argv, "--params", params_file, "--quiet") == 0
        contents[overlap], names = read_bag(dst)
        files[overlap] = [(dst / name).read_bytes() for name in names if name.endswith(".mcap")]
        assert len(contents[overlap]["/a/depth/image"]) == len(contents[overlap]["/b/points"]) == 5
    assert contents[True] == contents[False] and files[True] == files[False]


def test_each_image_size_is_prepared_once_before_its_first_frame_and_timed_apart(
    tmp_path, params_file, monkeypatch, capsys
):
    """Where the model prepares image sizes (CUDA graphs, TensorRT engines: here the CPU core
    told it does, its warm-up recorded and slowed by 0.5 s), each camera size is warmed up once,
    for batches up to --batch-size, before the first forward of that size; the seconds it took
    are printed apart from the processing's; the bag written is the one an unprepared run
    writes."""
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=4, image_first=True, cameras={"/a": (160, 120), "/b": (128, 96)})
    argv = ["--image-topic=/a/image_raw", "--image-topic=/b/image_raw", "--batch-size", 3]
    assert run_tool("process", src, tmp_path / "plain", *argv, "--params", params_file) == 0
    assert "preparing" not in capsys.readouterr().out  # the CPU core prepares nothing
    calls = []
    real_begin = DepthClip.begin_predict

    def warm_up(self, image_size=None, max_batch=1):
        calls.append(("warm_up", tuple(image_size), max_batch))
        time.sleep(0.5)

    def begin_predict(self, images, scenes=None, arrays=None):
        calls.append(("predict", images.shape[1:3], len(images)))
        return real_begin(self, images, scenes, arrays)

    monkeypatch.setattr(DepthClip, "prepares_image_sizes", True)
    monkeypatch.setattr(DepthClip, "warm_up", warm_up)
    monkeypatch.setattr(DepthClip, "begin_predict", begin_predict)
    assert run_tool("process", src, tmp_path / "prepared", *argv, "--params", params_file) == 0
    warm_ups = [call for call in calls if call[0] == "warm_up"]
    assert sorted(warm_ups) == [("warm_up", (96, 128), 3), ("warm_up", (120, 160), 3)]
    for warm in warm_ups:  # before the first forward of its size
        first = next(i for i, c in enumerate(calls) if c[0] == "predict" and c[1] == warm[1])
        assert calls.index(warm) < first, calls
    preparing = re.search(r"s \(and ([0-9.]+) s preparing image sizes\)", capsys.readouterr().out)
    assert preparing and float(preparing.group(1)) >= 1.0
    assert read_bag(tmp_path / "prepared")[0] == read_bag(tmp_path / "plain")[0]


@pytest.mark.parametrize("said", ["begun", "taken"])
def test_a_size_the_model_refuses_is_one_line_whether_said_when_begun_or_taken(
    tmp_path, params_file, monkeypatch, capsys, said
):
    """A camera size the configuration cannot take (preprocessing crop needs 640x480) is the
    same one error line, exit 2 and nothing left half-written, whether the model refuses the
    batch when it is begun (the core) or when its result is taken (the fleet's workers, in
    other processes)."""
    from depthclip_ros.errors import ImageSizeError

    src = tmp_path / "in"
    write_bag(src, "mcap", frames=3)
    refusal = ImageSizeError("preprocessing 'crop' needs 640x480 frames")

    def begin_predict(self, images, scenes=None, arrays=None):
        if said == "begun":
            raise refusal

        def taken():
            raise refusal

        return taken

    monkeypatch.setattr(DepthClip, "begin_predict", begin_predict)
    argv = ["--params", params_file, "--quiet"]
    assert run_tool("process", src, tmp_path / "out", *argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"depthclip-bag: error: frames of 160x120 on {IMAGE_TOPIC} cannot be processed with "
        "this configuration: preprocessing 'crop' needs 640x480 frames"
    ], lines
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_frames_in_flight_on_the_model_thread_write_what_one_at_a_time_writes(
    tmp_path, params_file, monkeypatch
):
    """As on a GPU with CUDA graphs (CPU stand-ins of the captures, the steps overlapped):
    each chunk's frames are begun on the model thread and taken by the writer while the next
    replays, two cameras of two sizes mixed; OUT is byte for byte the one-at-a-time run's."""
    from captured_frame_stand_in import stand_in

    from depthclip_ros.estimator.cuda_graph import CapturedFrames

    src = tmp_path / "in"
    write_bag(src, "mcap", frames=6, cameras={"/a": (160, 120), "/b": (128, 96)})
    argv = ["--image-topic=/a/image_raw", "--image-topic=/b/image_raw", "--batch-size", 2]
    argv += ["--params", params_file]
    assert run_tool("process", src, tmp_path / "plain", *argv) == 0
    capture = stand_in()
    threads = []
    real_init, real_start = DepthClip.__init__, capture.start

    def with_graphs(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.graphs = CapturedFrames(self, capture)

    def start(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_start(self, *args, **kwargs)

    monkeypatch.setattr(DepthClip, "__init__", with_graphs)
    monkeypatch.setattr(capture, "start", start)
    monkeypatch.setattr(processing, "model_leaves_cpu_free", lambda device, threads: True)
    assert run_tool("process", src, tmp_path / "in_flight", *argv) == 0
    assert {made[1:] for made in capture.made} == {(120, 160), (96, 128)}
    assert threads and all(name.startswith("model") for name in threads)
    assert read_bag(tmp_path / "in_flight")[0] == read_bag(tmp_path / "plain")[0]


def test_stages_keep_order_and_stop_at_the_first_error():
    from depthclip_ros.bag.pipeline import run_stages

    for overlap in (False, True):
        seen = []
        run_stages(range(50), lambda x: x * 2, seen.append, overlap=overlap)
        assert seen == [2 * x for x in range(50)]
        seen = []
        run_stages(range(50), lambda x: x * 2, seen.append, overlap=overlap, depth=1)
        assert seen == [2 * x for x in range(50)]
        read = []

        def source(read=read):
            for x in range(10_000):
                read.append(x)
                yield x

        def failing(x):
            if x == 3:
                raise ValueError("frame 3 is bad")
            return x

        with pytest.raises(ValueError, match="frame 3 is bad"):
            run_stages(source(), failing, lambda x: None, overlap=overlap)
        assert len(read) < 100  # the reader stopped too (bounded queues), it did not read on
        # With a finishing step between the model's and writing: in order, on its own thread.
        seen, threads = [], set()

        def finish(x, threads=threads):
            threads.add(threading.current_thread().name)
            return x + 1

        run_stages(range(50), lambda x: x * 2, seen.append, finish_step=finish, overlap=overlap)
        assert seen == [2 * x + 1 for x in range(50)]
        assert all(name.startswith("finish") for name in threads) == overlap
        read.clear()
        with pytest.raises(ValueError, match="frame 3 is bad"):
            run_stages(source(), lambda x: x, lambda x: None, finish_step=failing, overlap=overlap)
        assert len(read) < 100


def test_decoding_ahead_keeps_order_bounds_its_window_and_raises_in_place():
    from depthclip_ros.bag.pipeline import ahead

    def square(x):
        if x == 30:
            raise ValueError("item 30 is bad")
        time.sleep(0.001 * (x % 3))  # finished out of order on several threads
        return x * x

    for workers in (0, 3):
        read = []

        def source(read=read):
            for x in range(10_000):
                read.append(x)
                yield x

        seen = []
        with pytest.raises(ValueError, match="item 30 is bad"):
            for item, get in ahead(source(), square, lambda x: x % 2 == 0, workers, window=5):
                assert len(read) - item <= 6  # at most `window` read ahead of the caller
                seen.append((item, get()))
        assert seen == [(x, x * x) for x in range(30)]  # the odd ones worked when asked


def test_images_decoded_on_threads_ahead_write_what_decoding_in_turn_writes(
    tmp_path, params_file, monkeypatch, capsys
):
    """JPEG frames decoded on three threads ahead of the reading, as where cores are free (a GPU
    host): OUT is byte for byte the one decoded in turn, the undecodable frame is skipped and
    counted at its place; a message whose CDR is damaged is the same one error line, nothing
    written."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    src = tmp_path / "in"
    write_bag(src, "mcap", frames=8, compressed=True)
    topic = "/cam/image_raw/compressed"
    bad = {"undecodable": tmp_path / "undecodable", "damaged": tmp_path / "damaged"}
    for kind, path in bad.items():
        mcap = StoragePlugin.MCAP
        with Reader(src) as reader, Writer(path, version=9, storage_plugin=mcap) as w:
            conns = {
                c.id: w.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest)
                for c in reader.connections
            }
            images = 0
            for c, t, raw in reader.messages():
                images += c.topic == topic
                if c.topic == topic and images == 3:  # the third frame
                    raw = raw[:-200] + bytes(200) if kind == "undecodable" else raw[:20]
                w.write(conns[c.id], t, raw)
    argv = ["--image-topic", topic, "--params", params_file, "--batch-size", 2, "--quiet"]
    runs, decoded_on = {}, set()
    real_decode = processing.BagProcessor._decode

    def decode(self, item):
        decoded_on.add(threading.current_thread().name.split("_")[0])
        return real_decode(self, item)

    monkeypatch.setattr(processing.BagProcessor, "_decode", decode)
    for workers in (0, 3):
        decoded_on.clear()
        monkeypatch.setattr(processing, "decode_threads", lambda *a, n=workers: n)
        monkeypatch.setattr(processing, "model_leaves_cpu_free", lambda *a, o=workers > 0: o)
        dst = tmp_path / f"w{workers}" / "out"  # one name: the file records it
        assert run_tool("process", bad["undecodable"], dst, *argv) == 0
        out = capsys.readouterr()
        assert "1 frames rejected" in out.out and "rejected: undecodable compressed" in out.err
        names = read_bag(dst)[1]
        files = [(dst / name).read_bytes() for name in names if name.endswith(".mcap")]
        assert len(read_bag(dst)[0]["/cam/depth/image"]) == 7
        failed = tmp_path / f"w{workers}" / "failed"
        assert run_tool("process", bad["damaged"], failed, *argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"message on {topic} at log time" in line and "cannot be deserialized" in line
        assert not failed.exists() and leftovers(failed.parent) == []
        runs[workers] = files, line
        assert decoded_on == ({"decode"} if workers else {"MainThread"})
    assert runs[3] == runs[0]


def test_several_cameras_checks(tmp_path, params_file, capsys):
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=1, cameras={"/front": (160, 120), "/rear": (160, 120)})
    front, rear = "--image-topic=/front/image_raw", "--image-topic=/rear/image_raw"
    cases = [
        (
            [front, rear, "--camera-info-topic=/front/camera_info"],
            "--camera-info-topic applies to one --image-topic",
        ),
        ([front, front], "--image-topic /front/image_raw is given more than once"),
        ([front, "--image-topic=/side/image_raw"], "topic /side/image_raw is not in bag"),
    ]
    for i, (argv, message) in enumerate(cases):
        assert run_tool("process", src, tmp_path / f"o{i}", *argv, "--params", params_file) == 2
        err = capsys.readouterr().err
        assert err.startswith("depthclip-bag: error: ") and message in err, err
        assert err.count("\n") == 1 and not (tmp_path / f"o{i}").exists()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_full_disk_is_one_error_line_and_leaves_nothing(tmp_path, params_file, storage):
    """The tool as its own process with a file-size limit (writes beyond it fail as on a full
    disk): exit 2, one line naming OUT and the reason, no traceback, no output or staging."""
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, "mcap", frames=12)
    limit = 256 * 1024  # the outputs of the first frames pass it

    argv = [sys.executable, "-m", "depthclip_ros.bag.cli", "process", str(src), str(dst)]
    argv += ["--image-topic", IMAGE_TOPIC, "--params", str(params_file), "--quiet"]
    argv += ["--storage", storage]
    proc = run_on_a_full_disk(argv, limit, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1
    assert errors[0].startswith(f"depthclip-bag: error: cannot write {dst}")
    assert "Traceback" not in proc.stderr
    assert not dst.exists() and leftovers(tmp_path) == []


def output_topics_of(path):
    return sorted(c.topic for c in out_connections(path).values())


def test_outputs_only_and_compressed_depth(tmp_path, params_file):
    """--outputs-only writes just the tool's topics (the same messages as a full copy's);
    --compressed-depth writes depth as image_transport's compressedDepth, which decodes to the
    raw depth within one code step; --outputs picks the outputs."""
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=3)
    argv = ["--params", params_file, "--quiet"]  # the bag's one camera: no --image-topic
    full, only, compressed, chosen = (tmp_path / n for n in ("full", "only", "cd", "chosen"))
    assert run_tool("process", src, full, *argv) == 0
    assert run_tool("process", src, only, "--outputs-only", *argv) == 0
    assert run_tool("process", src, compressed, "--outputs-only", "--compressed-depth", *argv) == 0
    assert run_tool("process", src, chosen, "--outputs", "depth,colored", *argv) == 0
    outputs = ["/cam/depth/camera_info", "/cam/depth/image", "/cam/depth/std", "/cam/points"]
    outputs += ["/cam/points/clearing"]
    assert output_topics_of(only) == outputs
    full_messages, _ = read_bag(full)
    only_messages, _ = read_bag(only)
    assert only_messages == {t: full_messages[t] for t in outputs}
    assert output_topics_of(compressed) == sorted(
        ["/cam/depth/camera_info", "/cam/depth/image/compressedDepth", "/cam/depth/std"]
        + ["/cam/points", "/cam/points/clearing"]
    )
    assert output_topics_of(chosen) == sorted(
        ["/cam/camera_info", IMAGE_TOPIC, "/chatter", "/cam/depth/image", "/cam/depth/colored"]
    )
    compressed_messages, _ = read_bag(compressed)
    pairs = zip(
        compressed_messages["/cam/depth/image/compressedDepth"], full_messages["/cam/depth/image"]
    )
    for (t_c, raw_c, type_c), (t_d, raw_d, _) in pairs:
        assert t_c == t_d and type_c == "sensor_msgs/msg/CompressedImage"
        msg = deserialize(raw_c, type_c)
        decoded, quant_a, _, _ = decode_like_the_plugin(msg.format, msg.data.tobytes())
        depth = decoding.depth_image_to_array(deserialize(raw_d, "sensor_msgs/msg/Image"))
        valid = np.isfinite(depth) & (depth < 10.0)
        np.testing.assert_array_equal(np.isnan(decoded), ~valid)
        step = depth[valid] ** 2 / quant_a
        assert (np.abs(decoded[valid] - depth[valid]) <= step * 1.01 + 1e-5).all()


def test_without_image_topic_a_bag_of_several_cameras_is_one_line(tmp_path, params_file, capsys):
    src = tmp_path / "in"
    write_bag(src, "mcap", frames=1, cameras={"/front": (64, 48), "/rear": (64, 48)})
    assert run_tool("process", src, tmp_path / "out", "--params", params_file, "--quiet") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "records 2 image topics (/front/image_raw, /rear/image_raw)" in line
    with pytest.raises(SystemExit) as usage:  # argparse: usage and the choices, exit 2
        run_tool("process", src, tmp_path / "out", "--outputs", "depth,nothing")
    assert usage.value.code == 2 and "expected some of depth, std" in capsys.readouterr().err


@pytest.mark.parametrize("switch_frames", [1, 3])
def test_scene_bins_auto_picks_each_cameras_scene_with_the_nodes_hysteresis(
    tmp_path, tiny_checkpoint, monkeypatch, switch_frames
):
    """scene_bins auto: each frame's depth is the core's under the scene the node's rule picks
    (a new scene takes over after winning scene_switch_frames frames in a row), not each
    frame's own most probable scene. A random CLIP's scene probabilities saturate on one
    scene: CLIP's probabilities are scripted, frame by frame (bathroom has a preset of its own
    bins, kitchen the config's)."""
    import torch

    from depthclip_ros.estimator.scene_classification import SceneClassifier
    from depthclip_ros.runtime.scene_hysteresis import SceneHysteresis

    winners = [0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0]  # 0 bathroom, 1 kitchen
    scripted = iter(winners)
    monkeypatch.setattr(
        SceneClassifier,
        "probabilities",
        lambda self, features: torch.tensor(
            [[0.9, 0.1] if next(scripted) == 0 else [0.2, 0.8] for _ in features]
        ),
    )
    bag, frames = tmp_path / "frames", len(winners)
    write_bag(bag, "mcap", frames=frames)
    settings = dict(
        model=str(tiny_checkpoint),
        device="cpu",
        cache_dir=str(tmp_path / "c"),
        temperature=1.0,
        input_width=128,
        input_height=96,
        scene_bins="auto",
        scenes=["bathroom", "kitchen"],
        scene_presets=["bathroom:bins_class_dependent_3"],
        scene_switch_frames=switch_frames,
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": settings}}))
    assert run_tool("process", bag, tmp_path / "out", "--params", params) == 0
    written = read_bag(tmp_path / "out")[0]
    depth = [
        decoding.depth_image_to_array(deserialize(raw, kind))
        for _, raw, kind in written["/cam/depth/image"]
    ]
    monkeypatch.undo()
    model = DepthClip(load_config(str(params)))
    hysteresis, chosen = SceneHysteresis(), []
    for winner in winners:
        scores = np.array([[0.9, 0.1] if winner == 0 else [0.2, 0.8]])
        chosen += hysteresis.choose(("bathroom", "kitchen"), scores, switch_frames)
    own = [("bathroom", "kitchen")[w] for w in winners]
    assert (chosen == own) == (switch_frames == 1), (chosen, own)  # the rule shows
    images = [decoding.decode_image(deserialize(raw, k)) for _, raw, k in written[IMAGE_TOPIC]]
    for i, (rgb, scene) in enumerate(zip(images, chosen, strict=True)):
        expected = model.predict(rgb, scenes=[scene]).depth[0]
        np.testing.assert_allclose(depth[i], expected, atol=1e-5, equal_nan=True, err_msg=i)
