"""A bag's /tf over time, looked up at a stamp as tf2 looks it up. NumPy only."""

from __future__ import annotations

import bisect

import numpy as np

from ..runtime.stamp_pairing import stamp_ns
from ..transforms import Transform, rotation_from_quaternion, unit_quaternion

# What tf2's buffer keeps of each frame's transforms behind its newest (its default cache).
TF_CACHE_SECONDS = 10.0


class TransformHistory:
    """Transforms heard over time (a bag's /tf, in log order), looked up at a stamp as tf2
    does: each parent-child edge interpolated between its samples on either side of the stamp
    (translation linearly, rotation by slerp); a stamp outside an edge's samples is not
    guessed. Each edge keeps TF_CACHE_SECONDS behind its newest sample."""

    def __init__(self, keep_seconds: float = TF_CACHE_SECONDS):
        self._keep = int(keep_seconds * 1e9)
        self._edges = {}  # (parent, child) -> ([stamp ns, sorted], [(translation, xyzw)])

    def __bool__(self) -> bool:
        return bool(self._edges)

    def add(self, stamped) -> None:
        """One geometry_msgs/TransformStamped (rclpy's or a bag's)."""
        edge = (stamped.header.frame_id.lstrip("/"), stamped.child_frame_id.lstrip("/"))
        t, q = stamped.transform.translation, stamped.transform.rotation
        sample = (np.array([t.x, t.y, t.z], np.float64), unit_quaternion(q.x, q.y, q.z, q.w))
        stamps, samples = self._edges.setdefault(edge, ([], []))
        key = stamp_ns(stamped.header.stamp)
        i = bisect.bisect_left(stamps, key)
        if i < len(stamps) and stamps[i] == key:
            samples[i] = sample
        else:
            stamps.insert(i, key)
            samples.insert(i, sample)
        old = bisect.bisect_left(stamps, stamps[-1] - self._keep)
        del stamps[:old], samples[:old]

    def at(self, stamp) -> tuple:
        """([the Transform of each edge at `stamp`], [a line for each edge it is outside of])."""
        key = stamp_ns(stamp)
        found, outside = [], []
        for (parent, child), (stamps, samples) in self._edges.items():
            i = bisect.bisect_left(stamps, key)
            if i < len(stamps) and stamps[i] == key:
                translation, quaternion = samples[i]
            elif 0 < i < len(stamps):
                w = (key - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
                (t0, q0), (t1, q1) = samples[i - 1], samples[i]
                translation, quaternion = (1 - w) * t0 + w * t1, _slerp(q0, q1, w)
            else:
                outside.append(
                    f"/tf has {parent} -> {child} from {stamps[0] * 1e-9:.3f} to "
                    f"{stamps[-1] * 1e-9:.3f} s, not at {key * 1e-9:.3f} s"
                )
                continue
            rotation = rotation_from_quaternion(*quaternion)
            found.append(Transform(parent, child, rotation, translation, given=True))
        return found, outside


def _slerp(q0: np.ndarray, q1: np.ndarray, w: float) -> np.ndarray:
    """The rotation a fraction `w` of the way from q0 to q1, the short way round."""
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: a normalised lerp, without dividing by sin(~0)
        q = (1 - w) * q0 + w * q1
        return q / np.linalg.norm(q)
    angle = np.arccos(dot)
    return (np.sin((1 - w) * angle) * q0 + np.sin(w * angle) * q1) / np.sin(angle)
