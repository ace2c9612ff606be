"""One frame's fit of the depth's scale (and shift) to metric anchors on the feature grid
(projection.Projection). NumPy only.

The fit minimises the relative error of s m + t against the anchor's depth z (mode
`scale_shift`; `scale`: t = 0), robustly: Huber weights on the relative residuals; where fewer
than MIN_INLIER_SHARE of the cells agree (glass, mirrors, people in the scan), a seeded RANSAC
picks the hypothesis the most cells agree with first, and where fewer than SURE_SHARE agree
with Huber's fit, RANSAC's refined is taken if clearly more agree with it. Anchors all at one
depth cannot tell a scale from a shift: `scale_shift` (and `bins`) falls back to `scale` and
says so.

Mode `bins` moves each bin on its own: DepthCLIP's depth is sum_k p_k b_k, so the anchors'
depths are linear in the bins' values through the bin probabilities at their pixels. From the
`scale_shift` fit (its agreeing anchors; its bins s b + t the prior), the values b' of least
relative error, each pulled towards s b + t by BIN_STIFFNESS cells' worth of evidence (a bin no
anchor speaks for stays where the scale and shift put it), kept increasing.

A fit is refused, with its reason, where no more cells agree with it than it has parameters or
fewer than MIN_AGREEING_SHARE of them do (anchors that scatter: a mount given wrong, a
misregistered depth image) and where its std is not finite. A `scale_shift` (and `bins`) fit
that would move the nearest bin below MIN_DEPTH (negative metres where the model sits at it) is
fitted again with that bin held at MIN_DEPTH (a scale alone then, and says so); mode `bins`
holds its first bin there too: depth is positive (REP 118).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .projection import MIN_DEPTH, Projection

INLIER_RELATIVE_ERROR = 0.1  # an anchor agrees with a fit within 10 % of its depth
MIN_INLIER_SHARE = 0.6  # below it the Huber fit's start is RANSAC's
MIN_AGREEING_SHARE = 0.1  # a fit fewer of the cells agree with is no fit
SURE_SHARE = 0.9  # a Huber fit this share of the cells agrees with is not second-guessed
CLEARER_BY = 0.05  # RANSAC's fit replaces Huber's where this much more of the cells agree
HUBER_K = 1.345  # Huber's constant, in robust standard deviations of the residuals
MIN_HUBER_DELTA = 0.01  # relative error: sensor noise below 1 % keeps full weight
RANSAC_ROUNDS = 64
RANSAC_SCORED = 256  # anchors each hypothesis is scored on (a seeded subset of more)
HUBER_ROUNDS = 5  # at most: later rounds moved no fit of the benchmark by more than noise
SETTLED = 1e-3  # Huber's rounds stop once no parameter moves by more (relative)
MIN_SPREAD = 0.15  # anchors' model depths spanning less (relative): one depth, no shift
BIN_STIFFNESS = 2.0  # cells' worth of evidence a bin needs to move off the scale and shift
MIN_BIN_GAP = 0.05  # of the affine bins' step: how close two fitted bins may come
MODES = ("scale", "scale_shift", "bins")


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
    cells: int = 0  # the feature cells the used anchors fall in
    bin_offsets: tuple = ()  # mode bins: each fitted bin minus its s b + t
    model_span: tuple = ()  # the model depths (nearest, farthest) of the agreeing anchors

    @property
    def fitted(self) -> bool:
        return np.isfinite(self.scale)


def fit(projection: Projection, mode: str, min_anchors: int, scale_range: tuple, bins=None) -> Fit:
    """The frame's fit in `mode` (MODES) from anchors in at least `min_anchors` feature cells,
    refused outside `scale_range` (lowest, highest); mode bins: the model's `bins` moved, from
    the projection's `probs`."""
    if mode not in MODES:
        raise ValueError(f"metric_scale mode {mode!r}: one of {', '.join(MODES)}")
    counts = dict(received=projection.received, in_image=projection.in_image)
    z, m, share = projection.z, projection.model, projection.weights
    n, cells = len(z), projection.cells
    if cells < min_anchors:
        needed = f"anchors in {cells} feature cell{'s' * (cells != 1)}, {min_anchors} needed"
        return _none(mode, counts, n, cells, needed)
    reason, unseen_shift = "", 0.0
    if mode in ("scale_shift", "bins") and m.max() - m.min() < MIN_SPREAD * median(m):
        mode, reason = "scale", "anchors at one depth: scale only"
        # The shift asked for is one these anchors cannot see: as uncertain as the spread
        # below which they cannot tell it, so depth/std and points/clearing's lower bound
        # carry it (a scale fitted at one depth, off elsewhere, clears no obstacle there).
        unseen_shift = MIN_SPREAD * median(z)
    # The relative residual (s m + t) / z - 1 is linear in (s, t): columns m / z and 1 / z.
    design = np.empty((n, 1 if mode == "scale" else 2))
    np.divide(m, z, out=design[:, 0])
    if mode != "scale":
        np.divide(1.0, z, out=design[:, 1])
    moments = _moments(design)  # the normal equations' products, for every weighting below
    params = _robust(design, moments, share)
    if params is None:
        return _none(mode, counts, n, cells, "no agreeing set of anchors")
    scale, shift = float(params[0]), float(params[1]) if mode != "scale" else 0.0
    nearest = None if bins is None or mode == "scale" else float(bins[0])
    if nearest is not None and scale * nearest + shift < MIN_DEPTH:
        # The free fit would move the first bin below MIN_DEPTH (negative metres where the model
        # sits there): fitted again with that bound held, s m + MIN_DEPTH - s b0, so a scale
        # alone in s (m - b0) against z - MIN_DEPTH.
        held_by = MIN_DEPTH - (scale * nearest + shift)  # how far the bound moved that bin
        design = ((m - nearest) / (z - MIN_DEPTH))[:, None]
        moments = _moments(design)
        params = _robust(design, moments, share)
        if params is None:
            return _none(mode, counts, n, cells, "no agreeing set of anchors")
        scale = float(params[0])
        shift = MIN_DEPTH - scale * nearest
        reason = f"nearest bin held at {MIN_DEPTH:g} m"
    else:
        nearest = None
    residuals = design @ params - 1.0
    agree = np.abs(residuals) < INLIER_RELATIVE_ERROR
    agreeing = float(share @ agree)
    if agreeing <= design.shape[1] + 1e-9 or agreeing < MIN_AGREEING_SHARE * cells:
        return _none(
            mode, counts, n, cells, f"anchors in {agreeing:.3g} of {cells} cells agree with a fit"
        )
    if not scale_range[0] <= scale <= scale_range[1]:
        return _none(
            mode,
            counts,
            n,
            cells,
            f"scale {scale:.3g} outside [{scale_range[0]:g}, {scale_range[1]:g}]",
        )
    stds = _parameter_stds(moments, residuals, share * agree)
    if not np.isfinite(stds).all():
        return _none(mode, counts, n, cells, "the fit's std is not finite")
    spoken = m[agree]  # where the fit has anchors to show for it
    offsets = ()
    if mode == "bins":
        affine = scale * np.asarray(bins, np.float64) + shift
        moved = _bin_values(projection.probs, z, share * agree, affine, median(z))
        offsets = tuple((moved - affine).tolist())
        residuals = projection.probs @ moved / z - 1.0
    if nearest is not None:
        # The shift follows the scale, at the first bin; and the bound moved that bin off
        # where the anchors put it: as uncertain as that move, so points/clearing's lower bound
        # and depth/std carry it.
        stds = np.array([stds[0], max(stds[0] * nearest, held_by)])
    return Fit(
        mode,
        scale,
        shift,
        stds[0] / scale,
        stds[1] if mode != "scale" else unseen_shift,
        used=n,
        inliers=int(agree.sum()),
        residual_median=median(np.abs(residuals[agree])),
        reason=reason,
        cells=cells,
        bin_offsets=offsets,
        model_span=(float(spoken.min()), float(spoken.max())),
        **counts,
    )


