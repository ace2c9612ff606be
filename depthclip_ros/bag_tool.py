"""depthclip-bag: list a recorded rosbag2, or write a copy of it with depth and point clouds added.

  depthclip-bag info BAG
  depthclip-bag process IN OUT --image-topic /camera/image_raw [--camera-info-topic ...]

Reads and writes MCAP and sqlite3 bags with `rosbags` (no ROS installation or graph needed).
Frames go through the same DepthClip core and the same conversions as the live node. No rclpy.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import struct
import sys
import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from . import conversions, topics
from .config import ConfigError, DepthClipConfig, OutputSettings, load_params
from .files import atomic_directory
from .model_loading import ModelLoadError
from .stamp_pairing import stamp_key

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STORAGES = ("mcap", "sqlite3")
# rosbag2 metadata version of OUT: 8 writes offered_qos_profiles as a YAML string, the form
# Humble's
# rosbag2 parses (version 9 writes a list, which Humble refuses); Iron and later read 8 too.
OUTPUT_BAG_VERSION = 8
# Flush a batch early once this many bytes of other messages wait behind it (bounded memory).
MAX_BUFFERED_BYTES = 64 << 20
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


class BagError(Exception):
    """A bag cannot be read or written as asked; the message says what and where."""


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


# ---------------------------------------------------------------------------- info


def info(path: Path, out=None) -> None:
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


# ---------------------------------------------------------------------------- process


def output_topics(image_topic: str) -> dict:
    """Output topics beside the image topic, named as a node in the camera's namespace names them:
    /cam/image_raw (or /cam/image_raw/compressed) -> /cam/depth/image, /cam/depth/camera_info,
    /cam/points."""
    outputs = topics.outputs_beside(image_topic)
    return {key: outputs[key] for key in ("depth", "camera_info", "points")}


def _topic_types(reader) -> dict:
    return {c.topic: c.msgtype for c in reader.connections}


def _check_topics(reader, path, image_topic, info_topic):
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
    outputs = output_topics(image_topic)
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


def _messages(reader, path, connections=()):
    """reader.messages(), with damage in the file reported as BagError (and nothing else
    caught)."""
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


class _Frame:
    __slots__ = ("timestamp", "header", "rgb", "info")

    def __init__(self, timestamp, header, rgb, info):
        self.timestamp, self.header, self.rgb, self.info = timestamp, header, rgb, info


class BagProcessor:
    """Copies every message of IN to the writer and adds the depth outputs of one image topic."""

    def __init__(self, estimator, settings: OutputSettings, typestore, batch_size: int = 1):
        self.estimator = estimator
        self.settings = settings
        self.typestore = typestore
        self.batch_size = batch_size
        self.stats = {
            "frames": 0,
            "depth": 0,
            "clouds": 0,
            "rejected": 0,
            "copied": 0,
            "info_fallbacks": 0,
        }
        self.problems: dict = {}

    def run(self, reader, writer, in_path, image_topic, info_topic, outputs, progress=None):
        ts = self.typestore
        out_conns = {}
        for c in reader.connections:  # every input connection, unchanged
            key = (c.topic, c.msgtype, c.ext.serialization_format)
            if key in out_conns:
                continue
            have_def = c.msgdef is not None and c.msgdef.data and c.digest
            if not have_def and c.msgtype not in ts.types:
                raise BagError(
                    f"cannot copy {c.topic}: the bag has no definition of its type {c.msgtype}"
                )
            out_conns[key] = writer.add_connection(
                c.topic,
                c.msgtype,
                msgdef=c.msgdef.data if have_def else None,
                rihs01=c.digest if have_def else None,
                typestore=ts,
                serialization_format=c.ext.serialization_format,
                offered_qos_profiles=c.ext.offered_qos_profiles,
            )
        self._outputs = outputs
        self._new = {}  # output connections, added on first use: no empty topics in OUT
        self._writer = writer
        self._frames, self._waiting, self._waiting_bytes = [], [], 0
        infos_by_stamp = self._index_camera_infos(reader, in_path, info_topic)
        latest_info = None
        for conn, timestamp, raw in _messages(reader, in_path):
            self._waiting.append(
                (
                    out_conns[(conn.topic, conn.msgtype, conn.ext.serialization_format)],
                    timestamp,
                    raw,
                )
            )
            self._waiting_bytes += len(raw)
            self.stats["copied"] += 1
            if conn.topic == info_topic and conn.msgtype == CAMERA_INFO:
                latest_info = (conn, timestamp, raw)
            elif conn.topic == image_topic:
                msg = self._deserialize(raw, conn, timestamp)
                self._add_frame(
                    msg,
                    timestamp,
                    self._camera_info_for(msg, timestamp, infos_by_stamp, latest_info),
                )
                if progress is not None:
                    progress.update(1)
            if len(self._frames) >= self.batch_size or self._waiting_bytes > MAX_BUFFERED_BYTES:
                self._flush()
        self._flush()
        return self.stats

    def _index_camera_infos(self, reader, in_path, info_topic) -> dict:
        """{stamp: (connection, log time, raw)} of every camera_info: pairing by stamp makes the
        log order (image first, as image_transport publishes, or camera_info first) irrelevant."""
        if info_topic is None:
            return {}
        connections = [
            c for c in reader.connections if c.topic == info_topic and c.msgtype == CAMERA_INFO
        ]
        index = {}
        for conn, timestamp, raw in _messages(reader, in_path, connections):
            msg = self._deserialize(raw, conn, timestamp)
            index[stamp_key(msg.header.stamp)] = (conn, timestamp, raw)
        return index

    def _camera_info_for(self, image, timestamp, infos_by_stamp, latest):
        """The camera_info with the image's stamp; else the last one logged before it (counted)."""
        found = infos_by_stamp.get(stamp_key(image.header.stamp))
        if found is None and latest is not None:
            found = latest
            self.stats["info_fallbacks"] += 1
            self.problems.setdefault(
                "no camera_info with the image's stamp: used the last one logged before the image",
                timestamp,
            )
        if found is None:
            return None
        info = self._deserialize(found[2], found[0], found[1])
        if info.header.frame_id != image.header.frame_id:
            self.problems.setdefault(
                f"camera_info frame_id '{info.header.frame_id}' differs from the "
                f"image's '{image.header.frame_id}'; outputs keep the image's",
                timestamp,
            )
        return info

    def _deserialize(self, raw, conn, timestamp):
        try:
            return self.typestore.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:  # any failure to decode CDR means the bytes are damaged
            raise BagError(
                f"message on {conn.topic} at log time {timestamp} ns cannot be deserialized as "
                f"{conn.msgtype}: {type(exc).__name__}: {exc}"
            ) from None

    def _add_frame(self, msg, timestamp, info):
        self.stats["frames"] += 1
        try:
            rgb = conversions.decode_image(msg)
        except conversions.ImageDecodeError as exc:  # like the node: skip the frame, say why
            self.stats["rejected"] += 1
            self.problems.setdefault(f"rejected: {exc}", timestamp)
            return
        if self._frames and self._frames[0].rgb.shape != rgb.shape:  # a batch holds one image size
            self._flush()
        self._frames.append(_Frame(timestamp, msg.header, rgb, info))

    def _flush(self):
        from .core import ImageSizeError  # loaded with the estimator (torch)

        if self._frames:
            try:
                result = self.estimator.predict(np.stack([f.rgb for f in self._frames]))
            except ImageSizeError as exc:  # e.g. preprocessing 'crop' on a camera not 640x480
                raise BagError(
                    f"frames of {self._frames[0].rgb.shape[1]}x{self._frames[0].rgb.shape[0]} "
                    f"cannot be processed with this configuration: {exc}"
                ) from None
            for i, frame in enumerate(self._frames):
                self._add_outputs(frame, result, i)
            self._frames = []
        # Log-time order in the output file; outputs follow their image (stable sort).
        self._waiting.sort(key=lambda item: item[1])
        for conn, timestamp, raw in self._waiting:
            self._writer.write(conn, timestamp, raw)
        self._waiting, self._waiting_bytes = [], 0

    def _add_outputs(self, frame, result, index):
        out = conversions.frame_outputs(
            frame.rgb, result, index, frame.info, self.settings.cloud_stride
        )
        types = self.typestore.types
        msgs = [("depth", types[IMAGE](header=frame.header, **_arrays(out.depth)))]
        self.stats["depth"] += 1
        if out.cloud is not None:
            point_field = types["sensor_msgs/msg/PointField"]
            fields = [
                point_field(name=n, offset=o, datatype=d, count=c)
                for n, o, d, c in out.cloud["fields"]
            ]
            roi = types["sensor_msgs/msg/RegionOfInterest"](**out.camera_info["roi"])
            msgs.append(
                (
                    "camera_info",
                    types[CAMERA_INFO](
                        header=frame.header, **{**_arrays(out.camera_info), "roi": roi}
                    ),
                )
            )
            if out.distorted:
                self.problems.setdefault(
                    "camera_info has non-zero distortion D: the point clouds assume "
                    "a rectified image (image_rect)",
                    frame.timestamp,
                )
            msgs.append(
                (
                    "points",
                    types["sensor_msgs/msg/PointCloud2"](
                        header=frame.header, **{**_arrays(out.cloud), "fields": fields}
                    ),
                )
            )
            self.stats["clouds"] += 1
        else:
            self.problems.setdefault(f"no point cloud: {out.problem}", frame.timestamp)
        for name, msg in msgs:
            if name not in self._new:
                self._new[name] = self._writer.add_connection(
                    self._outputs[name], msg.__msgtype__, typestore=self.typestore
                )
            conn = self._new[name]
            self._waiting.append(
                (conn, frame.timestamp, self.typestore.serialize_cdr(msg, conn.msgtype))
            )


