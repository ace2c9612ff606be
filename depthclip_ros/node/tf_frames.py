"""metric_scale's transforms from tf2 where `tf2_ros` imports (a ROS install; the PyPI wheels
have none): /tf and /tf_static heard by the node, looked up at each anchor message's stamp
without waiting, so a lookup never holds the worker. The static_transforms parameter's chain
is tried first (RangeSources); this joins the frames it does not, the parameter's transforms
given to the buffer as static ones before each lookup: a frame the parameter gives has the
parameter's parent and transform whatever /tf_static said of it (a URDF's mount corrected)."""

from __future__ import annotations

from geometry_msgs.msg import TransformStamped
from rclpy.time import Time

from ..errors import AnchorError
from ..transforms import Transform, quaternion_from_rotation, transform_from_stamped

AUTHORITY = "depthclip static_transforms parameter"  # tf2's name for who gave a transform

try:
    import tf2_ros
except ImportError:  # no ROS install: static_transforms only
    tf2_ros = None


def available() -> bool:
    return tf2_ros is not None


class TfFrames:
    """A tf2 buffer filled by a TransformListener on `node` (its executor, its /tf and
    /tf_static), with the lookups counted for diagnostics."""

    def __init__(self, node):
        self.buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self.buffer, node)
        self.lookups = 0
        self.failed = 0
        self.last_failure = ""
        self._given = ((), [])  # (the parameter's transforms, as TransformStamped messages)
        self.given_frames = set()  # the child frames the parameter has given the buffer

    def lookup(self, target: str, source: str, stamp, given=(), counted=True) -> Transform:
        """The transform of points in frame `source` into `target` at `stamp` (a
        builtin_interfaces Time), `given` (Transforms: the static_transforms parameter's)
        joining what tf2 heard; AnchorError with tf2's words when tf2 has none (yet).
        `counted`: in the diagnostics' lookups and failures (not a probe for a frame that may
        not be there: metric_scale_fixed_frame on a robot without odometry)."""
        self.lookups += counted
        target, source = target.lstrip("/"), source.lstrip("/")  # tf2 refuses ROS 1's slash
        for msg in self._stamped(given):  # again each time: a later /tf_static replaces them
            self.buffer.set_transform_static(msg, AUTHORITY)
        try:
            msg = self.buffer.lookup_transform(target, source, Time.from_msg(stamp))
        except tf2_ros.TransformException as exc:
            words = f"tf2: {type(exc).__name__}: {str(exc).strip()}"
            if counted:
                self.failed += 1
                self.last_failure = words
            raise AnchorError(words) from None
        return transform_from_stamped(msg, given=False)

    def _stamped(self, given) -> list:
        """`given` as TransformStamped messages, made once for each parameter value."""
        given, known = tuple(given), self._given[0]
        if len(given) != len(known) or any(a is not b for a, b in zip(given, known)):
            self._given = (given, [_stamped(t) for t in given])
            self.given_frames.update(t.child for t in given)
        return self._given[1]

    def words(self) -> str:
        """The lookups in diagnostics' words."""
        last = f" (last: {self.last_failure})" if self.failed else ""
        return f"tf2 (/tf, /tf_static): {self.lookups} lookups, {self.failed} failed{last}"

    def close(self) -> None:
        self._listener.unregister()


def _stamped(transform: Transform) -> TransformStamped:
    msg = TransformStamped(child_frame_id=transform.child)
    msg.header.frame_id = transform.parent  # stamp 0: a static transform holds at every time
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in transform.translation)
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion_from_rotation(transform.rotation))
    return msg
