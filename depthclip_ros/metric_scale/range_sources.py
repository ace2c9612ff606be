"""The range data a frame is fitted to, collected alike by the node (from its subscriptions)
and by depthclip-bag and depthclip-fleet (from the bag, in log order): each source's recent
messages by stamp; for a frame, those nearest its stamp within metric_scale_slop, read as
points and moved into the frame's optical frame (the image's frame_id) by the static
transforms, or by tf2's frames where the node has them (a depth image registered to the camera
back-projected through the image's K), and the floor's points for the source ground. NumPy
only.

One rule decides a frame's message of each source, from stamps and arrival order alone, so the
node (arrival: its clock when a message comes) and depthclip-bag (arrival: the log time) take
the same: the message nearest the image's stamp, within metric_scale_slop, of those that arrived
before the first of that source stamped at or after the image's, or before metric_scale_slop
after the image arrived, whichever comes first (a later message of a source whose stamps
increase is farther; a scan that comes later than that is not waited for). The node says when
each image arrives (`expect`); what decides each frame is held for it until its anchors are
taken, however many messages come after, so a model slower than KEEP messages of a source still
finds its frame's; `wait` lets the node wait for a frame's decision, at most until that
deadline; depthclip-bag reads on to it (`settled`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time

import numpy as np

from ..errors import AnchorError
from ..messages import range_data
from ..messages.camera_model import PinholeCamera
from ..runtime.stamp_pairing import StampIndex, stamp_ns
from ..transforms import StaticTransforms
from .anchors import depth_image_points, ground_points
from .transform_history import TransformHistory

KEEP = 20  # messages a source keeps (the newest arrivals): 2 s of a 10 Hz scan
# Frames of a camera expected at once: one in the model and one pending (more only for frames
# discarded unprocessed, which a later frame's anchors clear).
EXPECTED_PER_CAMERA = 8
# A registered depth image's pixels back-projected, or a point cloud's points read, at most
# about this many (a VGA depth image has 300,000, a 128-beam lidar's cloud 131,072: reading,
# moving and projecting them all took tens of ms a frame on the worker; the fit counts each
# feature cell once, a few hundred of them).
RANGE_POINTS = 4096
SOURCES = ("scan", "points", "depth")  # the sources that are messages
# A frame waiting for its range data looks at the arrival clock this often (wall seconds; a
# message that decides it wakes it at once), and gives up this long past its deadline's time
# (a simulated clock that stopped).
WAIT_STEP = 0.005
WAIT_BEYOND = 1.0
# A scan's rays are moved through the fixed frame in this many groups of like times (of a 10 Hz
# sweep, 12.5 ms each: at 1 m/s and 1 rad/s, within 0.6 cm and 6 mrad of each ray's own time).
MOTION_SLICES = 8


class RangeSources:
    """Every source's recent messages, and the static transforms: those of the
    static_transforms parameter and any `add_transform`s (a bag's /tf_static); `moving`, a
    bag's /tf over time. `frames`, when set, looks up what those do not join: an object with
    `lookup(target, source, stamp, given)` (`given`: the parameter's transforms, to join with
    its own) returning a Transform or raising AnchorError (the node's tf2 buffer)."""

    def __init__(self):
        # (source, camera) -> its newest messages: camera None for data any camera may use (a
        # scan, a cloud, a bag's one depth topic), a camera's name for its own (the node's
        # depth image registered to that camera).
        self._messages = {(name, None): StampIndex(KEEP) for name in SOURCES}
        self.received = dict.fromkeys(SOURCES, 0)  # messages added, by source
        # The node's executor adds, its worker reads (and waits for a frame's decision).
        self._lock = threading.Condition()
        self._heard = StaticTransforms()  # a bag's /tf_static
        self._parsed = (None, None, None)  # static_transforms texts and their _transforms
        self.moving = TransformHistory()  # a bag's /tf (the node's tf2 hears its own)
        self.frames = None
        self.motion = {}  # camera -> how its last frame's anchors were moved, in words
        # camera -> {image stamp (ns): its _Expected}, in arrival order (the last: the
        # camera's newest frame, pending until the model takes it).
        self._expected = {}

    def add(self, name: str, msg, camera=None, arrival: float | None = None) -> None:
        """A message of source `name` (one of SOURCES), for every camera or (`camera`) that
        camera's alone, arrived at `arrival` seconds (None: no deadline applies); a point cloud
        is read as it comes (ReadCloud): megabytes of a lidar's cloud, KEEP of them, are not
        held."""
        if name == "points":
            msg = ReadCloud.of(msg)
        with self._lock:
            self._messages.setdefault((name, camera), StampIndex(KEEP)).add(msg)
            self.received[name] += 1
            for owner, frames in self._expected.items():
                if _serves(camera, owner):
                    for stamp, frame in frames.items():
                        frame.take(name, msg, stamp, arrival)
            self._lock.notify_all()

    def expect(
        self,
        camera,
        stamp: int,
        replaced: bool = False,
        arrival: float | None = None,
        slop: float | None = None,
    ) -> None:
        """The image of `camera` stamped `stamp` (ns) arrived at `arrival` seconds (its
        messages then decided within `slop` seconds of it; None: by stamps alone); `replaced`:
        it took the place of that camera's previous frame, which will not be processed."""
        with self._lock:
            frames = self._expected.setdefault(camera, collections.OrderedDict())
            if replaced and frames:
                frames.popitem()  # the frame it replaced: the newest expected
            deadline = math.inf if arrival is None or slop is None else arrival + slop
            frame = _Expected(deadline)
            for (name, owner), index in self._messages.items():
                msg = index.nearest_value(stamp)
                if msg is not None and _serves(owner, camera):
                    _hold_nearer(frame.held, name, msg, stamp)
                    if index.newest_stamp() >= stamp:
                        frame.decided.add(name)
            frames[stamp] = frame
            while len(frames) > EXPECTED_PER_CAMERA:
                frames.popitem(last=False)

    def settled(self, camera, stamp: int, now: float) -> bool:
        """Whether nothing arriving after `now` (arrival seconds) can change the frame of
        `camera` stamped `stamp` (ns): its deadline passed, or it is not expected. (A bag's
        /tf logged by then is there for its lookups too.)"""
        with self._lock:
            frame = self._expected.get(camera, {}).get(stamp)
            return frame is None or now > frame.deadline

    def wait(self, camera, stamp: int, names, clock) -> None:
        """Wait until the frame's message of each source of `names` is decided (one stamped at
        or after the image's came: none later can be nearer), at most until its deadline
        on the arrival clock (`clock()`: its seconds; a simulated clock too), and never more
        than WAIT_BEYOND wall seconds past the time left then (a paused simulation)."""
        with self._lock:
            frame = self._expected.get(camera, {}).get(stamp)
            if frame is None or frame.deadline == math.inf:
                return
            left = frame.deadline - clock()
            give_up = time.monotonic() + max(left, 0.0) + WAIT_BEYOND
            while not set(names) <= frame.decided and left > 0 and time.monotonic() < give_up:
                self._lock.wait(timeout=min(left, WAIT_STEP))
                left = frame.deadline - clock()

    def forget_expected(self) -> None:
        """Frames no longer expected (metric_scale turned off, the inputs closed)."""
        with self._lock:
            self._expected = {}

    def add_transform(self, transform) -> None:
        self._heard.add(transform)
        self._parsed = (None, None, None)

    def anchors(self, header, info, size: tuple, settings, camera=None) -> tuple:
        """(points (N, 3) in the optical frame of the image of `header`, K (3, 3) of that
        image or None, [why a source gave nothing, one line each]); `info` is the image's
        camera_info, `size` its (height, width); `camera`: the one that `expect`ed it."""
        frame = self._held(camera, stamp_ns(header.stamp))
        problems, points = [], []
        k = None
        if info is not None:
            try:
                pinhole = PinholeCamera.from_camera_info(info).scaled_to(size[1], size[0])
                fx, fy, cx, cy = pinhole.intrinsics()
                k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            except ValueError as exc:
                problems.append(f"camera_info unusable: {exc}")
        for name in settings.metric_scale_sources:
            try:
                if name == "ground":
                    if k is not None:
                        height, pitch = settings.ground_height, settings.ground_pitch
                        points.append(ground_points(k, size, height, pitch))
                    continue
                msg = self._nearest(name, header.stamp, settings.metric_scale_slop, frame, camera)
                if msg is None:
                    problems.append(f"no {name} within {settings.metric_scale_slop:g} s")
                    continue
                own = _points(name, msg, k, size, header.frame_id)
                offsets = _offsets(name, msg)
                points.append(
                    self._into_camera(header, msg.header, own, offsets, settings, camera)
                )
            except AnchorError as exc:
                problems.append(str(exc))
        joined = np.concatenate(points) if points else np.zeros((0, 3))
        return joined, k, problems

    def _held(self, camera, stamp: int):
        """The _Expected of the frame of `camera` stamped `stamp` (None: not expected), no
        longer expected, nor are that camera's older frames (a camera's frames are taken in
        order)."""
        with self._lock:
            frames = self._expected.get(camera)
            if not frames:
                return None
            frame = frames.pop(stamp, None)
            for older in [s for s in frames if s < stamp]:
                del frames[older]
            return frame

    def _nearest(self, name: str, stamp, slop: float, frame, camera=None):
        """Source `name`'s message nearest `stamp` within `slop` seconds: the one the rule held
        for an expected `frame`; else of those it keeps for every camera and for `camera`."""
        if frame is not None:
            kept = [frame.held.get(name)]
        else:
            with self._lock:
                kept = [
                    self._messages[key].nearest(stamp, slop)
                    for key in {(name, None), (name, camera)}
                    if key in self._messages
                ]
        at = stamp_ns(stamp)
        near = [m for m in kept if m is not None]
        near = [m for m in near if abs(_ns(m) - at) <= slop * 1e9]
        return min(near, key=lambda m: abs(_ns(m) - at), default=None)

    def _into_camera(self, image, source, own, offsets, settings, camera) -> np.ndarray:
        """`own` (points of the message of header `source`, in its frame) in the optical frame
        of the image of header `image`, at the image's stamp: each point at its own time (the
        message's stamp plus `offsets`, seconds, where given: a scan's rays, a cloud's points)
        moved through metric_scale_fixed_frame (tf2's lookup_transform_full); where that frame
        is not set or not joined at those times (no odometry heard), the robot taken as still:
        the message's frame looked up at its stamp (said in `motion`, per camera)."""
        fixed = settings.metric_scale_fixed_frame
        if fixed:
            try:
                moved = self._through(fixed, image, source, own, offsets, settings)
                self.motion[camera] = f"moved through {fixed} at each point's time"
                return moved
            except AnchorError as exc:
                self.motion[camera] = f"robot taken as still: {exc}"
        else:
            self.motion[camera] = "robot taken as still (metric_scale_fixed_frame empty)"
        return self._lookup(image.frame_id, source.frame_id, source.stamp, settings).apply(own)

    def _through(self, fixed, image, source, own, offsets, settings) -> np.ndarray:
        """`own` moved to `fixed` at each point's time, then to the image's frame at its stamp;
        points of like times (MOTION_SLICES of the message's span) share one lookup."""
        to_camera = self._lookup(image.frame_id, fixed, image.stamp, settings, counted=False)
        if offsets is None or not len(own):
            sensor = self._lookup(fixed, source.frame_id, source.stamp, settings)
            return to_camera.apply(sensor.apply(own))
        start = stamp_ns(source.stamp)
        edges = np.linspace(offsets.min(), offsets.max(), MOTION_SLICES + 1)
        slices = np.clip(np.searchsorted(edges, offsets, side="right") - 1, 0, MOTION_SLICES - 1)
        moved = np.empty_like(own)
        for i in np.unique(slices):
            chosen = slices == i
            sec, nanosec = divmod(start + int(round(offsets[chosen].mean() * 1e9)), 10**9)
            at = type(source.stamp)(sec=sec, nanosec=nanosec)  # the message's own Time type
            sensor = self._lookup(fixed, source.frame_id, at, settings)
            moved[chosen] = to_camera.apply(sensor.apply(own[chosen]))
        return moved

    def _lookup(self, target: str, source: str, stamp, settings, counted=True):
        """The transform of frame `source` into `target` at `stamp`: the static transforms'
        chain first, then with the moving transforms at the stamp, else the frames' lookup
        given the static_transforms parameter's transforms too. A frame the parameter gives
        takes the parameter's parent and transform (the user's word over what is heard, as a
        frame has one parent in tf2). `counted`: in tf2's diagnostics (TfFrames.lookup)."""
        given, static = self._transforms(settings)
        try:
            return static.lookup(target, source)
        except AnchorError as exc:
            words = str(exc)
        if self.moving:
            moving, outside = self.moving.at(stamp)
            joined = StaticTransforms([*self._heard.all(), *moving, *given.all()])
            try:
                return joined.lookup(target, source)
            except AnchorError:
                more = [f"{len(outside) - 3} more /tf edges not at it"] if len(outside) > 3 else []
                words = "; ".join([words, *outside[:3], *more])
        frames = self.frames  # the node's executor may close them meanwhile
        if frames is not None:
            try:
                return frames.lookup(target, source, stamp, given.all(), counted)
            except AnchorError as exc:
                words = f"{words}; {exc}"
        raise AnchorError(words)

    def _transforms(self, settings) -> tuple:
        """(the static_transforms parameter's transforms, those and the heard /tf_static's
        joined, the parameter's on top), parsed once for each parameter value."""
        texts, given, joined = self._parsed
        if texts != settings.static_transforms:
            given = settings.transforms()
            joined = StaticTransforms([*self._heard.all(), *given.all()])
            self._parsed = (settings.static_transforms, given, joined)
        return given, joined


@dataclasses.dataclass
class _Expected:
    """A frame expected by its camera: its deadline (arrival seconds: nothing arriving later is
    taken for it), each source's message nearest its stamp so far, the sources decided (a
    message stamped at or after the frame's arrived: none later can be nearer)."""

    deadline: float
    held: dict = dataclasses.field(default_factory=dict)
    decided: set = dataclasses.field(default_factory=set)

    def take(self, name: str, msg, stamp: int, arrival: float | None) -> None:
        if name in self.decided or (arrival is not None and arrival > self.deadline):
            return
        _hold_nearer(self.held, name, msg, stamp)
        if _ns(msg) >= stamp:
            self.decided.add(name)


@dataclasses.dataclass(frozen=True)
class ReadCloud:
    """A PointCloud2 as its points are kept: its header and about RANGE_POINTS of its points
    (range_data.cloud_points), or the one line saying why it could not be read (said when a
    frame would have used it)."""

    header: object
    points: np.ndarray | None
    error: str = ""
    offsets: np.ndarray | None = None  # each point's seconds after the stamp, where it says

    @classmethod
    def of(cls, cloud) -> "ReadCloud":
        """Read as it arrives, on the node's executor: whatever the message holds, never an
        exception there (it would stop the executor)."""
        try:
            points, offsets = range_data.cloud_points(cloud, RANGE_POINTS, times=True)
            return cls(cloud.header, points, offsets=offsets)
        except AnchorError as exc:
            return cls(cloud.header, None, str(exc))
        except Exception as exc:  # a message no driver sends: its words, not the node's end
            return cls(cloud.header, None, f"a PointCloud2 not read: {type(exc).__name__}: {exc}")


def _serves(owner, camera) -> bool:
    """Whether messages kept for `owner` (None: every camera's) serve the frames of `camera`."""
    return owner is None or owner == camera


def _hold_nearer(held: dict, name: str, msg, stamp: int) -> None:
    """`msg` held for source `name` of the frame stamped `stamp` (ns), unless the one held is
    nearer that stamp."""
    kept = held.get(name)
    if kept is None or abs(_ns(msg) - stamp) < abs(_ns(kept) - stamp):
        held[name] = msg


def _ns(msg) -> int:
    return stamp_ns(msg.header.stamp)


def _offsets(name: str, msg) -> np.ndarray | None:
    """Each point's seconds after its message's stamp (a scan's rays, a cloud's per-point time
    field), as _points orders them; None: every point at the stamp."""
    if name == "scan":
        return range_data.scan_point_offsets(msg)
    return msg.offsets if name == "points" else None


def _points(name: str, msg, k, size: tuple, frame_id: str) -> np.ndarray:
    """The (N, 3) points of a message of source `name` in its own frame (the image's,
    `frame_id`, for a depth image)."""
    if name == "scan":
        return range_data.scan_points(msg)
    if name == "points":  # read as it came (ReadCloud)
        if msg.points is None:
            raise AnchorError(msg.error)
        return msg.points
    # depth: registered to the camera (a RealSense's aligned_depth_to_color), so its pixels
    # are the image's and the image's K back-projects them; in another frame its pixels are
    # another camera's, which that K would place wrong (and the extrinsic move again).
    if msg.header.frame_id != frame_id:
        raise AnchorError(
            f"a depth image in frame {msg.header.frame_id!r} for an image in {frame_id!r}: "
            "metric_scale's depth must be registered to the camera (its frame_id)"
        )
    metres = range_data.depth_image_metres(msg)
    if metres.shape != tuple(size):
        raise AnchorError(
            f"a {metres.shape[1]}x{metres.shape[0]} depth image for a {size[1]}x{size[0]} "
            "image: metric_scale's depth must be registered to the camera (same size)"
        )
    if k is None:
        raise AnchorError("no camera_info for the image: a depth image needs the image's K")
    stride = max(1, int(np.ceil(np.sqrt(metres.size / RANGE_POINTS))))
    return depth_image_points(metres, k, stride)
