"""Metric points from range data that is not a point list: a depth image registered to the
camera (back-projected through K) and the floor under a camera of known height and pitch;
(N, 3) float64 in the camera's optical frame. NumPy only (the messages' decoding:
messages/range_data).
"""

from __future__ import annotations

import numpy as np

from ..errors import AnchorError


def depth_image_points(depth: np.ndarray, k: np.ndarray, stride: int = 1) -> np.ndarray:
    """A depth image registered to the camera (float metres; 0 and NaN: no depth), every
    `stride`-th pixel with depth, back-projected through K into the camera's optical frame."""
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2:
        raise AnchorError(f"a depth image of shape {depth.shape}: one channel is needed")
    rows, cols = np.mgrid[0 : depth.shape[0] : stride, 0 : depth.shape[1] : stride]
    z = depth[rows, cols]
    valid = np.isfinite(z) & (z > 0)
    z, u, v = z[valid], cols[valid].astype(np.float64), rows[valid].astype(np.float64)
    x = (u - k[0, 2]) * z / k[0, 0]
    y = (v - k[1, 2]) * z / k[1, 1]
    return np.stack([x, y, z], axis=1)


def ground_points(k: np.ndarray, size: tuple, height: float, pitch: float, step: int = 16):
    """The floor's points seen by a camera `height` metres above it, pitched down by `pitch`
    radians (0: level; the optical frame: x right, y down, z forward), at every `step`-th
    pixel of an image of `size` (height, width) below the horizon: the floor's exact depth
    there. A camera whose image holds no floor is an AnchorError."""
    if not (np.isfinite(height) and height > 0):
        raise AnchorError(
            f"metric_scale ground needs the camera's height above the floor > 0 m, got {height}"
        )
    down = np.array([0.0, np.cos(pitch), np.sin(pitch)])  # the floor's normal, downwards
    rows, cols = np.mgrid[step // 2 : size[0] : step, step // 2 : size[1] : step]
    rays = np.stack(
        [(cols - k[0, 2]) / k[0, 0], (rows - k[1, 2]) / k[1, 1], np.ones(rows.shape)], axis=-1
    ).reshape(-1, 3)
    towards_floor = rays @ down
    # Rays close to the horizon meet the floor far away, where a small pitch error is metres.
    below = towards_floor > 0.05
    if not below.any():
        raise AnchorError(
            f"metric_scale ground: a camera {height:g} m up, pitched {np.degrees(pitch):.0f} "
            f"degrees down, sees no floor in its image"
        )
    rays = rays[below]
    return rays * (height / towards_floor[below])[:, None]
