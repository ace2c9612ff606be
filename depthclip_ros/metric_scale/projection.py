"""Metric anchors onto the model's feature grid, gated, for one frame's fit. NumPy only.

Anchors (metric points in the camera's optical frame: x right, y down, z forward) are
projected through K into the image; those in front of the camera and in the depth's region
are kept. Each is compared with the model's depth at its own pixel: the coarse grid sampled as
the depth step's upsampling samples it (bilinear, align_corners), no full-resolution work.
Each feature cell counts once, however many anchors fall in it (a 2D lidar puts a dozen rays in
a cell, a ToF zone one): an anchor weighs 1 / the anchors in its cell, so a stray return is one
ray of its cell to outvote, not the cell's whole say. Anchors at a depth edge (their four
cells' depths apart by more than EDGE_RATIO) and where the model sits at its first or last bin
(it cannot say how much nearer or farther) are left out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MIN_DEPTH = 0.05  # metres in front of the camera: nearer is behind the lens or on it
EDGE_RATIO = 1.3  # a cell's four neighbours' depths farther apart than this: a depth edge
BIN_MARGIN = 0.03  # share of the bins' span at each end where the model saturates


@dataclasses.dataclass(frozen=True)
class Projection:
    """Anchors on the feature grid: their depth `z` and the model's `model` depth there."""

    z: np.ndarray  # (n,) metres along the optical axis
    model: np.ndarray  # (n,) the coarse depth sampled at the anchor's pixel
    pixels: np.ndarray  # (n, 2) (u, v)
    weights: np.ndarray  # (n,) 1 / the anchors of its feature cell: each cell counts once
    in_image: int  # anchors in front of the camera in the region, before the gates
    received: int
    probs: np.ndarray | None = None  # (n, K) the bin probabilities at the anchors (mode bins)

    @property
    def cells(self) -> int:
        """The feature cells the anchors fall in: the fit's independent anchors."""
        return int(round(float(self.weights.sum())))


def project(points, k, region: tuple, coarse: np.ndarray, bins, probs=None) -> Projection:
    """`points` (N, 3) in the optical frame through K (3, 3) onto the coarse grid (h, w) of a
    result whose depth covers `region` (top, left, height, width); gated as the module says.
    `probs` (K, h, w), the grid's bin probabilities: sampled at the anchors too (mode bins)."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    received = len(points)
    z = points[:, 2]
    points = points[(z > MIN_DEPTH) & (z < np.inf)]  # NaN too; a NaN x or y falls outside
    z = points[:, 2]
    u = k[0, 0] * points[:, 0] / z + k[0, 2]
    v = k[1, 1] * points[:, 1] / z + k[1, 2]
    top, left, height, width = region
    inside = (u >= left) & (u <= left + width - 1) & (v >= top) & (v <= top + height - 1)
    z, u, v = z[inside], u[inside], v[inside]
    h, w = coarse.shape
    rows = (v - top) * ((h - 1) / max(height - 1, 1))
    cols = (u - left) * ((w - 1) / max(width - 1, 1))
    corners = _corners(coarse.shape, rows, cols)
    model, lowest, highest = _bilinear(coarse.ravel(), corners)
    bins = np.asarray(bins, np.float64)
    margin = BIN_MARGIN * (bins[-1] - bins[0])
    good = (
        np.isfinite(model)
        & (highest <= EDGE_RATIO * lowest)
        & (lowest > bins[0] + margin)
        & (highest < bins[-1] - margin)
    )
    kept = np.flatnonzero(good)
    cell = np.rint(rows[kept]).astype(np.intp) * w + np.rint(cols[kept]).astype(np.intp)
    share = 1.0 / np.bincount(cell, minlength=h * w)[cell]
    pixels = np.stack([u[kept], v[kept]], axis=1)
    sampled = None
    if probs is not None:
        at, steps, fr, fc = corners
        at_kept = (at[kept], steps, fr[kept], fc[kept])
        sampled = _bilinear(np.asarray(probs).reshape(len(probs), -1), at_kept)[0].T
    return Projection(z[kept], model[kept], pixels, share, int(inside.sum()), received, sampled)


def _corners(shape: tuple, rows, cols) -> tuple:
    """(flat index of each position's upper-left cell, the steps to its four cells, the
    fractions down and across) on a grid of `shape` (h, w), positions >= 0."""
    h, w = shape
    r0 = np.minimum(rows.astype(np.intp), max(h - 2, 0))  # floor: the positions are >= 0
    c0 = np.minimum(cols.astype(np.intp), max(w - 2, 0))
    down, right = (w if h > 1 else 0), (1 if w > 1 else 0)
    return r0 * w + c0, (0, right, down, down + right), rows - r0, cols - c0


def _bilinear(flat: np.ndarray, corners: tuple) -> tuple:
    """(the bilinear value, the lowest and the highest of the four cells around it) at each
    position of `corners` (_corners), as the depth step's upsampling interpolates, on a grid
    flattened to (h * w,), or K grids at once as (K, h * w) (each value then (K, n))."""
    at, steps, fr, fc = corners
    v00, v01, v10, v11 = (flat[..., at + step] for step in steps)
    upper = v00 + fc * (v01 - v00)
    lower = v10 + fc * (v11 - v10)
    lowest = np.minimum(np.minimum(v00, v01), np.minimum(v10, v11))
    highest = np.maximum(np.maximum(v00, v01), np.maximum(v10, v11))
    return upper + fr * (lower - upper), lowest, highest
