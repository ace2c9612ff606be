"""A user's recording as evaluation frames (`depthclip-eval --bag`): each colour image of a bag
paired with the depth image registered to it (a depth camera's depth aligned to the colour
camera, e.g. a RealSense's `aligned_depth_to_color/image_raw`), the depth as truth. Read with
the bag tool's reader, decoded as the node decodes its inputs and metric_scale its depth images;
the frames are scored whole (no NYU crop), in the camera's own size.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_typestore

from depthclip_ros.bag.reading import (
    CAMERA_INFO,
    COMPRESSED,
    CORRUPTION_ERRORS,
    IMAGE,
    open_bag,
    read_messages,
)
from depthclip_ros.errors import DepthClipError
from depthclip_ros.messages import topics
from depthclip_ros.messages.decoding import decode_image
from depthclip_ros.messages.range_data import DEPTH_IMAGE_UNITS, depth_image_metres
from depthclip_ros.runtime.stamp_pairing import serialized_stamp_ns, stamp_ns

from .data import DataError, Dataset, Sample

PAIR_SLOP = 0.02  # s: a depth image pairs with the colour image nearest its stamp within this
NYU_SIZE = (640, 480)  # (width, height) NYU's protocol scores


def open_bag_frames(
    path,
    image_topic: str,
    depth_topic: str,
    camera_info_topic=None,
    every: int = 1,
    nyu_protocol: bool = False,
) -> Dataset:
    """Every `every`-th image of `image_topic` that a depth image of `depth_topic` pairs with
    (stamps within PAIR_SLOP), its camera's K from `camera_info_topic` (default: beside the
    image), scored whole or (`nyu_protocol`) within NYU's eval crop, its frames then 640x480;
    DataError (or the bag tool's BagError) on a missing topic, an unregistered depth or no
    pair."""
    if every < 1:
        raise DataError(f"--every must be >= 1, got {every}")
    path = Path(path)
    info_topic = camera_info_topic or topics.beside(image_topic, "camera_info")
    reader = open_bag(path)
    kinds = {c.topic: c.msgtype for c in reader.connections}
    for topic, wanted in (
        (image_topic, (IMAGE, COMPRESSED)),
        (depth_topic, (IMAGE,)),
        (info_topic, (CAMERA_INFO,)),
    ):
        if kinds.get(topic) not in wanted:
            reader.close()
            what = f"is {kinds[topic]}, not {' or '.join(wanted)}" if topic in kinds else None
            raise DataError(f"bag {path}: {topic} {what or 'is not recorded'}")
    frames = _BagFrames(reader, path, image_topic, depth_topic, info_topic)
    size = frames.sizes.get(image_topic)
    if nyu_protocol and size not in (None, NYU_SIZE):
        raise DataError(
            f"bag {path}: {image_topic} is {size[0]}x{size[1]}: the NYU protocol scores "
            f"{NYU_SIZE[0]}x{NYU_SIZE[1]} frames (--protocol camera scores any size)"
        )
    samples = frames.pairs(every)
    if not samples:
        raise DataError(
            f"bag {path}: no {depth_topic} message within {PAIR_SLOP} s of an {image_topic} one"
        )
    label = f"bag:{path} {image_topic} {depth_topic}"
    return Dataset(samples, frames.load, [], label, crop=nyu_protocol, k=frames.k)


class _BagFrames:
    """The bag's image and depth messages indexed by stamp on opening; each pair read again by
    its log times when it is scored (a minute of frames is not held in memory)."""

    def __init__(self, reader, path: Path, image_topic, depth_topic, info_topic):
        self.reader, self.path, self.lock = reader, path, threading.Lock()
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.connections = {c.topic: c for c in reader.connections}
        self.image_topic, self.depth_topic = image_topic, depth_topic
        self.stamps = {image_topic: [], depth_topic: []}  # (stamp ns, log time ns)
        self.k, self.sizes = None, {}
        wanted = [self.connections[t] for t in (image_topic, depth_topic, info_topic)]
        for connection, log_time, raw in read_messages(reader, path, wanted):
            # Once the colour image's size is known its stamp is all an image adds: read from
            # the bytes, as the node reads an arriving image's, not deserialized (a megabyte).
            if connection.topic == image_topic and image_topic in self.sizes:
                stamp = serialized_stamp_ns(raw)
                if stamp is not None:
                    self.stamps[image_topic].append((stamp, log_time))
                    continue
            msg = self.typestore.deserialize_cdr(raw, connection.msgtype)
            stamp = stamp_ns(msg.header.stamp)
            if connection.topic == info_topic:
                if self.k is None and float(msg.k[0]) > 0:
                    self.k = np.asarray(msg.k, np.float64).reshape(3, 3)
            else:
                self.stamps[connection.topic].append((stamp, log_time))
                if hasattr(msg, "width"):  # a CompressedImage says its size when decoded
                    self.sizes.setdefault(connection.topic, (msg.width, msg.height))
                if connection.topic == depth_topic and msg.encoding not in DEPTH_IMAGE_UNITS:
                    raise DataError(
                        f"bag {path}: {depth_topic} is {msg.encoding}, not a depth image "
                        f"({', '.join(DEPTH_IMAGE_UNITS)})"
                    )
        if self.k is None:
            raise DataError(f"bag {path}: no {info_topic} with a camera matrix K")
        image, depth = (self.sizes.get(t) for t in (image_topic, depth_topic))
        if image and depth and image != depth:
            raise self._unregistered(depth, image)

    def _unregistered(self, depth, image) -> DataError:
        return DataError(
            f"bag {self.path}: {self.depth_topic} is {depth[0]}x{depth[1]}, "
            f"{self.image_topic} {image[0]}x{image[1]}: the depth must be registered to the "
            "colour camera (a depth camera's aligned_depth_to_color)"
        )

    def pairs(self, every: int) -> list:
        depth = sorted(self.stamps[self.depth_topic])
        depth_stamps = np.array([stamp for stamp, _ in depth], np.int64)
        samples = []
        for stamp, log_time in self.stamps[self.image_topic][::every]:
            if not len(depth_stamps):
                break
            i = int(np.searchsorted(depth_stamps, stamp))
            near = min(
                (j for j in (i - 1, i) if 0 <= j < len(depth)),
                key=lambda j: abs(depth_stamps[j] - stamp),
            )
            if abs(depth_stamps[near] - stamp) <= PAIR_SLOP * 1e9:
                name = f"{stamp // 10**9}.{stamp % 10**9:09d}"
                samples.append(
                    Sample(name, self.image_topic, log_times=(log_time, depth[near][1]))
                )
        return samples

    def _message(self, topic: str, log_time: int):
        connections = [self.connections[topic]]
        with self.lock:  # one reader for the evaluation's decoding threads
            try:
                for connection, _, raw in self.reader.messages(
                    connections, start=log_time, stop=log_time + 1
                ):
                    return self.typestore.deserialize_cdr(raw, connection.msgtype)
            except CORRUPTION_ERRORS as exc:
                raise DataError(f"bag {self.path} at {log_time} ns: {exc}") from None
        raise DataError(f"bag {self.path}: {topic} at log time {log_time} ns is gone")

    def load(self, sample: Sample):
        """(rgb uint8, depth uint16 millimetres: 0 where none) of one pair, as NYU's are."""
        image = self._message(self.image_topic, sample.log_times[0])
        depth = self._message(self.depth_topic, sample.log_times[1])
        try:
            rgb = decode_image(image)
            metres = depth_image_metres(depth)
        except (DepthClipError, ValueError) as exc:
            raise DataError(f"bag {self.path} at {sample.name} s: {exc}") from None
        if metres.shape != rgb.shape[:2]:
            raise self._unregistered(metres.shape[::-1], rgb.shape[1::-1])
        valid = np.isfinite(metres) & (metres > 0)
        millimetres = np.where(valid, np.round(metres * 1000.0), 0.0)
        return rgb, np.clip(millimetres, 0, 65535).astype(np.uint16)
