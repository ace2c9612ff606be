"""Write small rosbag2 files (MCAP or sqlite3) with `rosbags`, from real rclpy messages.

rclpy serialises the messages (CDR, as a recorder would); rosbags stores the bytes.
"""

import io
import os

import yaml
from helpers import camera_info, encode, stamp, structured_image
from PIL import Image as PILImage
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String

FRAME_PERIOD_NS = 100_000_000  # 10 Hz camera
T0_NS = 1_700_000_000 * 10**9  # a wall-clock-like recording start


def frame_stamp(i):
    t = (
        T0_NS + i * FRAME_PERIOD_NS + 1234
    )  # header stamps a little off the log times, as in real bags
    return divmod(t, 10**9)


def jpeg(rgb):
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def static_broadcaster_qos():
    """What tf2's StaticTransformBroadcaster offers, as a bag records it: reliable, transient
    local, keep last 1."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    return Qos(
        QosHistory.KEEP_LAST,
        1,
        QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL,
        QosTime(0, 0),
        QosTime(0, 0),
        QosLiveliness.AUTOMATIC,
        QosTime(0, 0),
        False,
    )


def write_bag(
    path,
    storage="mcap",
    frames=4,
    width=160,
    height=120,
    compressed=False,
    encoding="rgb8",
    with_info=True,
    image_first=False,
    focal=lambda i: None,
    cameras=None,
    extra=None,
    extra_at=6000,
    frame_ids=None,
):
    """A bag with a camera (image + camera_info) and an unrelated String topic.

    `image_first`: log each image before its camera_info, as image_transport's CameraPublisher
    publishes them; `focal(i)`: frame i's fx = fy (default 0.8 x width); `cameras`: {namespace:
    (width, height)} of several cameras recorded together (default {"/cam": (width, height)}),
    each with its own images (seeded by camera and frame); `extra`: {topic: (rosbags typestore,
    type, message(i))} of more topics, written once a frame, serialised by that typestore,
    `extra_at` ns after the frame's camera_info (negative: before it and the image);
    `/tf_static` among them is recorded with what tf2's static broadcaster offers;
    `frame_ids`: {namespace: the frame_id of its images and camera_infos} (default
    camera_optical_frame).

    Returns {topic: [(log_time_ns, raw_bytes), ...]} of what was written.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    cameras = cameras or {"/cam": (width, height)}
    suffix = "/image_raw/compressed" if compressed else "/image_raw"
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    written = {}
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {
            "/chatter": writer.add_connection(
                "/chatter", "std_msgs/msg/String", typestore=typestore
            )
        }
        for ns in cameras:
            if with_info:
                conns[f"{ns}/camera_info"] = writer.add_connection(
                    f"{ns}/camera_info", "sensor_msgs/msg/CameraInfo", typestore=typestore
                )
            conns[ns + suffix] = writer.add_connection(ns + suffix, msgtype, typestore=typestore)
        for topic, (store, extra_type, _) in (extra or {}).items():
            offered = [static_broadcaster_qos()] if topic == "/tf_static" else []
            conns[topic] = writer.add_connection(
                topic, extra_type, typestore=store, offered_qos_profiles=offered
            )

        def put(topic, t, msg):
            raw = serialize_message(msg)
            writer.write(conns[topic], t, raw)
            written.setdefault(topic, []).append((t, raw))

        for i in range(frames):
            t = T0_NS + i * FRAME_PERIOD_NS
            sec, nsec = frame_stamp(i)
            for k, (ns, (w, h)) in enumerate(cameras.items()):
                rgb = structured_image(h, w, seed=i + 100 * k)
                if compressed:
                    image = CompressedImage(format="jpeg", data=jpeg(rgb))
                else:
                    image = encode(rgb, encoding)
                image_time, info_time = (t, t + 1000) if image_first else (t + 1000, t)
                frame = (frame_ids or {}).get(ns, "camera_optical_frame")
                if with_info:
                    f = focal(i) or w * 0.8
                    info = camera_info(w, h, fx=f, fy=f, cx=w / 2, cy=h / 2)
                    put(f"{ns}/camera_info", info_time, stamp(info, sec, nsec, frame))
                put(ns + suffix, image_time, stamp(image, sec, nsec, frame))
            put("/chatter", t + 5000, String(data=f"message {i}"))
            for topic, (store, extra_type, message) in (extra or {}).items():
                raw = store.serialize_cdr(message(i), extra_type)
                writer.write(conns[topic], t + extra_at, raw)
                written.setdefault(topic, []).append((t + extra_at, raw))
    return written


def as_recorded_on_humble(path):
    """Turn a bag of write_bag into what Humble's rosbag2 records: metadata version 5 with no
    type hashes and no distribution; in sqlite3 (schema 3) no message definitions either."""
    import sqlite3

    meta_path = path / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    info = meta["rosbag2_bagfile_information"]
    for key in ("custom_data", "ros_distro"):
        info.pop(key, None)
    info["version"] = 5
    for topic in info["topics_with_message_count"]:
        topic["topic_metadata"].pop("type_description_hash", None)
        topic["topic_metadata"]["offered_qos_profiles"] = ""  # Humble: a YAML string
    meta_path.write_text(yaml.safe_dump(meta))
    for db in path.glob("*.db3"):
        with sqlite3.connect(db) as con:
            con.execute("DROP TABLE message_definitions")
            con.execute("ALTER TABLE topics DROP COLUMN type_description_hash")
            con.execute("UPDATE schema SET schema_version = 3, ros_distro = 'humble'")
    return path


def read_bag(path):
    """{topic: [(log_time_ns, raw_bytes, msgtype)]} and the storage files of a bag."""
    from rosbags.rosbag2 import Reader

    out = {}
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, bytes(raw), conn.msgtype))
    return out, sorted(os.listdir(path))


def deserialize(raw, msgtype):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED).deserialize_cdr(raw, msgtype)
