"""One frame's fit of the depth's scale (and shift) to metric anchors. NumPy only.

Anchors (metric points in the camera's optical frame: x right, y down, z forward) are
projected through K into the image; those in front of the camera and in the depth's region
are kept, one per feature cell (the cell's median: its other rays outvote a stray return,
and each cell counts once). The model's depth at an anchor is the coarse grid sampled as the
depth step's upsampling samples it (bilinear, align_corners): no full-resolution work.
Anchors at a depth edge (their four cells' depths apart by more than EDGE_RATIO) and where the
model sits at its first or last bin (it cannot say how much nearer or farther) are left out.

The fit minimises the relative error of s m + t against the anchor's depth z (mode
`scale_shift`; `scale`: t = 0), robustly: Huber weights on the relative residuals; where fewer
than MIN_INLIER_SHARE of the anchors agree (glass, mirrors, people in the scan), a seeded
RANSAC picks the largest agreeing set first. Anchors all at one depth cannot tell a scale from a
shift: `scale_shift` falls back to `scale` and says so.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

MIN_DEPTH = 0.05  # metres in front of the camera: nearer is behind the lens or on it
EDGE_RATIO = 1.3  # a cell's four neighbours' depths farther apart than this: a depth edge
BIN_MARGIN = 0.03  # share of the bins' span at each end where the model saturates
INLIER_RELATIVE_ERROR = 0.1  # an anchor agrees with a fit within 10 % of its depth
MIN_INLIER_SHARE = 0.6  # below it the Huber fit's start is RANSAC's
HUBER_K = 1.345  # Huber's constant, in robust standard deviations of the residuals
MIN_HUBER_DELTA = 0.01  # relative error: sensor noise below 1 % keeps full weight
RANSAC_ROUNDS = 64
SETTLED = 1e-4  # Huber's rounds stop once no parameter moves by more (relative)
MIN_SPREAD = 0.15  # anchors' model depths spanning less (relative): one depth, no shift
MODES = ("scale", "scale_shift")


@dataclasses.dataclass(frozen=True)
class Projection:
    """Anchors on the feature grid: their depth `z` and the model's `model` depth there."""

    z: np.ndarray  # (n,) metres along the optical axis
    model: np.ndarray  # (n,) the coarse depth sampled at the anchor's pixel
    pixels: np.ndarray  # (n, 2) (u, v)
    in_image: int  # anchors in front of the camera in the region, before one-per-cell
    received: int


@dataclasses.dataclass(frozen=True)
class Fit:
    """A frame's fit (`fitted`) or why there is none (`reason`); the counts either way."""

    mode: str
    scale: float
    shift: float
    log_scale_std: float  # std of log s from the residuals
    shift_std: float
    received: int
    in_image: int
    used: int
    inliers: int
    residual_median: float  # median |relative error| of the inliers
    reason: str = ""  # why not fitted, or what the fit fell back to

    @property
    def fitted(self) -> bool:
        return np.isfinite(self.scale)


