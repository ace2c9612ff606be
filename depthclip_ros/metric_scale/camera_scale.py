"""One camera's metric_scale, the per-frame rule the node, depthclip-bag and depthclip-fleet
apply alike after the temporal filter: the frame's anchors (already in the camera's optical
frame) fitted to its coarse depth, the fit tracked over the camera's stamps, the tracked scale
applied to the result. NumPy only.

Applied after the temporal filter, to its fused distribution: the filter fuses the model's
distributions (a new scale restarts nothing), and the calibration moves the bins of what it
fused.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..estimator.temporal_filter import BilinearUpsampling
from ..messages.outputs import arrays_for
from ..runtime.health import ERROR, WARN
from .fit import fit, median
from .projection import project
from .tracking import ScaleTracker

FITTED_FROM = ("coarse_depth", "coarse_std")  # what a prediction brings while fitting


def fitted_from(settings) -> tuple:
    """The DepthResult arrays the fit needs under `settings` (mode bins: the bin
    probabilities too, which it samples and moves the bins of)."""
    if settings.metric_scale == "off":
        return ()
    return FITTED_FROM + (("bin_probs",) if settings.metric_scale == "bins" else ())


def arrays_to_fetch(wanted, settings) -> tuple:
    """The DepthResult arrays a frame fetches (the node's and the bag tool's rule): those of its
    `wanted` outputs, and what the fit samples (the grid; the std takes the fit's error)."""
    return arrays_for(wanted, settings, also=fitted_from(settings))


def ground_mount(settings) -> tuple | None:
    """The camera's height and pitch over the floor where the source ground is on, else None."""
    if "ground" not in settings.metric_scale_sources:
        return None
    return settings.ground_height, settings.ground_pitch


class CameraScale:
    """A camera's tracked scale and what its last frames said (diagnostics)."""

    def __init__(self):
        self.tracker = ScaleTracker()
        self.calibration = None  # the Calibration applied to the last frame, if any
        self.reason = ""  # why the last frame was not fitted ("" when it was)
        self.anchors = 0  # the last frame's anchors received
        self._key = None  # the head and geometry the tracked scale belongs to
        self._ground = None  # the ground's mount the tracked scale was last fitted with
        self.restarted = False  # the state was dropped (a new head, mount or range) since a fit
        # The last frame's seconds: projection, fit and filter; the application to the result.
        self.seconds = {"fit": 0.0, "application": 0.0}
        self._upsampling = None  # (grid, size, BilinearUpsampling) of mode bins' last frame
        self.moved_bins = ()  # mode bins: the last frame's bins in metres

    def reset(self) -> None:
        self.tracker.reset()
        self.calibration, self._key, self._ground = None, None, None
        self.restarted = False

    def _restart(self) -> None:
        """The tracked state dropped while on: said so until the next fit."""
        self.restarted = self.restarted or self.tracker.has_state()
        self.tracker.reset()
        self._ground = None

    def apply(self, result, index: int, anchors, k, stamp: float, settings, problems=()):
        """Image `index` of `result` calibrated in place by the camera's scale (under
        `settings`: OutputSettings) after fitting `anchors` ((N, 3) in the optical frame; K
        (3, 3) the image's; `problems`: why sources gave nothing, each one line). Returns the
        Calibration applied, None while the camera has none (then the result is as the model
        made it)."""
        if settings.metric_scale == "off":
            self.reset()
            return None
        started = time.perf_counter()
        if result.coarse_depth is None:
            raise ValueError("metric_scale fits the grid's depth: predict was not asked for it")
        # A new head (bins, prompts, temperature) or geometry is another model's scale; a new
        # mount (static_transforms, the ground's height or pitch while it is a source) says the
        # anchors the state was fitted to were placed wrong: none of them is evidence any
        # more. A source turned on or off is not a new mount.
        heads = result.head_keys
        key = (
            heads[index] if heads else None,
            tuple(result.region),
            result.coarse_depth.shape,
            tuple(settings.static_transforms),
        )
        ground = ground_mount(settings)
        if key != self._key or ground is not None and self._ground not in (None, ground):
            self._restart()
            self._key = key
        if ground is not None:
            self._ground = ground
        anchors = np.asarray(anchors, np.float64).reshape(-1, 3)
        self.anchors = len(anchors)
        frame_fit = None
        moves_bins = settings.metric_scale == "bins"
        if moves_bins and result.bin_probs is None:
            raise ValueError("metric_scale bins samples bin_probs: predict was not asked for them")
        if len(anchors) and k is not None:
            bins = result.bins_of(index)
            probs = result.bin_probs[index] if moves_bins else None
            projection = project(
                anchors, k, result.region, result.coarse_depth[index], bins, probs
            )
            frame_fit = fit(
                projection,
                settings.metric_scale,
                settings.metric_scale_min_anchors,
                (settings.metric_scale_min, settings.metric_scale_max),
                bins,
            )
            depth = median(projection.z) if len(projection.z) else 1.0
            self.tracker.update(frame_fit, stamp, settings.metric_scale_half_life, depth)
        if frame_fit is None:
            self.reason = "; ".join(problems) or (
                "no camera_info for the image" if k is None else "no anchors near the stamp"
            )
        else:
            self.reason = frame_fit.reason if not frame_fit.fitted else ""
        calibration = self.tracker.calibration(stamp, settings.metric_scale_half_life)
        lowest, highest = settings.metric_scale_min, settings.metric_scale_max
        if calibration is not None and not lowest <= calibration.scale <= highest:
            # The range changed under the tracked scale: it is no longer one to apply.
            self.reason = (
                f"tracked scale {calibration.scale:.3g} outside [{lowest:g}, {highest:g}]: "
                "restarted"
            )
            self._restart()
            calibration = None
        if calibration is not None:
            self.restarted = False
        if calibration is not None and calibration.offsets and not moves_bins:
            # Left from mode bins until a fit in the new mode replaces them: the frame has no
            # bin probabilities to move its bins with.
            calibration = dataclasses.replace(calibration, offsets=())
        self.calibration = calibration
        fitted = time.perf_counter()
        self.seconds = {"fit": fitted - started, "application": 0.0}
        if calibration is None:
            return None
        if result.clearing_bins is None:  # each image's own bins (a scene's), before any moves
            count = len(result.coarse_depth)
            result.clearing_bins = np.stack(
                [np.asarray(result.bins_of(i), np.float32) for i in range(count)]
            )
        result.clearing_bins[index] = calibration.lower_bins(result.bins_of(index))
        calibration.apply(result, index, self._upsample(result) if calibration.offsets else None)
        self.moved_bins = tuple(result.bins_of(index).tolist()) if calibration.offsets else ()
        self.seconds["application"] = time.perf_counter() - fitted
        return calibration

    def _upsample(self, result) -> BilinearUpsampling:
        """The depth step's upsampling of the result's grid to its region, made once a size."""
        key = (result.coarse_depth.shape[1:], tuple(result.region[2:]))
        if self._upsampling is None or self._upsampling[0] != key:
            self._upsampling = (key, BilinearUpsampling(*key))
        return self._upsampling[1]

    def withholds_clouds(self, settings) -> bool:
        """metric_scale_require: no clouds (the depth goes out) until a first fit."""
        return (
            settings.metric_scale != "off"
            and settings.metric_scale_require
            and (self.calibration is None)
        )

    def verdict(self, settings) -> tuple | None:
        """(level, message) of the health module's levels where the scale is at fault: ERROR
        while on and never fitted (after a frame), WARN when the fit in use is older than
        metric_scale_max_age; None when fine."""
        if settings.metric_scale == "off" or self.tracker.last_fit is None and not self.reason:
            return None
        if self.calibration is None:
            since = "not fitted since a restart" if self.restarted else "never fitted"
            return ERROR, f"metric_scale {since}: {self.reason or 'no fit yet'}"
        if self.calibration.age > settings.metric_scale_max_age:
            return WARN, (
                f"metric_scale fit {self.calibration.age:.1f} s old: {self.reason or 'no fit'}"
            )
        return None

    def words(self, settings) -> dict:
        """The camera's metric_scale in diagnostics' key-value words."""
        last = self.tracker.last_fit
        values = {"metric scale mode": settings.metric_scale}
        c = self.calibration
        if c is not None:
            values["metric scale"] = f"{c.scale:.4g} (log std {c.log_scale_std:.3g})"
            values["metric shift (m)"] = f"{c.shift:.3g} (std {c.shift_std:.3g})"
            values["metric fit age (s)"] = f"{c.age:.2f}"
            if self.moved_bins:
                values["metric bins (m)"] = ", ".join(f"{b:.3g}" for b in self.moved_bins)
        if last is not None:
            values["metric anchors received / in image / used (cells) / inliers"] = (
                f"{last.received} / {last.in_image} / {last.used} ({last.cells}) / {last.inliers}"
            )
            values["metric median relative residual"] = f"{last.residual_median:.3g}"
            if last.fitted:  # the mode fitted, and why it is not the one asked for
                why = f" ({last.reason})" if last.reason else ""
                values["metric last fit"] = last.mode + why
        values["metric fits rejected / restarts"] = (
            f"{self.tracker.rejected} / {self.tracker.restarts}"
        )
        values["metric last reason not fitted"] = self.reason or "-"
        values["metric last frame, fit / application (ms)"] = (
            f"{self.seconds['fit'] * 1e3:.2f} / {self.seconds['application'] * 1e3:.2f}"
        )
        return values
