"""metric_scale's transforms from tf2 where `tf2_ros` imports (a ROS install; the PyPI wheels
have none): /tf and /tf_static heard by the node, looked up at each anchor message's stamp
without waiting, so a lookup never holds the worker. The static_transforms parameter's chain
is tried first (RangeSources); this joins the frames it does not."""

from __future__ import annotations

from rclpy.time import Time

from ..errors import AnchorError
from ..metric_scale.transforms import Transform, transform_from_stamped

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

    def lookup(self, target: str, source: str, stamp) -> Transform:
        """The transform of points in frame `source` into `target` at `stamp` (a
        builtin_interfaces Time); AnchorError with tf2's words when tf2 has none (yet)."""
        self.lookups += 1
        target, source = target.lstrip("/"), source.lstrip("/")  # tf2 refuses ROS 1's slash
        try:
            msg = self.buffer.lookup_transform(target, source, Time.from_msg(stamp))
        except tf2_ros.TransformException as exc:
            self.failed += 1
            self.last_failure = f"tf2: {type(exc).__name__}: {str(exc).strip()}"
            raise AnchorError(self.last_failure) from None
        return transform_from_stamped(msg, given=False)

    def words(self) -> str:
        """The lookups in diagnostics' words."""
        last = f" (last: {self.last_failure})" if self.failed else ""
        return f"tf2 (/tf, /tf_static): {self.lookups} lookups, {self.failed} failed{last}"

    def close(self) -> None:
        self._listener.unregister()
