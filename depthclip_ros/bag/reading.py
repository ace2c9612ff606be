"""Reading recorded rosbag2 files (MCAP or sqlite3) with `rosbags`: opening, listing, choosing the
image and camera_info topics, and turning damage in a file into one BagError. No rclpy.
"""

from __future__ import annotations

import sqlite3
import struct
import sys
from pathlib import Path

from rosbags.rosbag2 import Reader, ReaderError

from ..errors import BagError
from ..messages import topics
from ..messages.outputs import DEFAULT_OUTPUTS

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
# What rosbags and its storage back ends raise on damaged files (found by fuzzing bags here):
# damaged lengths overflow or ask for absurd allocations; sqlite3 goes through sqlite3 or apsw.
CORRUPTION_ERRORS = (
    ReaderError,
    struct.error,
    sqlite3.Error,
    EOFError,
    IndexError,
    KeyError,
    ValueError,
    OSError,
    ArithmeticError,
    MemoryError,
)
try:
    import apsw

    CORRUPTION_ERRORS += (apsw.Error,)
except ImportError:  # rosbags falls back to sqlite3
    pass


def open_bag(path: Path):
    """An open rosbags Reader for a bag folder, .mcap or .db3 file; BagError when unreadable."""
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    reader = Reader(path) if path.is_dir() or path.suffix in (".mcap", ".db3") else None
    if reader is None:
        raise BagError(
            f"{path} is not a rosbag2 (a folder with metadata.yaml, or a .mcap / .db3 file)"
        )
    try:
        reader.open()
    except CORRUPTION_ERRORS as exc:
        raise BagError(
            f"cannot read bag {path}: {exc} (truncated or corrupt? `mcap recover` repairs "
            f"a truncated MCAP file, `ros2 bag reindex` a missing metadata.yaml)"
        ) from None
    return reader


def storage_of(path: Path) -> str:
    files = [path] if path.is_file() else list(path.iterdir())
    return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"


def print_info(path: Path, out=None) -> None:
    """Storage, duration and the topics of a bag with their types and counts; images marked."""
    out = out or sys.stdout
    reader = open_bag(path)
    try:
        counts = {}  # a topic may have several connections (several recorders)
        for c in reader.connections:
            counts[(c.topic, c.msgtype)] = counts.get((c.topic, c.msgtype), 0) + c.msgcount
        width = max([len(t) for t, _ in counts] + [5])
        print(f"bag:      {path}", file=out)
        print(f"storage:  {storage_of(path)}", file=out)
        print(f"duration: {reader.duration * 1e-9:.3f} s", file=out)
        print(f"messages: {reader.message_count}", file=out)
        print(f"{'topic':<{width}}  {'type':<32}  {'count':>7}", file=out)
        for topic, msgtype in sorted(counts):
            mark = "  <- image" if msgtype in (IMAGE, COMPRESSED) else ""
            print(
                f"{topic:<{width}}  {msgtype:<32}  {counts[(topic, msgtype)]:>7}{mark}", file=out
            )
    finally:
        reader.close()


def output_topics(image_topic: str, keys=DEFAULT_OUTPUTS) -> dict:
    """Output topics (`keys` of topics.OUTPUTS) beside the image topic, named as a node in the
    camera's namespace names them: /cam/image_raw (or /cam/image_raw/compressed) ->
    /cam/depth/image, /cam/depth/std, /cam/depth/camera_info, /cam/points, ..."""
    outputs = topics.outputs_beside(image_topic)
    return {key: outputs[key] for key in keys}


def image_topics_of(reader) -> list:
    """The bag's image topics (raw or compressed), sorted."""
    return sorted(t for t, m in _topic_types(reader).items() if m in (IMAGE, COMPRESSED))


def only_image_topic(reader, path) -> str:
    """The bag's one image topic; BagError listing them when it records none or several."""
    images = image_topics_of(reader)
    if len(images) != 1:
        raise BagError(
            f"bag {path} records {len(images)} image topics ({', '.join(images) or 'none'}); "
            f"name the ones to process"
        )
    return images[0]


def _topic_types(reader) -> dict:
    return {c.topic: c.msgtype for c in reader.connections}


def check_topics(reader, path, image_topic, info_topic, keys=DEFAULT_OUTPUTS):
    """(image type, camera_info topic or None, output topics) for writing the `keys` outputs of
    `image_topic`; BagError when a topic is missing, of the wrong type, or the outputs would
    collide."""
    types = _topic_types(reader)
    images = sorted(t for t, m in types.items() if m in (IMAGE, COMPRESSED))
    if image_topic not in types:
        raise BagError(
            f"topic {image_topic} is not in bag {path}; its image topics: "
            f"{', '.join(images) or 'none'}"
        )
    if types[image_topic] not in (IMAGE, COMPRESSED):
        raise BagError(
            f"topic {image_topic} in bag {path} is {types[image_topic]}, not {IMAGE} or "
            f"{COMPRESSED}; image topics: {', '.join(images) or 'none'}"
        )
    outputs = output_topics(image_topic, keys)
    if info_topic is None:  # the camera's own camera_info, when recorded
        candidate = topics.beside(image_topic, topics.CAMERA_INFO)
        info_topic = candidate if types.get(candidate) == CAMERA_INFO else None
    elif info_topic not in types:
        raise BagError(
            f"camera_info topic {info_topic} is not in bag {path}; camera_info topics: "
            f"{', '.join(sorted(t for t, m in types.items() if m == CAMERA_INFO)) or 'none'}"
        )
    elif types[info_topic] != CAMERA_INFO:
        raise BagError(
            f"topic {info_topic} in bag {path} is {types[info_topic]}, not {CAMERA_INFO}"
        )
    clash = sorted(set(outputs.values()) & set(types))
    if clash:
        raise BagError(
            f"bag {path} already has {', '.join(clash)} (processed before?); "
            f"the outputs would collide with them"
        )
    return types[image_topic], info_topic, outputs


def topics_in_bag(path: Path, wanted) -> list:
    """The topics of `wanted` that the bag records, in `wanted`'s order (no `wanted`: its one
    image topic); BagError when none."""
    reader = open_bag(path)
    try:
        types = _topic_types(reader)
        if not wanted:
            return [only_image_topic(reader, path)]
    finally:
        reader.close()
    present = [topic for topic in wanted if topic in types]
    if not present:
        images = sorted(t for t, m in types.items() if m in (IMAGE, COMPRESSED))
        raise BagError(
            f"none of {', '.join(wanted)} is in bag {path}; its image topics: "
            f"{', '.join(images) or 'none'}"
        )
    return present


def read_messages(reader, path, connections=()):
    """reader.messages(), with damage in the file reported as BagError (nothing else caught)."""
    messages = reader.messages(connections=connections)
    count = 0
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except CORRUPTION_ERRORS as exc:
            raise BagError(
                f"bag {path} is corrupt or truncated after {count} messages: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        count += 1
        yield item