def _bin_values(probs, z, weights, affine, depth: float) -> np.ndarray:
    """The bins' values b' of least weighted relative error |p . b' / z - 1| (`probs` (n, K)
    at the anchors of depth `z`, `weights` each anchor's), each pulled towards its `affine`
    value (the scale and shift's) by BIN_STIFFNESS cells' worth on (b' - affine) / `depth`;
    the first at least MIN_DEPTH, increasing, at least MIN_BIN_GAP of the affine step apart."""
    design = probs / z[:, None]
    weighted = design * weights[:, None]
    normal = weighted.T @ design
    stiffness = BIN_STIFFNESS / depth**2
    normal[np.diag_indices_from(normal)] += stiffness
    rhs = weighted.sum(axis=0) + stiffness * affine
    moved = np.linalg.solve(normal, rhs)
    if moved[0] < MIN_DEPTH:
        # Positive (REP 118): the first bin held at MIN_DEPTH, the others solved again with it
        # (least squares under that bound, not the free solution cut).
        moved[0] = MIN_DEPTH
        moved[1:] = np.linalg.solve(normal[1:, 1:], rhs[1:] - normal[1:, 0] * MIN_DEPTH)
    gaps = MIN_BIN_GAP * np.diff(affine)
    for k in range(1, len(moved)):
        moved[k] = max(moved[k], moved[k - 1] + gaps[k - 1])
    return moved


