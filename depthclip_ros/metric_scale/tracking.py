"""One camera's metric scale over time, and its application to a DepthResult. NumPy only.

The state is (log s, t) with their variances, a Kalman filter over the fits in stamp order:
between fits the scale drifts (DRIFT of log s, and as much of the shift relative to the anchors'
depth, per square root of `metric_scale_half_life` seconds of stamps, not of frames), and each
fit moves the state by the gain its variance and the state's give (a fit that says it knows less
moves it less: a plane of anchors that spans little depth, outliers left in). So the state's
std follows what the fits support while they come (fits that each know their scale to 0.5 % at
15 Hz give a state known better than 1 %) and grows when they stop: a range sensor that goes
dark makes depth/std grow and cloud_max_std thin the clouds. Fits that scatter more than their
own stds say weigh less against the drift, and the state's variances are scaled by the fits'
recent normalised innovations where those exceed 1: it never claims more than the fits show.
The shift moves with the scale's gain (fits that span little depth scatter along the line of
equal depths: both move along it together), each with the variance of that estimate.

A fit whose depths are off the state's by more than GATE where its anchors lie (a glass frame,
a mirror) leaves the state as it was; only fits that keep disagreeing for PERSIST_SECONDS, most
of them alike (a real change: a new model, a new lens), restart it, from those fits mixed. A
fit after a gap the temporal filter would restart at begins it again. Stamps that go back (a
bag looped, a simulator's clock reset) keep the state's age: it goes on from the age it had.

Applied, the fitted s d + t moves each bin to s b + t: depth and coarse depth are s d + t, their
std sqrt(s^2 std^2 + d^2 var(s) + var(t)), and `lower_bins` (the bins under the scale's lower
bound, LOWER_BOUND_STDS below) are points/clearing's, so a scale error never clears a real
obstacle. Mode bins adds each bin's own move beyond s b + t (filtered as the scale is, and
kept, ageing, through frames whose fit fell back to a scale): the distribution over the moved
bins is made again from the bin probabilities and upsampled as the depth step does. Every bin
applied is at least MIN_DEPTH and increasing, whatever the state: a published depth is never
negative (REP 118).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..estimator.temporal_filter import RESTART_AFTER_HALF_LIVES
from .projection import MIN_DEPTH

GATE = 0.1  # depths farther apart than 10 % where the anchors lie: a frame that disagrees
PERSIST_SECONDS = 0.5  # fits that keep disagreeing, most alike, this long: a real change
MIN_LOG_SCALE_STD = 0.01  # a fit's std of log s is taken as at least this: sensor noise ~1 %
PENDING_SECONDS = 2 * PERSIST_SECONDS  # how far back disagreeing fits are weighed
DRIFT = 0.01  # std of log s (and of t / depth) the state gains per sqrt(half-life) unfitted
LOWER_BOUND_STDS = 2.0
MIN_BIN_STEP = 1e-3  # metres between two applied bins at least: they stay increasing


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
        return _positive(moved + self._offsets(len(moved)))

    def lower_bins(self, bins: np.ndarray) -> np.ndarray:
        """The bins under the scale and shift LOWER_BOUND_STDS below their values."""
        scale = self.scale * np.exp(-LOWER_BOUND_STDS * self.log_scale_std)
        shift = self.shift - LOWER_BOUND_STDS * self.shift_std
        moved = scale * np.asarray(bins, np.float64) + shift
        return _positive(moved + self._offsets(len(moved)))

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
        own_bins = _image_bins(result)[index]
        # The model's depth is never below its first bin, so s d + t is never below s b0 + t:
        # only a state whose first bin would go below MIN_DEPTH needs its depths held there.
        floor = self.scale * float(own_bins[0]) + self.shift < MIN_DEPTH
        for depth_name, std_name in (("depth", "depth_std"), ("coarse_depth", "coarse_std")):
            depth, std = getattr(result, depth_name), getattr(result, std_name)
            if depth is None:
                continue
            if std is not None:
                own = std[index]
                np.sqrt(s * s * own * own + depth[index] ** 2 * var_s + var_t, out=own)
            depth[index] = s * depth[index] + t
            if floor:
                np.maximum(depth[index], np.float32(MIN_DEPTH), out=depth[index])
        result.image_bins[index] = self.bins(own_bins)

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


def _positive(bins: np.ndarray) -> np.ndarray:
    """Bins in metres from MIN_DEPTH up, each at least MIN_BIN_STEP above the one before
    (float32): a state filtered from fits that each kept their bins positive and increasing
    can still put its first below (log s filtered) or its offsets out of order."""
    bins = np.array(bins, np.float64)
    bins[0] = max(bins[0], MIN_DEPTH)
    for k in range(1, len(bins)):
        bins[k] = max(bins[k], bins[k - 1] + MIN_BIN_STEP)
    return bins.astype(np.float32)


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
    offsets_var: float  # their variance, in log s's units (filtered with the scale's gain)
    scatter: float = 1.0  # the fits' recent normalised innovation (1: as their stds say)
    fits: int = 1  # fits taken since the state began


class ScaleTracker:
    """One camera's scale and shift over its frames, in stamp order."""

    def __init__(self):
        self._state = None
        self._pending = []  # (stamp, _State) of the fits that disagreed, in a row
        self._clock = None  # the stamp of the last frame seen
        self.last_fit = None  # the last frame's Fit, taken or not
        self.rejected = 0  # fits that disagreed with the state and were left out
        self.restarts = 0  # times the state restarted at a change that persisted

    def reset(self) -> None:
        self._state, self._pending, self._clock = None, [], None

    def has_state(self) -> bool:
        """Whether the tracker holds a state (a fit was taken since it began or was reset)."""
        return self._state is not None

    def update(self, fit, stamp: float, half_life: float, depth: float) -> None:
        """Take a frame's `fit` (fit.Fit; not fitted: the state only ages), made at `stamp`
        seconds from anchors whose median depth is `depth` metres."""
        self.last_fit = fit
        self._follow(stamp)
        measured = _measured(fit, stamp, depth)
        if measured is None:
            return
        state = self._state
        if state is None or stamp - state.stamp > RESTART_AFTER_HALF_LIVES * half_life:
            # A camera begun, or a state gone stale (the temporal filter's rule for a gap: no
            # glass frame to guard against, nothing recent to keep): begin again.
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

    def _follow(self, stamp: float) -> None:
        """A frame at `stamp`: where stamps went back, the state (and the disagreeing fits)
        moved back with them, so its age goes on from what it was."""
        if self._clock is not None and stamp < self._clock:
            back = self._clock - stamp
            if self._state is not None:
                self._state = dataclasses.replace(self._state, stamp=self._state.stamp - back)
            self._pending = []
        self._clock = stamp

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
        """`state` moved by a later fit `measured` as the module says. The variances are kept
        in the fits' own units (as their stds say), the drift divided by the fits' scatter:
        the gain is a weighted mean's among fits alike, and smaller against the drift where
        the fits scatter more than they say; `calibration` gives the variances times the
        scatter (_scatter)."""
        log_var, shift_var, offsets_var = self._aged(state, measured.stamp, half_life)
        gain = log_var / (log_var + measured.log_scale_var)
        gap_log = measured.log_scale - state.log_scale
        # The fits' scatter as a mean: of the first fits alike, then of the last half-lives.
        innovation = gap_log**2 / (log_var + measured.log_scale_var)
        since = 0.5 ** ((measured.stamp - state.stamp) / half_life)
        rate = max(1.0 - since, 1.0 / (state.fits + 1))
        offsets, offsets_var = _filtered_offsets(
            state, measured, offsets_var, measured.log_scale_var
        )
        return _State(
            state.log_scale + gain * gap_log,
            state.shift + gain * (measured.shift - state.shift),
            # The variances of these estimates, whatever the gain (Joseph's form).
            (1 - gain) ** 2 * log_var + gain**2 * measured.log_scale_var,
            (1 - gain) ** 2 * shift_var + gain**2 * measured.shift_var,
            measured.stamp,
            measured.depth,
            measured.span,
            offsets,
            offsets_var,
            state.scatter + rate * (innovation - state.scatter),
            state.fits + 1,
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
        """The state's variances (log s, t, the offsets') grown by the time since its last
        fit, in the fits' units (_mix)."""
        drift = DRIFT**2 * max(stamp - state.stamp, 0.0) / half_life / _scatter(state)
        return (
            state.log_scale_var + drift,
            state.shift_var + drift * state.depth**2,
            state.offsets_var + drift,
        )

    def calibration(self, stamp: float, half_life: float) -> Calibration | None:
        """The scale and shift to apply to a frame at `stamp`; None before a first fit."""
        self._follow(stamp)
        state = self._state
        if state is None:
            return None
        log_var, shift_var, _ = (v * _scatter(state) for v in self._aged(state, stamp, half_life))
        return Calibration(
            float(np.exp(state.log_scale)),
            state.shift,
            float(np.sqrt(log_var)),
            float(np.sqrt(shift_var)),
            max(stamp - state.stamp, 0.0),
            () if state.offsets is None else tuple(state.offsets.tolist()),
        )


def _scatter(state: _State) -> float:
    """How much more the fits scatter than their stds say (at least 1): the factor from the
    fits' units to the true variances."""
    return max(1.0, state.scatter)


def _measured(fit, stamp: float, depth: float) -> _State | None:
    """A frame's fit as a state of its own; None where it is no fit or any of its numbers is
    not finite (a state is never made non-finite)."""
    if not fit.fitted:
        return None
    numbers = (fit.scale, fit.shift, fit.log_scale_std, fit.shift_std, depth)
    offsets = np.asarray(fit.bin_offsets, np.float64) if fit.bin_offsets else None
    if not (np.isfinite(numbers).all() and fit.scale > 0):
        return None
    if offsets is not None and not np.isfinite(offsets).all():
        return None
    log_var = max(fit.log_scale_std, MIN_LOG_SCALE_STD) ** 2
    return _State(
        float(np.log(fit.scale)),
        float(fit.shift),
        log_var,
        float(fit.shift_std) ** 2,
        stamp,
        float(depth),
        fit.model_span,
        offsets,
        log_var if offsets is not None else np.inf,
    )


def _filtered_offsets(state: _State, measured: _State, offsets_var: float, fit_var: float):
    """(the per-bin offsets, their variance) after `measured`: filtered as the scale is where
    both have them; kept, ageing, where the fit has none (a frame of mode bins whose anchors lay
    at one depth fell back to a scale); the fit's where the state has none or other bins."""
    kept, new = state.offsets, measured.offsets
    if new is None:
        return kept, offsets_var
    if kept is None or len(kept) != len(new):
        return new, measured.offsets_var
    gain = offsets_var / (offsets_var + fit_var)
    return kept + gain * (new - kept), (1 - gain) ** 2 * offsets_var + gain**2 * fit_var