def project(points, k, region: tuple, coarse: np.ndarray, bins) -> Projection:
    """`points` (N, 3) in the optical frame through K (3, 3) onto the coarse grid (h, w) of a
    result whose depth covers `region` (top, left, height, width); gated as the module says."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    received = len(points)
    points = points[np.isfinite(points).all(axis=1) & (points[:, 2] > MIN_DEPTH)]
    z = points[:, 2]
    u = k[0, 0] * points[:, 0] / z + k[0, 2]
    v = k[1, 1] * points[:, 1] / z + k[1, 2]
    top, left, height, width = region
    inside = (u >= left) & (u <= left + width - 1) & (v >= top) & (v <= top + height - 1)
    z, u, v = z[inside], u[inside], v[inside]
    h, w = coarse.shape
    rows = (v - top) * ((h - 1) / max(height - 1, 1))
    cols = (u - left) * ((w - 1) / max(width - 1, 1))
    # One anchor per cell, the one of median depth: a cell's rays outvote its stray returns
    # (a person, a reflection) and every cell counts once however many rays it has.
    cell = np.rint(rows).astype(np.intp) * w + np.rint(cols).astype(np.intp)
    order = np.lexsort((z, cell))
    _, first, counts = np.unique(cell[order], return_index=True, return_counts=True)
    keep = order[first + (counts - 1) // 2]
    z, rows, cols, u, v = z[keep], rows[keep], cols[keep], u[keep], v[keep]
    values, weights = _bilinear(coarse, rows, cols)  # (n, 4) each
    model = np.sum(values * weights, axis=1)
    bins = np.asarray(bins, np.float64)
    margin = BIN_MARGIN * (bins[-1] - bins[0])
    lowest, highest = values.min(axis=1), values.max(axis=1)
    good = (
        np.isfinite(model)
        & (highest <= EDGE_RATIO * lowest)
        & (lowest > bins[0] + margin)
        & (highest < bins[-1] - margin)
    )
    pixels = np.stack([u, v], axis=1)[good]
    return Projection(z[good], model[good], pixels, int(inside.sum()), received)


def _bilinear(coarse: np.ndarray, rows, cols) -> tuple:
    """The values of the four cells around each grid position and their bilinear weights."""
    h, w = coarse.shape
    r0 = np.clip(np.floor(rows).astype(np.intp), 0, max(h - 2, 0))
    c0 = np.clip(np.floor(cols).astype(np.intp), 0, max(w - 2, 0))
    fr, fc = rows - r0, cols - c0
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    values = np.stack([coarse[r0, c0], coarse[r0, c1], coarse[r1, c0], coarse[r1, c1]], axis=1)
    weights = np.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc], axis=1)
    return values, weights


def fit(projection: Projection, mode: str, min_anchors: int, scale_range: tuple) -> Fit:
    """The frame's fit in `mode` (MODES) from at least `min_anchors` anchors, refused outside
    `scale_range` (lowest, highest)."""
    if mode not in MODES:
        raise ValueError(f"metric_scale mode {mode!r}: one of {', '.join(MODES)}")
    counts = dict(received=projection.received, in_image=projection.in_image)
    z, m = projection.z, projection.model
    n = len(z)
    if n < min_anchors:
        return _none(mode, counts, n, f"{n} anchors usable, {min_anchors} needed")
    reason = ""
    if mode == "scale_shift" and np.ptp(m) < MIN_SPREAD * median(m):
        mode, reason = "scale", "anchors at one depth: scale only"
    # The relative residual (s m + t) / z - 1 is linear in (s, t): columns m / z and 1 / z.
    design = np.stack([m / z, 1.0 / z], axis=1)[:, : 1 if mode == "scale" else 2]
    params, inliers = _robust(design)
    if params is None:
        return _none(mode, counts, n, "no agreeing set of anchors")
    scale, shift = float(params[0]), float(params[1]) if mode == "scale_shift" else 0.0
    residuals = design @ params - 1.0
    agree = np.abs(residuals) < INLIER_RELATIVE_ERROR
    if not scale_range[0] <= scale <= scale_range[1]:
        return _none(
            mode, counts, n, f"scale {scale:.3g} outside [{scale_range[0]:g}, {scale_range[1]:g}]"
        )
    stds = _parameter_stds(design[agree], residuals[agree])
    return Fit(
        mode,
        scale,
        shift,
        stds[0] / scale,
        stds[1] if mode == "scale_shift" else 0.0,
        used=n,
        inliers=int(agree.sum()),
        residual_median=median(np.abs(residuals[agree])),
        reason=reason,
        **counts,
    )


def _none(mode, counts, used, reason) -> Fit:
    nan = float("nan")
    return Fit(
        mode,
        nan,
        nan,
        nan,
        nan,
        used=used,
        inliers=0,
        residual_median=nan,
        reason=reason,
        **counts,
    )


def _least_squares(design, weights) -> np.ndarray | None:
    """The weighted least-squares parameters of design @ p = 1 (one or two columns: the normal
    equations solved in closed form), None where they are degenerate."""
    a = design * weights[:, None]
    normal = a.T @ design
    rhs = a.sum(axis=0)
    if len(rhs) == 1:
        return rhs / normal[0] if normal[0, 0] > 1e-12 else None
    det = normal[0, 0] * normal[1, 1] - normal[0, 1] ** 2
    if det <= 1e-9 * normal[0, 0] * normal[1, 1]:
        return None
    return np.array(
        [
            (normal[1, 1] * rhs[0] - normal[0, 1] * rhs[1]) / det,
            (normal[0, 0] * rhs[1] - normal[0, 1] * rhs[0]) / det,
        ]
    )


def _robust(design) -> tuple:
    """(parameters, inlier mask) of the relative-error fit: Huber from least squares, or from
    RANSAC's largest agreeing set where least squares leaves too few anchors agreeing."""
    params = _least_squares(design, np.ones(len(design)))
    if params is not None:
        params = _huber(design, params)
    if params is None or _agreeing(design, params).mean() < MIN_INLIER_SHARE:
        params = _ransac(design)
        if params is None:
            return None, None
        params = _huber(design, params, _agreeing(design, params))
    return params, _agreeing(design, params)


