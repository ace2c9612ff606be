"""One camera's metric scale over time, and its application to a DepthResult. NumPy only.

The state is (log s, t) with their variances: the fits' mean, each fit weighing the inverse of
its own variance of log s (a fit that says it knows less moves the state less: a plane of
anchors that spans little depth, outliers left in), its weight halving every half-life
(seconds, from stamps, not arrival). So a state that holds few fits (the first ones, a
restart's) takes the next as a weighted mean does, and a long one of like fits moves by (1 - a)
of a fit, a = 0.5 ** (dt / half-life), as the temporal filter moves a patch. Its variance is
the mixture's (each one's, plus the spread between them), so it never claims more than the fits
show. Between fits the variance grows (DRIFT_PER_HALF_LIFE of log s per half-life, and as much
of the shift relative to the mean depth): a range sensor that goes dark makes depth/std grow
and cloud_max_std thin the clouds. A fit whose depths are off the state's by more than GATE
where its anchors lie (a glass frame, a mirror) leaves the state as it was; only fits that keep
disagreeing for PERSIST_SECONDS, most of them alike (a real change: a new model, a new lens),
restart it, from those fits mixed. A fit after a gap the temporal filter would restart at
begins it again.

Applied, the fitted s d + t moves each bin to s b + t: depth and coarse depth are s d + t, their
std sqrt(s^2 std^2 + d^2 var(s) + var(t)), and `lower_bins` (the bins under the scale's lower
bound, LOWER_BOUND_STDS below) are points/clearing's, so a scale error never clears a real
obstacle. Mode bins adds each bin's own move beyond s b + t (mixed as the shift is): the
distribution over the moved bins is made again from the bin probabilities and upsampled as the
depth step does.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..estimator.temporal_filter import RESTART_AFTER_HALF_LIVES

GATE = 0.1  # depths farther apart than 10 % where the anchors lie: a frame that disagrees
PERSIST_SECONDS = 0.5  # fits that keep disagreeing, most alike, this long: a real change
MIN_LOG_SCALE_STD = 0.01  # a fit's weight is at most 1 / this^2: sensor noise is ~1 %
PENDING_SECONDS = 2 * PERSIST_SECONDS  # how far back disagreeing fits are weighed
DRIFT_PER_HALF_LIFE = 0.05  # std of log s (and of t / depth) gained per half-life unfitted
LOWER_BOUND_STDS = 2.0


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The scale and shift in use, with their stds; `age` seconds since the last fit."""

    scale: float
    shift: float
    log_scale_std: float
    shift_std: float
    age: float
    offsets: tuple = ()  # mode bins: each bin's own move beyond s b + t

    def bins(self, bins: np.ndarray) -> np.ndarray:
        moved = self.scale * np.asarray(bins, np.float64) + self.shift
        return (moved + self._offsets(len(moved))).astype(np.float32)

    def lower_bins(self, bins: np.ndarray) -> np.ndarray:
        """The bins under the scale and shift LOWER_BOUND_STDS below their values."""
        scale = self.scale * np.exp(-LOWER_BOUND_STDS * self.log_scale_std)
        shift = self.shift - LOWER_BOUND_STDS * self.shift_std
        moved = scale * np.asarray(bins, np.float64) + shift
        return (moved + self._offsets(len(moved))).astype(np.float32)

    def _offsets(self, count: int) -> np.ndarray:
        return np.asarray(self.offsets, np.float64) if self.offsets else np.zeros(count)

    def apply(self, result, index: int, upsample=None) -> None:
        """Image `index` of `result` in metres: its depth arrays (those fetched) and bins,
        in place (read-only arrays, Ray's, replaced by copies). With per-bin `offsets` the
        distribution over the moved bins is made again from the grid's bin probabilities, and
        the full-resolution arrays from it by `upsample` (temporal_filter.BilinearUpsampling of
        the grid to the region)."""
        if self.offsets:
            self._apply_moved_bins(result, index, upsample)
            return
        s, t = np.float32(self.scale), np.float32(self.shift)
        var_s = np.float32((self.scale * self.log_scale_std) ** 2)
        var_t = np.float32(self.shift_std**2)
        result.writable(("depth", "depth_std", "coarse_depth", "coarse_std", "image_bins"))
        for depth_name, std_name in (("depth", "depth_std"), ("coarse_depth", "coarse_std")):
            depth, std = getattr(result, depth_name), getattr(result, std_name)
            if depth is None:
                continue
            if std is not None:
                own = std[index]
                np.sqrt(s * s * own * own + depth[index] ** 2 * var_s + var_t, out=own)
            depth[index] = s * depth[index] + t
        result.image_bins[index] = self.bins(_image_bins(result)[index])

    def _apply_moved_bins(self, result, index: int, upsample) -> None:
        """The distribution of image `index` over its moved bins: the grid's depth and std
        from its bin probabilities (the std with the scale and shift's own uncertainty, as
        `apply`'s), the full-resolution ones upsampled from them as the depth step does."""
        result.writable(("depth", "depth_std", "coarse_depth", "coarse_std", "image_bins"))
        moved = self.bins(_image_bins(result)[index])
        probs = result.bin_probs[index]
        mean = np.einsum("khw,k->hw", probs, moved)
        variance = np.einsum("khw,k->hw", probs, moved * moved) - mean * mean
        own = result.coarse_depth[index]  # the model's depth: what var(s) scales
        variance += own * own * np.float32((self.scale * self.log_scale_std) ** 2)
        variance += np.float32(self.shift_std**2)
        np.maximum(variance, 0.0, out=variance)
        result.coarse_depth[index] = mean
        if result.coarse_std is not None:
            np.sqrt(variance, out=result.coarse_std[index])
        top, left, height, width = result.region
        inside = (slice(top, top + height), slice(left, left + width))
        if result.depth is not None:
            upsample(mean, result.depth[index][inside])
        if result.depth_std is not None:
            upsample.std(mean, variance, result.depth_std[index][inside])
        result.image_bins[index] = moved