def _none(mode, counts, used, cells, reason) -> Fit:
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
        cells=cells,
        **counts,
    )


def _moments(design) -> np.ndarray:
    """Each anchor's products whose weighted sums are the normal equations of design @ p = 1:
    (a a, a) for one column a, (a a, a b, b b, a, b) for two; one product with the weights
    then sums them all (a Huber round is then a few vector operations)."""
    a = design[:, 0]
    if design.shape[1] == 1:
        products = np.empty((2, len(a)))
        np.multiply(a, a, out=products[0])
        products[1] = a
        return products
    b = design[:, 1]
    products = np.empty((5, len(a)))
    np.multiply(a, a, out=products[0])
    np.multiply(a, b, out=products[1])
    np.multiply(b, b, out=products[2])
    products[3], products[4] = a, b
    return products


def _least_squares(moments, weights) -> np.ndarray | None:
    """The weighted least-squares parameters of design @ p = 1 from its `moments` (the normal
    equations solved in closed form), None where they are degenerate."""
    sums = moments @ weights
    if len(sums) == 2:
        aa, a = sums
        return np.array([a / aa]) if aa > 1e-12 else None
    aa, ab, bb, a, b = sums
    det = aa * bb - ab * ab
    if det <= 1e-9 * aa * bb:
        return None
    return np.array([(bb * a - ab * b) / det, (aa * b - ab * a) / det])


def _robust(design, moments, share) -> np.ndarray | None:
    """The parameters of the relative-error fit, each anchor weighing its `share` of its cell:
    Huber from least squares; where least squares leaves too few cells agreeing, or fewer than
    SURE_SHARE agree with Huber's fit, Huber from RANSAC's hypothesis too, taken where more
    cells agree with it by CLEARER_BY (returns the camera cannot see, a lidar's past the edge
    of a nearer object, pull least squares into a fit that only the far cells agree with);
    None where no hypothesis has agreeing anchors."""
    fitted, agreeing = None, -1.0
    params = _least_squares(moments, share)
    if params is not None and _agreeing_share(design, share, params) >= MIN_INLIER_SHARE:
        fitted = _huber(design, moments, share, params)
        agreeing = _agreeing_share(design, share, fitted)
        if agreeing >= SURE_SHARE:
            return fitted
    hypothesis = _ransac(design, share)
    if hypothesis is None:
        return fitted
    refined = _huber(design, moments, share * _agreeing(design, hypothesis), hypothesis)
    margin = CLEARER_BY if fitted is not None else 0.0
    return refined if _agreeing_share(design, share, refined) > agreeing + margin else fitted


