"""Processing a recorded bag: a copy of it with the depth outputs of one image topic added.

Frames go through the same DepthClip core and the same message builder as the live node. Output
is written to a staging folder and moved into place only when complete. No rclpy.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from .bag_files import (
    CAMERA_INFO,
    BagError,
    check_topics,
    open_bag,
    read_messages,
    storage_of,
)
from .config import DepthClipConfig, OutputSettings
from .files import atomic_directory
from .frame_messages import MessageBuilder, frame_outputs
from .image_decoding import ImageDecodeError, decode_image
from .stamp_pairing import stamp_key

STORAGES = ("mcap", "sqlite3")
# rosbag2 metadata version of OUT: 8 writes offered_qos_profiles as a YAML string, the form
# Humble's rosbag2 parses (version 9 writes a list, which Humble refuses); Iron and later read 8.
OUTPUT_BAG_VERSION = 8
# Flush a batch early once this many bytes of other messages wait behind it (bounded memory).
MAX_BUFFERED_BYTES = 64 << 20


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
        self.builder = MessageBuilder.from_typestore(typestore)
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
        for conn, timestamp, raw in read_messages(reader, in_path):
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
        for conn, timestamp, raw in read_messages(reader, in_path, connections):
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
            rgb = decode_image(msg)
        except ImageDecodeError as exc:  # like the node: skip the frame, say why
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
        out = frame_outputs(frame.rgb, result, index, frame.info, self.settings.cloud_stride)
        messages = self.builder.messages(frame.header, out)
        self.stats["depth"] += 1
        if "points" in messages:
            self.stats["clouds"] += 1
            if out.distorted:
                self.problems.setdefault(
                    "camera_info has non-zero distortion D: the point clouds assume "
                    "a rectified image (image_rect)",
                    frame.timestamp,
                )
        else:
            self.problems.setdefault(f"no point cloud: {out.problem}", frame.timestamp)
        for name, msg in messages.items():
            if name not in self._new:
                self._new[name] = self._writer.add_connection(
                    self._outputs[name], msg.__msgtype__, typestore=self.typestore
                )
            conn = self._new[name]
            self._waiting.append(
                (conn, frame.timestamp, self.typestore.serialize_cdr(msg, conn.msgtype))
            )


def process_bag(
    in_path: Path,
    out_path: Path,
    image_topic: str,
    config: DepthClipConfig,
    settings: OutputSettings,
    *,
    camera_info_topic: str | None = None,
    storage: str | None = None,
    batch_size: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write OUT: every message of IN plus depth, depth/camera_info and points beside
    `image_topic`. Returns the run's statistics, `problems` ({warning: first log time}) included.
    BagError on a bag or topic problem; nothing is left at OUT unless the whole run succeeds."""
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.resolve() == in_path.resolve():
        raise BagError("OUT must differ from IN: the input bag is never modified")
    if out_path.exists() and not overwrite:
        raise BagError(f"{out_path} exists; pass --overwrite to replace it")
    if batch_size < 1:
        raise BagError(f"--batch-size must be >= 1, got {batch_size}")
    if storage is not None and storage not in STORAGES:
        raise BagError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    reader = open_bag(in_path)
    try:
        msgtype, info_topic, outputs = check_topics(
            reader, in_path, image_topic, camera_info_topic
        )
        storage = storage or storage_of(in_path)
        from .core import DepthClip  # after the cheap checks: loading the model takes seconds

        estimator = DepthClip(config)
        processor = BagProcessor(
            estimator, settings, get_typestore(Stores.ROS2_KILTED), batch_size
        )
        total = sum(c.msgcount for c in reader.connections if c.topic == image_topic)
        from tqdm import tqdm

        started = time.monotonic()
        with (
            atomic_directory(out_path, overwrite=overwrite) as staging,
            tqdm(total=total, unit="frame", desc="depth", disable=not progress) as bar,
        ):
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            with Writer(staging, version=OUTPUT_BAG_VERSION, storage_plugin=plugin) as writer:
                stats = processor.run(
                    reader, writer, in_path, image_topic, info_topic, outputs, bar
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
        problems=dict(processor.problems),
    )
    return stats