def _image_bins(result) -> np.ndarray:
    """The result's bins per image (B, K), made from its shared bins where it has none."""
    if result.image_bins is None:
        bins = np.asarray(result.bins, np.float32)
        result.image_bins = np.tile(bins, (len(result.coarse_depth), 1))
    return result.image_bins


@dataclasses.dataclass
class _State:
    log_scale: float
    shift: float
    log_scale_var: float
    shift_var: float
    stamp: float  # of the last fit taken
    depth: float  # the median anchor's depth of the last fit (the shift's yardstick)
    span: tuple  # the model depths (nearest, farthest) its last fit's agreeing anchors had
    offsets: np.ndarray | None  # mode bins: each bin's move beyond s b + t
    weight: float  # the inverse variances of log s of its fits, halved each half-life since


class ScaleTracker:
    """One camera's scale and shift over its frames, in stamp order."""

    def __init__(self):
        self._state = None
        self._pending = []  # (stamp, Fit) of the fits that disagreed, in a row
        self.last_fit = None  # the last frame's Fit, taken or not
        self.rejected = 0  # fits that disagreed with the state and were left out
        self.restarts = 0  # times the state restarted at a change that persisted

    def reset(self) -> None:
        self._state, self._pending = None, []

    def update(self, fit, stamp: float, half_life: float, depth: float) -> None:
        """Take a frame's `fit` (fit.Fit; not fitted: the state only ages), made at `stamp`
        seconds from anchors whose median depth is `depth` metres."""
        self.last_fit = fit
        if not fit.fitted:
            return
        state = self._state
        measured = _State(
            float(np.log(fit.scale)),
            fit.shift,
            fit.log_scale_std**2,
            fit.shift_std**2,
            stamp,
            depth,
            fit.model_span,
            np.asarray(fit.bin_offsets, np.float64) if fit.bin_offsets else None,
            1.0 / max(fit.log_scale_std, MIN_LOG_SCALE_STD) ** 2,
        )
        if state is None:
            self._state, self._pending = measured, []
            return
        if stamp <= state.stamp or stamp - state.stamp > RESTART_AFTER_HALF_LIVES * half_life:
            # A bag's loop, a camera restarted, or a state gone stale (the temporal filter's
            # rule for a gap: no glass frame to guard against, nothing recent to keep): begin
            # again.
            self._state, self._pending = measured, []
            return
        if self._disagrees(measured, state):
            self.rejected += 1
            self._pending.append((stamp, measured))
            # Only the last PENDING_SECONDS count: fits that never agree stay bounded.
            while stamp - self._pending[0][0] > PENDING_SECONDS:
                self._pending.pop(0)
            if stamp - self._pending[0][0] >= PERSIST_SECONDS:
                self._restart(half_life)
            return
        self._pending = []
        self._state = self._mix(state, measured, half_life)

    def _restart(self, half_life: float) -> None:
        """Begin again from the fits that disagreed with the state, in a row, for
        PERSIST_SECONDS, where most of them (three at least) agree with their median and
        their mixture disagrees with the state too (noisy fits of a real change scatter
        around one value; fits that only scatter around the state, or a glass frame and the
        frames beside it, do not): those fits mixed in their order (one frame's fit alone is
        as noisy as a frame)."""
        fits = [fit for _, fit in self._pending]
        middle = sorted(fits, key=lambda fit: fit.log_scale)[len(fits) // 2]
        agreeing = [fit for fit in fits if self._alike(fit, middle)]
        if len(agreeing) < max(3, len(fits) / 2):
            return
        restarted = agreeing[0]
        for later in agreeing[1:]:
            restarted = self._mix(restarted, later, half_life)
        if self._disagrees(restarted, self._state):
            self._state, self._pending = restarted, []
            self.restarts += 1

    def _mix(self, state: _State, measured: _State, half_life: float) -> _State:
        """`state` moved by a later fit `measured` as the module says."""
        held = state.weight * 0.5 ** ((measured.stamp - state.stamp) / half_life)
        keep = held / (held + measured.weight)
        aged = self._aged(state, measured.stamp, half_life)
        gap_log, gap_shift = state.log_scale - measured.log_scale, state.shift - measured.shift
        return _State(
            measured.log_scale + keep * gap_log,
            measured.shift + keep * gap_shift,
            keep * aged[0] + (1 - keep) * measured.log_scale_var + keep * (1 - keep) * gap_log**2,
            keep * aged[1] + (1 - keep) * measured.shift_var + keep * (1 - keep) * gap_shift**2,
            measured.stamp,
            measured.depth,
            measured.span,
            _mixed(state.offsets, measured.offsets, keep),
            held + measured.weight,
        )

    @staticmethod
    def _disagrees(measured: _State, state: _State) -> bool:
        return not ScaleTracker._alike(measured, state)

    @staticmethod
    def _alike(a: _State, b: _State) -> bool:
        """Two scales and shifts that agree where their anchors lie: at the nearest and the
        farthest model depth either fit's agreeing anchors had, the depths they give within
        GATE of each other. Not the scale and the shift each on its own: anchors that span
        little depth tell s m + t there far better than s or t (their fits scatter along
        the line of equal depths), and a glass frame or a new lens moves the depth itself."""
        near, far = min(a.span[0], b.span[0]), max(a.span[1], b.span[1])
        scale_a, scale_b = np.exp(a.log_scale), np.exp(b.log_scale)
        for model in (near, far):
            depth_a, depth_b = scale_a * model + a.shift, scale_b * model + b.shift
            if min(depth_a, depth_b) <= 0 or abs(depth_a - depth_b) > GATE * max(depth_a, depth_b):
                return False
        return True

    @staticmethod
    def _aged(state: _State, stamp: float, half_life: float) -> tuple:
        """The state's variances grown by the time since its last fit."""
        half_lives = max(stamp - state.stamp, 0.0) / half_life
        drift = DRIFT_PER_HALF_LIFE**2 * half_lives
        return state.log_scale_var + drift, state.shift_var + drift * state.depth**2

    def calibration(self, stamp: float, half_life: float) -> Calibration | None:
        """The scale and shift to apply to a frame at `stamp`; None before a first fit."""
        state = self._state
        if state is None:
            return None
        log_var, shift_var = self._aged(state, stamp, half_life)
        return Calibration(
            float(np.exp(state.log_scale)),
            state.shift,
            float(np.sqrt(log_var)),
            float(np.sqrt(shift_var)),
            max(stamp - state.stamp, 0.0),
            () if state.offsets is None else tuple(state.offsets.tolist()),
        )


def _mixed(kept, measured, keep: float):
    """The per-bin offsets mixed as the scale and shift are (`keep` of the state's); a frame
    without them (mode changed) takes the frame's."""
    if kept is None or measured is None or len(kept) != len(measured):
        return measured
    return measured + keep * (kept - measured)