def _arrays(fields: dict) -> dict:
    """rosbags messages hold arrays where rclpy messages take bytes."""
    return {
        k: np.frombuffer(v, np.uint8) if isinstance(v, bytes) else v for k, v in fields.items()
    }


def process(args) -> dict:
    in_path, out_path = Path(args.input), Path(args.output)
    if out_path.resolve() == in_path.resolve():
        raise BagError("OUT must differ from IN: the input bag is never modified")
    if out_path.exists() and not args.overwrite:
        raise BagError(f"{out_path} exists; pass --overwrite to replace it")
    params = load_params(
        args.params, args.preset or (), {"device": args.device} if args.device else {}
    )
    config = DepthClipConfig.from_params(params)
    settings = OutputSettings.from_params(params)
    reader = open_bag(in_path)
    try:
        msgtype, info_topic, outputs = _check_topics(
            reader, in_path, args.image_topic, args.camera_info_topic
        )
        storage = args.storage or storage_of(in_path)
        from .core import DepthClip  # after the cheap checks: loading the model takes seconds

        estimator = DepthClip(config)
        processor = BagProcessor(
            estimator, settings, get_typestore(Stores.ROS2_KILTED), args.batch_size
        )
        total = sum(c.msgcount for c in reader.connections if c.topic == args.image_topic)
        from tqdm import tqdm

        started = time.monotonic()
        with (
            atomic_directory(out_path, overwrite=args.overwrite) as staging,
            tqdm(total=total, unit="frame", desc="depth", disable=args.quiet) as bar,
        ):
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            with Writer(staging, version=OUTPUT_BAG_VERSION, storage_plugin=plugin) as writer:
                stats = processor.run(
                    reader, writer, in_path, args.image_topic, info_topic, outputs, bar
                )
    finally:
        reader.close()
    stats.update(
        seconds=round(time.monotonic() - started, 3),
        storage=storage,
        image_type=msgtype,
        camera_info_topic=info_topic,
        outputs=outputs,
        device=str(estimator.device),
        model=estimator.model_identity,
    )
    for problem, timestamp in processor.problems.items():
        print(f"warning: {problem} (first at log time {timestamp} ns)", file=sys.stderr)
    return stats


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthclip-bag", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="topics, types and counts of a bag; image topics marked")
    p_info.add_argument("bag")
    p = sub.add_parser(
        "process", help="copy IN to OUT, adding depth, depth/camera_info and points"
    )
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument(
        "--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic"
    )
    p.add_argument(
        "--camera-info-topic", help="default: camera_info beside the image topic, if recorded"
    )
    p.add_argument(
        "--params", help="parameter YAML (default: the package's config/depthclip.yaml)"
    )
    p.add_argument(
        "--preset", action="append", help="config/presets/ name or YAML, applied in order"
    )
    p.add_argument("--storage", choices=STORAGES, help="output storage (default: the input's)")
    p.add_argument("--batch-size", type=int, default=1, help="frames per forward pass")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the parameter file's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _terminate(signum, frame):  # SIGTERM unwinds like Ctrl-C, so the partial output is removed
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "info":
            info(Path(args.bag))
            return 0
        if args.batch_size < 1:
            raise BagError(f"--batch-size must be >= 1, got {args.batch_size}")
        stats = process(args)
    except (BagError, ConfigError, ModelLoadError) as exc:
        print(f"depthclip-bag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("depthclip-bag: interrupted; no output written", file=sys.stderr)
        return 130
    print(
        f"wrote {args.output} ({stats['storage']}): {stats['depth']} depth images on "
        f"{stats['outputs']['depth']}, {stats['clouds']} clouds on {stats['outputs']['points']}, "
        f"{stats['rejected']} frames rejected, {stats['info_fallbacks']} without a camera_info "
        f"of their stamp, {stats['copied']} input messages copied, "
        f"{stats['seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
