"""metric_scale's range inputs of the node: `scan` (sensor_msgs/LaserScan), `anchors/points`
(PointCloud2) and `anchors/depth` (a depth Image registered to the camera; with named cameras
each camera's own `NAME/anchors/depth`), subscribed only while metric_scale is on and lists
them; one scan and one cloud serve every camera. What they receive goes
to a RangeSources (the rule the bag tool shares). Where tf2_ros imports, /tf and /tf_static are
heard while any of them is: tf2 joins the frames static_transforms does not, with the
parameter's transforms."""

from __future__ import annotations

import functools

from sensor_msgs.msg import Image, LaserScan, PointCloud2

from ..messages import topics
from ..metric_scale.range_sources import RangeSources
from ..runtime.stamp_pairing import serialized_stamp_ns, stamp_ns
from . import tf_frames
from .adaptive_input import AdaptiveInput

TYPES = {"scan": LaserScan, "points": PointCloud2, "depth": Image}
# Registered to one camera (its pixels are that camera's): a named camera has its own topic.
PER_CAMERA = {"depth"}


class RangeInputs:
    def __init__(self, node):
        self.node = node
        self.sources = RangeSources()
        self._inputs = {}  # (source, camera name or None: every camera's) -> AdaptiveInput

    def update(self, settings) -> None:
        """Subscribe to the sources metric_scale uses now, close the others; follow their
        publishers' reliability (a lidar driver's is best effort)."""
        wanted = set(settings.metric_scale_sources) if settings.metric_scale != "off" else set()
        subscribed = wanted & topics.RANGE_INPUTS.keys()  # the ground needs no topic
        for key in list(self._inputs):
            if key[0] not in wanted:
                self._inputs.pop(key).close()
        if not subscribed:
            self.sources.forget_expected()
        if subscribed and tf_frames.available():
            frames = self.sources.frames
            given = frames.given_frames if frames is not None else set()
            if given and given - settings.transforms().frames():
                # tf2 keeps what it was given: a frame taken out of the parameter goes with
                # a new buffer (its listener hears /tf_static again: latched).
                self._close_frames()
            if self.sources.frames is None:
                self.sources.frames = tf_frames.TfFrames(self.node)
        else:
            self._close_frames()
        named = [camera for camera in self.node.cameras if camera]
        for name in sorted(subscribed):
            for camera in named if name in PER_CAMERA and named else [None]:
                if (name, camera) not in self._inputs:
                    topic = topics.RANGE_INPUTS[name]
                    topic = f"{camera}/{topic}" if camera else topic
                    received = functools.partial(self._received, name, camera)
                    self._inputs[name, camera] = AdaptiveInput(
                        self.node, TYPES[name], topic, received, 10
                    )
                self._inputs[name, camera].update()

    def arrival_clock(self) -> float:
        """The arrival clock (the node's: ROS time, the bag's log time under `--clock`)."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _received(self, name: str, camera, msg) -> None:
        self.sources.add(name, msg, camera=camera, arrival=self.arrival_clock())

    def image_arrived(self, camera: str, serialized: bytes, replaced: bool) -> None:
        """Camera `camera`'s image (serialized) has arrived, `replaced`: in place of its frame
        still pending. While a range source is subscribed, its messages are decided for the
        frame and held until it is calibrated (RangeSources.expect)."""
        params = self.node.params
        if not self._inputs or params is None:
            return
        stamp = serialized_stamp_ns(serialized)
        if stamp is not None:  # else not an image: its frame fails to decode
            slop = params.outputs.metric_scale_slop
            self.sources.expect(camera, stamp, replaced, arrival=self.arrival_clock(), slop=slop)

    def wait_for_anchors(self, camera: str, header, settings) -> None:
        """The frame's range messages decided (RangeSources.wait): the depth waits at most
        metric_scale_slop after its image arrived."""
        names = [name for name in settings.metric_scale_sources if name in TYPES]
        self.sources.wait(camera, stamp_ns(header.stamp), names, self.arrival_clock)

    def transforms_words(self) -> str:
        """Where the frames come from, in diagnostics' words."""
        if self.sources.frames is not None:
            return f"static_transforms, then {self.sources.frames.words()}"
        if tf_frames.available():
            return "static_transforms (tf2 heard while a scan, points or depth source is on)"
        return "static_transforms only (tf2_ros not installed)"

    def close(self) -> None:
        for subscription in self._inputs.values():
            subscription.close()
        self._inputs = {}
        self.sources.forget_expected()
        self._close_frames()

    def _close_frames(self) -> None:
        if self.sources.frames is not None:
            self.sources.frames.close()
            self.sources.frames = None
