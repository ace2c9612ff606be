"""Rigid transforms between frames as ROS users give them where tf2 is not installed: each
in `static_transform_publisher`'s arguments, chained through a tree of frames (the
static_transforms parameter, checked where the parameters are). NumPy only; over time:
metric_scale.transform_history.

A transform from `parent` to `child` is the child frame's pose in the parent's: a point p in
the child's frame is R p + t in the parent's (tf2's convention).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import AnchorError

_FLAGS = ("x", "y", "z", "qx", "qy", "qz", "qw", "roll", "pitch", "yaw")


@dataclasses.dataclass(frozen=True)
class Transform:
    parent: str
    child: str
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    given: bool = True  # False: the inverse of one given, or a chain of them

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points in the child's frame -> the parent's."""
        return points @ self.rotation.T + self.translation

    def inverse(self) -> "Transform":
        rotation = self.rotation.T
        return Transform(self.child, self.parent, rotation, -rotation @ self.translation, False)

    def then(self, outer: "Transform") -> "Transform":
        """This transform followed by `outer` (outer.child == self.parent)."""
        return Transform(
            outer.parent,
            self.child,
            outer.rotation @ self.rotation,
            outer.rotation @ self.translation + outer.translation,
            False,
        )


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """tf2's setRPY: about the fixed X (roll), Y (pitch) and Z (yaw) axes, R = Rz Ry Rx."""
    cr, sr, cp, sp, cy, sy = (f(a) for a in (roll, pitch, yaw) for f in (np.cos, np.sin))
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def unit_quaternion(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """(x, y, z, w) normalised; AnchorError (a ValueError) where it is no rotation."""
    q = np.array([qx, qy, qz, qw], np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-9:
        raise AnchorError(f"the quaternion ({qx}, {qy}, {qz}, {qw}) has no rotation")
    return q / norm


def rotation_from_quaternion(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    x, y, z, w = unit_quaternion(qx, qy, qz, qw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quaternion_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """(x, y, z, w), w >= 0, of a rotation matrix: from its largest diagonal term (Shepperd),
    so that no rotation divides by a small number."""
    r = np.asarray(rotation, np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    i = int(np.argmax([r[0, 0], r[1, 1], r[2, 2], trace]))
    if i == 3:
        w = np.sqrt(1.0 + trace) / 2
        q = [(r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w)]
        q = np.array([*q, (r[1, 0] - r[0, 1]) / (4 * w), w])
    else:
        j, k = (i + 1) % 3, (i + 2) % 3
        q = np.empty(4)
        q[i] = np.sqrt(max(1.0 + r[i, i] - r[j, j] - r[k, k], 0.0)) / 2
        q[j] = (r[j, i] + r[i, j]) / (4 * q[i])
        q[k] = (r[k, i] + r[i, k]) / (4 * q[i])
        q[3] = (r[k, j] - r[j, k]) / (4 * q[i])
    return q if q[3] >= 0 else -q


def transform_from_stamped(stamped, given: bool = True) -> Transform:
    """A geometry_msgs/TransformStamped (rclpy's or a bag's) as a Transform."""
    t, q = stamped.transform.translation, stamped.transform.rotation
    return Transform(
        stamped.header.frame_id.lstrip("/"),
        stamped.child_frame_id.lstrip("/"),
        rotation_from_quaternion(q.x, q.y, q.z, q.w),
        np.array([t.x, t.y, t.z], np.float64),
        given,
    )


def parse_static_transform(text: str) -> Transform:
    """One transform in static_transform_publisher's arguments: `x y z yaw pitch roll parent
    child`, `x y z qx qy qz qw parent child`, or its flags (`--x 0.1 --yaw 1.57 --frame-id
    base_link --child-frame-id laser`; those left out are 0, qw 1)."""
    words = text.split()
    try:
        if any(w.startswith("--") for w in words):
            return _from_flags(words)
        if len(words) == 8:
            x, y, z, yaw, pitch, roll = (float(w) for w in words[:6])
            rotation = rotation_from_rpy(roll, pitch, yaw)
        elif len(words) == 9:
            x, y, z, *quaternion = (float(w) for w in words[:7])
            rotation = rotation_from_quaternion(*quaternion)
        else:
            raise ValueError(f"{len(words)} words")
        return _checked(words[-2], words[-1], rotation, (x, y, z))
    except ValueError as e:
        raise AnchorError(
            f"static transform {text!r} is not in static_transform_publisher's arguments "
            f"('x y z yaw pitch roll parent child', 'x y z qx qy qz qw parent child' or its "
            f"--flags): {e}"
        ) from None


def _from_flags(words: list) -> Transform:
    if len(words) % 2:
        raise ValueError("a flag without its value")
    given = dict(zip(words[::2], words[1::2]))
    unknown = sorted(set(given) - {f"--{f}" for f in (*_FLAGS, "frame-id", "child-frame-id")})
    if unknown:
        raise ValueError(f"unknown flags {unknown}")
    if "--frame-id" not in given or "--child-frame-id" not in given:
        raise ValueError("--frame-id and --child-frame-id are needed")
    value = {f: float(given.get(f"--{f}", 1.0 if f == "qw" else 0.0)) for f in _FLAGS}
    if any(f"--{f}" in given for f in ("roll", "pitch", "yaw")):
        if any(f"--{f}" in given for f in ("qx", "qy", "qz", "qw")):
            raise ValueError("a rotation as both a quaternion and roll, pitch, yaw")
        rotation = rotation_from_rpy(value["roll"], value["pitch"], value["yaw"])
    else:
        rotation = rotation_from_quaternion(*(value[f] for f in ("qx", "qy", "qz", "qw")))
    translation = (value["x"], value["y"], value["z"])
    return _checked(given["--frame-id"], given["--child-frame-id"], rotation, translation)


def _checked(parent: str, child: str, rotation, translation) -> Transform:
    translation = np.asarray(translation, np.float64)
    if not np.all(np.isfinite(translation)) or not np.all(np.isfinite(rotation)):
        raise ValueError("a value that is not finite")
    if parent == child:
        raise ValueError(f"a frame's transform to itself ({parent!r})")
    return Transform(parent.lstrip("/"), child.lstrip("/"), rotation, translation)


class StaticTransforms:
    """Frames joined by static transforms (a tree); `lookup(target, source)` chains them."""

    def __init__(self, transforms=()):
        self._edges = {}  # frame -> {neighbour: the Transform of neighbour's points to frame's}
        self._parents = {}  # frame -> its parent
        for transform in transforms:
            self.add(transform)

    @classmethod
    def parse(cls, texts) -> "StaticTransforms":
        return cls(parse_static_transform(t) for t in texts)

    def add(self, transform: Transform) -> None:
        """`transform` joins its frames; as in tf2 a frame has one parent: a later transform
        of the same child frame replaces the earlier."""
        parent, child = transform.parent, transform.child
        earlier = self._parents.pop(child, None)
        if earlier is not None:
            self._edges[earlier].pop(child, None)
            self._edges[child].pop(earlier, None)
        self._parents[child] = parent
        self._edges.setdefault(transform.parent, {})[transform.child] = transform
        self._edges.setdefault(transform.child, {})[transform.parent] = transform.inverse()

    def frames(self) -> set:
        """The child frames of the transforms given."""
        return set(self._parents)

    def all(self) -> list:
        """Every transform added, each once (parent to child as given)."""
        return [t for edges in self._edges.values() for t in edges.values() if t.given]

    def lookup(self, target: str, source: str) -> Transform:
        """The transform taking points in `source` to `target`; AnchorError where no chain of
        the given transforms joins them."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return Transform(target, source, np.eye(3), np.zeros(3))
        reached = {source: Transform(source, source, np.eye(3), np.zeros(3))}
        frontier = [source]
        while frontier:
            frame = frontier.pop()
            for neighbour in self._edges.get(frame, {}):
                if neighbour not in reached:  # source -> frame, then frame -> neighbour
                    reached[neighbour] = reached[frame].then(self._edges[neighbour][frame])
                    frontier.append(neighbour)
            if target in reached:
                return reached[target]
        known = ", ".join(sorted(self._edges)) or "none"
        raise AnchorError(
            f"no transform from frame {source!r} to {target!r} (static_transforms joins: {known})"
        )
