"""Which camera_info goes with an image: the rule the node and the bag tool share.

1. The camera_info whose header stamp is nearest the image's, within `camera_info_slop` seconds
   (message_filters' ApproximateTime idea with one rule: nearest wins; 0 = exact stamps only,
   as image_transport's CameraSubscriber).
2. Else the latest camera_info describing an image of the same size (binning and ROI applied),
   counted as a fallback: a driver that publishes camera_info at a lower rate than its images.

Drivers publish the image first and its camera_info right after, so the node lets a frame wait
for its camera_info (`CameraInfoPairing.wait`) without holding the model: the depth goes out at
once and only the cloud waits. No rclpy; thread-safe (the executor adds, the worker looks up).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import struct
import threading
from typing import NamedTuple

from ..messages.camera_model import PinholeCamera


def stamp_ns(stamp) -> int:
    """A builtin_interfaces/Time (rclpy or rosbags) in integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def serialized_stamp_ns(serialized: bytes) -> int | None:
    """The header stamp (ns) of a serialized message that begins with a std_msgs/Header (an
    Image, a CompressedImage), read without deserializing it: after CDR's 4-byte encapsulation
    header (its second byte 1: little endian), sec (int32) and nanosec (uint32). None where the
    bytes are too short or not CDR."""
    if len(serialized) < 12 or serialized[0] != 0 or serialized[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from("<iI" if serialized[1] else ">iI", serialized, 4)
    return sec * 1_000_000_000 + nanosec


def described_size(info) -> tuple | None:
    """(width, height) of the image a camera_info describes, or None when it leaves it unset."""
    camera = PinholeCamera.from_camera_info(info)
    return (camera.width, camera.height) if camera.width > 0 and camera.height > 0 else None


class PairingWarnings(NamedTuple):
    """What a cloud made with a camera_info warns about (None: nothing), node and bag tool."""

    fallback: str | None  # not the image's own camera_info: the latest one of its size
    frame_id: str | None  # a camera_info of another frame


def pairing_warnings(image_header, info, exact: bool) -> PairingWarnings:
    """The warnings of the cloud of the image of `image_header` made with `info` (None: no
    cloud), `exact` when `info` is the one of the image's stamp (rule 1)."""
    if info is None:
        return PairingWarnings(None, None)
    fallback = (
        None
        if exact
        else "no camera_info with the image's stamp: used the latest one of the image's size"
    )
    frame_id = (
        None
        if info.header.frame_id == image_header.frame_id
        else f"camera_info frame_id '{info.header.frame_id}' differs from the image's "
        f"'{image_header.frame_id}'; outputs keep the image's"
    )
    return PairingWarnings(fallback, frame_id)


class StampIndex:
    """Values by their message's header stamp, the `keep` newest arrivals (or all) and, with
    `seconds`, only those stamped within that many seconds before the newest arrival's: the
    nearest to a stamp within a slop (camera_infos here, metric_scale's range data). Not
    locked.

    `value` is what a lookup returns: the message itself by default (the bag tool keeps the raw
    bytes and deserializes only the camera_info it uses).
    """

    def __init__(self, keep: int | None = None, seconds: float | None = None):
        self._keep = keep
        self._span = None if seconds is None else int(seconds * 1e9)
        self._stamps = []  # sorted stamps (ns)
        self._by_stamp = {}  # stamp (ns) -> value
        self._order = collections.deque()  # stamps in arrival order, to forget the oldest

    def add(self, msg, value=None) -> None:
        value = msg if value is None else value
        key = stamp_ns(msg.header.stamp)
        if key not in self._by_stamp:
            bisect.insort(self._stamps, key)
            self._order.append(key)
        self._by_stamp[key] = value
        while self._order and (
            (self._keep is not None and len(self._order) > self._keep)
            or (self._span is not None and self._order[0] < key - self._span)
        ):
            old = self._order.popleft()
            del self._by_stamp[old]
            del self._stamps[bisect.bisect_left(self._stamps, old)]

    def nearest(self, stamp, slop: float):
        """The value whose stamp is nearest `stamp`, if within `slop` seconds; else None."""
        key = stamp_ns(stamp)
        best = self._nearest_key(key)
        return self._by_stamp[best] if best is not None and abs(best - key) <= slop * 1e9 else None

    def newest_stamp(self) -> int | None:
        """The latest stamp (ns) held; None when empty."""
        return self._stamps[-1] if self._stamps else None

    def nearest_value(self, key: int):
        """The value whose stamp is nearest `key` (ns), however far; None when empty."""
        best = self._nearest_key(key)
        return None if best is None else self._by_stamp[best]

    def _nearest_key(self, key: int) -> int | None:
        i = bisect.bisect_left(self._stamps, key)
        near = self._stamps[max(i - 1, 0) : i + 1]
        return min(near, key=lambda s: abs(s - key)) if near else None


class CameraInfoIndex(StampIndex):
    """camera_infos by stamp (StampIndex) and the latest one of each image size."""

    def __init__(self, keep: int | None = None, seconds: float | None = None):
        super().__init__(keep, seconds)
        self._latest_by_size = {}  # (width, height) or None -> value

    def add(self, info, value=None) -> None:
        super().add(info, value)
        value = info if value is None else value
        size = described_size(info)
        self._latest_by_size.pop(size, None)  # newest last: insertion order
        self._latest_by_size[size] = value

    def latest_for(self, size: tuple):
        """The newest camera_info of an image of `size` (width, height), or of an unset size."""
        for key in reversed(self._latest_by_size):
            if key is None or key == tuple(size):
                return self._latest_by_size[key]
        return None

    @property
    def latest(self):
        return next(reversed(self._latest_by_size.values()), None)


# The node keeps the camera_infos of the last INFO_SECONDS of stamps (at most INFOS_KEPT): a
# frame's stamp is as old as the model's time when its cloud is made, and a count alone (30
# was 1 s of a 30 Hz camera) left every cloud of a model slower than that without its own.
INFO_SECONDS = 10.0
INFOS_KEPT = 1000


class CameraInfoPairing:
    """The node's side: the newest camera_infos, and frames waiting for theirs.

    `wait(stamp, size, frame)` parks a frame and returns a ticket (none when its camera_info
    is already here); `add(info, kept)` returns the waiting frames it pairs (each at most
    once); `give_up(ticket)` returns the frame with the fallback camera_info if nothing paired
    it in time, else None.

    What is kept of each camera_info is `kept` (by default the message itself); `decode` turns
    it back into the message where one is looked up. The node keeps the serialized bytes, as
    the bag tool does: ten seconds of messages, each several small allocations made between
    the frames' large buffers, left the heap unable to reuse those buffers, and a node under a
    100 Hz camera grew by 0.8 GB (bench/results/performance.md, "Memory").
    """

    def __init__(
        self,
        slop: float = 0.0,
        keep: int = INFOS_KEPT,
        seconds: float = INFO_SECONDS,
        max_waiting: int = 16,
        decode=None,
    ):
        self.slop = slop
        self._decode = decode
        self._infos = CameraInfoIndex(keep, seconds)
        self._waiting = collections.OrderedDict()  # ticket -> (stamp, size, frame)
        self._max_waiting = max_waiting
        self._tickets = itertools.count()
        self._lock = threading.Lock()

    def add(self, info, kept=None) -> list:
        """Keep `kept` (default: `info`) for camera_info `info`; [(frame, info)] of the waiting
        frames it pairs with."""
        kept = info if kept is None else kept
        with self._lock:
            self._infos.add(info, kept)
            paired = []
            for ticket, (stamp, _, frame) in list(self._waiting.items()):
                if self._infos.nearest(stamp, self.slop) is kept:
                    del self._waiting[ticket]
                    paired.append((frame, info))
            return paired

    def _message(self, kept):
        return kept if kept is None or self._decode is None else self._decode(kept)

    def find(self, stamp):
        """The camera_info of this stamp (within the slop), or None."""
        with self._lock:
            kept = self._infos.nearest(stamp, self.slop)
        return self._message(kept)

    def fallback(self, size):
        """The latest camera_info of an image of this size, or None."""
        with self._lock:
            kept = self._infos.latest_for(size)
        return self._message(kept)

    @property
    def latest(self):
        with self._lock:
            kept = self._infos.latest
        return self._message(kept)

    def wait(self, stamp, size, frame) -> tuple:
        """Park `frame` until its camera_info comes: (ticket, [(frame, info, exact)] to publish
        now). Those are the oldest frames given up to stay within `max_waiting`, with the
        fallback; or `frame` itself, with no ticket, when its camera_info was added since the
        caller's `find` (the executor adds while the worker looks up)."""
        with self._lock:
            kept = self._infos.nearest(stamp, self.slop)
            if kept is not None:
                return None, [(frame, self._message(kept), True)]
            ticket = next(self._tickets)
            self._waiting[ticket] = (stamp, tuple(size), frame)
            ready = []
            while len(self._waiting) > self._max_waiting:
                _, (_, old_size, old) = self._waiting.popitem(last=False)
                ready.append((old, self._message(self._infos.latest_for(old_size)), False))
            return ticket, ready

    def give_up(self, ticket):
        """(frame, fallback info or None) when the frame still waits, else None (it was paired,
        or given up already)."""
        with self._lock:
            waiting = self._waiting.pop(ticket, None)
            if waiting is None:
                return None
            _, size, frame = waiting
            return frame, self._message(self._infos.latest_for(size))

    def give_up_all(self) -> list:
        with self._lock:
            items = [
                (f, self._message(self._infos.latest_for(s))) for _, s, f in self._waiting.values()
            ]
            self._waiting.clear()
            return items