def _agreeing(design, params) -> np.ndarray:
    return np.abs(design @ params - 1.0) < INLIER_RELATIVE_ERROR


def _huber(design, params, start=None, rounds: int = 8):
    """Iteratively reweighted least squares with Huber's weights on the relative residuals
    (`start`: the anchors the first round may use), until the parameters settle."""
    weights = np.ones(len(design)) if start is None else start.astype(np.float64)
    for _ in range(rounds):
        size = np.abs(design @ params - 1.0)
        spread = 1.4826 * median(size[weights > 0])
        delta = max(HUBER_K * spread, MIN_HUBER_DELTA)
        huber = np.minimum(1.0, delta / np.maximum(size, 1e-12))
        weights = huber if start is None else huber * (weights > 0)
        new = _least_squares(design, weights)
        if new is None:
            return params
        settled = np.all(np.abs(new - params) <= SETTLED * np.abs(params) + 1e-12)
        params = new
        if settled:
            break
    return params


def _ransac(design) -> np.ndarray | None:
    """The hypothesis from minimal samples (seeded: a frame's fit is reproducible) that most
    anchors agree with, every hypothesis at once."""
    n, size = design.shape
    picks = _minimal_samples(n, size)
    if size == 1:
        hypotheses = 1.0 / design[picks[:, 0], :1]  # (rounds, 1)
    else:
        (a0, b0), (a1, b1) = design[picks[:, 0]].T, design[picks[:, 1]].T
        det = a0 * b1 - a1 * b0
        ok = np.abs(det) > 1e-12
        det = np.where(ok, det, 1.0)
        hypotheses = np.stack([(b1 - b0) / det, (a0 - a1) / det], axis=1)[ok]
    hypotheses = hypotheses[np.isfinite(hypotheses).all(axis=1) & (hypotheses[:, 0] > 0)]
    if not len(hypotheses):
        return None
    agreeing = np.abs(hypotheses @ design.T - 1.0) < INLIER_RELATIVE_ERROR  # (rounds, n)
    return hypotheses[int(np.argmax(agreeing.sum(axis=1)))]


def median(values) -> float:
    """np.median of a 1-D array, without its generic machinery (a frame's fit takes several of
    a few dozen values: np.median's overhead was most of their cost)."""
    values = np.asarray(values)
    n = len(values)
    if n == 0:
        return float("nan")
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    low, high = np.partition(values, (half - 1, half))[half - 1 : half + 1]
    return float(0.5 * (low + high))


@functools.lru_cache(maxsize=1024)
def _minimal_samples(n: int, size: int) -> np.ndarray:
    """RANSAC's (RANSAC_ROUNDS, size) anchor indices for `n` anchors, seeded: the same for every
    frame with as many anchors, so drawn once (drawing them took most of a frame's fit)."""
    rng = np.random.default_rng(0)
    picks = np.stack([rng.choice(n, size, replace=False) for _ in range(RANSAC_ROUNDS)])
    picks.flags.writeable = False
    return picks


def _parameter_stds(design, residuals) -> np.ndarray:
    """The parameters' standard deviations from the inliers' residuals (least squares)."""
    n, size = design.shape
    normal = design.T @ design
    det = np.linalg.det(normal)
    if n <= size or det <= 1e-9 * np.prod(np.diag(normal)):
        return np.full(2, np.inf)
    variance = float(residuals @ residuals) / (n - size)
    inverse = np.diag([1 / normal[0, 0]]) if size == 1 else np.linalg.inv(normal)
    stds = np.sqrt(np.diag(inverse) * variance)
    return np.concatenate([stds, np.zeros(2 - size)])
