"""Pairs each image with the camera_info of the same header stamp, as image_transport's
CameraSubscriber and depth_image_proc do (exact time). Drivers publish the image first and its
camera_info right after, so the camera_info may arrive later than its image: a lookup waits for
it, up to a deadline. No rclpy; thread-safe (the executor adds, the worker looks up).
"""

from __future__ import annotations

import collections
import threading
import time


def stamp_key(stamp) -> tuple:
    """A builtin_interfaces/Time (rclpy or rosbags) as a hashable (sec, nanosec)."""
    return int(stamp.sec), int(stamp.nanosec)


class StampPairing:
    """The `keep` most recent camera_infos by stamp."""

    def __init__(self, keep: int = 10):
        self._by_stamp: collections.OrderedDict = collections.OrderedDict()
        self._keep = keep
        self._latest = None
        self._cv = threading.Condition()

    def add(self, info) -> None:
        with self._cv:
            key = stamp_key(info.header.stamp)
            self._by_stamp.pop(key, None)
            self._by_stamp[key] = info
            while len(self._by_stamp) > self._keep:
                self._by_stamp.popitem(last=False)
            self._latest = info
            self._cv.notify_all()

    @property
    def latest(self):
        with self._cv:
            return self._latest

    def lookup(self, stamp, deadline: float, expected: bool = True) -> tuple:
        """(camera_info, exact) for an image stamp: the one with that stamp, waiting until
        `deadline` (time.monotonic()) for it; else the latest (exact False), or (None, False).

        `expected`: whether a camera_info can come at all (a publisher exists); without one, and
        with none received yet, there is nothing to wait for.
        """
        key = stamp_key(stamp)
        with self._cv:
            while key not in self._by_stamp and (expected or self._latest is not None):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            if key in self._by_stamp:
                return self._by_stamp[key], True
            return self._latest, False