def _agreeing(design, params) -> np.ndarray:
    return np.abs(design @ params - 1.0) < INLIER_RELATIVE_ERROR


def _agreeing_share(design, share, params) -> float:
    """The share of the cells (each anchor its share of its cell) that agree with `params`."""
    return float(share @ _agreeing(design, params)) / float(share.sum())


def _huber(design, moments, allowed, params, rounds: int = HUBER_ROUNDS):
    """Iteratively reweighted least squares from `params` with Huber's weights on the relative
    residuals times each anchor's `allowed` weight (its share of its cell; 0: left out), until
    the parameters settle."""
    used = allowed > 0
    for _ in range(rounds):
        size = np.abs(design @ params - 1.0)
        delta = max(HUBER_K * 1.4826 * median(size[used]), MIN_HUBER_DELTA)
        new = _least_squares(moments, allowed * np.minimum(1.0, delta / np.maximum(size, 1e-12)))
        if new is None:
            return params
        settled = (abs(new - params) <= SETTLED * abs(params) + 1e-12).all()
        params = new
        if settled:
            break
    return params


def _ransac(design, share) -> np.ndarray | None:
    """The hypothesis from minimal samples (seeded: a frame's fit is reproducible) that the
    most cells agree with (each anchor its `share`), every hypothesis at once."""
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
    if n > RANSAC_SCORED:
        scored = _subset(n, RANSAC_SCORED)
        design, share = design[scored], share[scored]
    agreeing = np.abs(hypotheses @ design.T - 1.0) < INLIER_RELATIVE_ERROR  # (rounds, n)
    return hypotheses[int(np.argmax(agreeing @ share))]


def median(values) -> float:
    """np.median of a 1-D array, without its generic machinery (a frame's fit takes several of
    a few dozen values: np.median's overhead was most of their cost)."""
    values = np.array(values)  # a copy: partitioned in place
    n = len(values)
    if n == 0:
        return float("nan")
    half = n // 2
    if n % 2:
        values.partition(half)
        return float(values[half])
    values.partition((half - 1, half))
    return float(0.5 * (values[half - 1] + values[half]))


@functools.lru_cache(maxsize=1024)
def _minimal_samples(n: int, size: int) -> np.ndarray:
    """RANSAC's (RANSAC_ROUNDS, size) anchor indices for `n` anchors, seeded: the same for every
    frame with as many anchors, so drawn once (drawing them took most of a frame's fit)."""
    rng = np.random.default_rng(0)
    picks = np.stack([rng.choice(n, size, replace=False) for _ in range(RANSAC_ROUNDS)])
    picks.flags.writeable = False
    return picks


@functools.lru_cache(maxsize=1024)
def _subset(n: int, size: int) -> np.ndarray:
    """`size` of `n` anchors (seeded, drawn once per count, in order) that score RANSAC's
    hypotheses: a hypothesis's agreement is a share of the cells, and a few hundred anchors tell it
    as well as thousands at a fraction of the cost."""
    subset = np.sort(np.random.default_rng(1).choice(n, size, replace=False))
    subset.flags.writeable = False
    return subset


def _parameter_stds(moments, residuals, weights) -> np.ndarray:
    """The parameters' standard deviations from the residuals of the anchors `weights` keeps
    (each its share of its cell, 0 for those left out: weighted least squares, the cells the
    independent samples); `moments` the design's (_moments)."""
    size = 1 if len(moments) == 2 else 2
    cells = float(weights.sum())
    sums = moments @ weights
    if size == 1:
        aa, ab, bb = sums[0], 0.0, 1.0
    else:
        aa, ab, bb = sums[:3]
    det = aa * bb - ab * ab
    if cells <= size + 1e-9 or det <= 1e-9 * aa * bb:
        return np.full(2, np.inf)
    variance = float(weights @ residuals**2) / (cells - size)
    # The diagonal of the normal matrix's inverse, (bb, aa) / det; one column: 1 / aa.
    stds = np.sqrt(np.array([bb, aa]) / det * variance)
    return stds if size == 2 else np.array([stds[0], 0.0])
