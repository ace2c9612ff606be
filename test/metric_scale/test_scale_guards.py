"""metric_scale's guards: what no input may do to the published numbers (a state made NaN, a
depth made negative), the tracked state's variance over time, stamps that go back, the per-bin
offsets through fallback frames, and the changes of parameters that must and must not restart
the state. Known inputs, known answers; each of these failed on the release before."""

import dataclasses

import numpy as np
import pytest
from test_metric_scale import BINS, GRID, REGION, K, cell_points, smooth_result

from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.metric_scale import fit, tracking
from depthclip_ros.metric_scale.camera_scale import CameraScale
from depthclip_ros.metric_scale.projection import project
from depthclip_ros.runtime.health import ERROR, WARN


def scattered_points(count=10, seed=0):
    """`count` anchors in `count` cells of a wall the model puts at 2 m, their depths 2 m
    times ratios each more than 10 % from the others (a mount given wrong)."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(GRID[0] * GRID[1], count, replace=False)
    rows, cols = np.divmod(cells, GRID[1])
    u = cols * (639 / (GRID[1] - 1))
    v = rows * (479 / (GRID[0] - 1))
    z = 2.0 * 1.25 ** np.arange(count)  # each ratio 25 % from the next
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], -1)


def still_fit(scale, std):
    """A frame's fit in mode scale of a view the model puts at 1-3 m."""
    return fit.Fit("scale", scale, 0.0, std, 0.0, 100, 100, 90, 85, 0.01, model_span=(1, 3))


def fitted_camera(settings, scale=1.5, stamp=0.0) -> CameraScale:
    """A camera whose first frame was fitted to anchors `scale` times the model's depth."""
    grid = smooth_result(with_probs=False).coarse_depth[0].astype(np.float64)
    camera = CameraScale()
    anchors = cell_points(scale * np.kron(grid, np.ones((32, 32))))
    camera.apply(smooth_result(with_probs=False), 0, anchors, K, stamp, settings)
    return camera


@pytest.mark.parametrize("mode", ["scale", "scale_shift"])
def test_anchors_no_fit_agrees_with_are_no_fit_and_never_make_the_state_nan(mode):
    """Ten anchors in ten cells whose ratios to the model are each 25 % apart: refused with the
    reason; two such frames, then clean anchors at 1.5 times the model: the state is the clean
    scale and every number finite."""
    coarse = np.full(GRID, 2.0)
    scattered = project(scattered_points(), K, REGION, coarse, BINS)
    refused = fit.fit(scattered, mode, 8, (0.2, 50.0))
    assert not refused.fitted
    assert refused.reason.startswith("anchors in ") and "cells agree with a fit" in refused.reason
    tracker = tracking.ScaleTracker()
    for frame in range(2):
        tracker.update(refused, frame / 15, 2.0, 3.0)
    # Fits that the old rule took: as few agreeing cells as parameters, an infinite std.
    infinite = dataclasses.replace(refused, scale=1.2, shift=0.0, log_scale_std=np.inf)
    tracker.update(infinite, 2 / 15, 2.0, 3.0)
    tracker.update(infinite, 3 / 15, 2.0, 3.0)
    assert tracker.calibration(3 / 15, 2.0) is None
    wall = np.full((480, 640), 3.0)
    clean = project(cell_points(wall), K, REGION, coarse, BINS)
    for frame in range(4, 12):
        tracker.update(fit.fit(clean, "scale", 8, (0.2, 50.0)), frame / 15, 2.0, 3.0)
    state = tracker.calibration(12 / 15, 2.0)
    assert state.scale == pytest.approx(1.5, rel=1e-6)
    assert np.isfinite([state.scale, state.shift, state.log_scale_std, state.shift_std]).all()


def test_a_fit_that_would_put_the_nearest_bin_below_zero_holds_it_at_the_least_depth():
    """A wall the model puts at 1.6-2.4 m whose truth is five times that less 6 m (2-6 m): the
    scale and shift that fit it freely (5, -6) put the bins from 1 m at -1 m, and a pixel the
    model puts at 1.1 m at -0.5 m; the fit holds the first bin at MIN_DEPTH instead (a scale in
    s (m - b0)), says so, and every bin and depth it gives is positive."""
    model = np.tile(np.linspace(1.6, 2.4, GRID[1]), (GRID[0], 1))
    truth = 5.0 * model - 6.0
    full = np.kron(truth, np.ones((32, 32)))
    bins = np.linspace(1.0, 3.0, 8)
    projection = project(cell_points(full), K, REGION, model, bins)
    free = fit.fit(projection, "scale_shift", 8, (0.2, 50.0))
    assert free.scale == pytest.approx(5.0, rel=1e-3)  # without the bins, the free fit
    assert free.scale * 1.1 + free.shift < 0
    for mode in ("scale_shift", "bins"):
        probs = None
        if mode == "bins":  # each cell's model depth between its two bins
            probs = np.zeros((len(bins),) + GRID)
            at = np.searchsorted(bins, model) - 1
            share = (model - bins[at]) / (bins[at + 1] - bins[at])
            rows, cols = np.indices(GRID)
            probs[at, rows, cols], probs[at + 1, rows, cols] = 1 - share, share
        projection = project(cell_points(full), K, REGION, model, bins, probs)
        held = fit.fit(projection, mode, 8, (0.2, 50.0), bins)
        assert held.fitted and held.reason == "nearest bin held at 0.05 m", mode
        moved = held.scale * bins + held.shift + np.asarray(held.bin_offsets or 0.0)
        assert moved[0] >= fit.MIN_DEPTH - 1e-9 and (np.diff(moved) > 0).all(), mode
        assert held.scale * (1.1 - bins[0]) + fit.MIN_DEPTH > 0
        # As uncertain as the bound's move of that bin (1.05 m): clearing's lower bound has it.
        assert held.shift_std >= fit.MIN_DEPTH - (free.scale * bins[0] + free.shift) - 1e-9
        assert np.isfinite([held.log_scale_std, held.shift_std]).all()


def test_a_tracked_state_never_publishes_a_negative_depth():
    """Two fits that each keep their bins positive (s 5, t -6 over bins from 1.3 m; s 1, t 0),
    mixed in log s, put the first bin at -0.09 m: the depth, its grid and the bins applied are
    all at least MIN_DEPTH and increasing, the std finite."""
    calibration = tracking.Calibration(np.sqrt(5.0), -3.0, 0.01, 0.05, 0.0)
    bins = np.linspace(1.3, 3.0, 8)
    assert calibration.scale * bins[0] + calibration.shift < 0
    result = smooth_result(with_probs=False)
    result.bins = bins.astype(np.float32)
    result.coarse_depth[:] = np.float32(1.3)  # where the model sits at its first bin
    calibration.apply(result, 0)
    assert (result.coarse_depth >= fit.MIN_DEPTH).all()
    assert np.isfinite(result.coarse_std).all()
    applied = result.bins_of(0)
    assert applied[0] >= fit.MIN_DEPTH and (np.diff(applied) > 0).all()
    lower = calibration.lower_bins(bins)
    assert lower[0] >= fit.MIN_DEPTH and (np.diff(lower) > 0).all()


def test_moved_bins_stay_increasing_whatever_the_offsets():
    calibration = tracking.Calibration(1.0, 0.0, 0.01, 0.0, 0.0, (0.0, 0.5, -0.6, 0.0))
    bins = np.array([1.0, 2.0, 3.0, 4.0])
    for moved in (calibration.bins(bins), calibration.lower_bins(bins)):
        assert (np.diff(moved) > 0).all(), moved


def test_a_still_views_state_knows_its_scale_as_well_as_its_fits_and_grows_without_them():
    """Fits of std 0.5 % at 15 Hz (the default 2 s half-life): the tracked std of log s is
    below 0.01 after 5 s (the fits support it; each frame's drift is per second of stamps),
    and 2 s without fits at least doubles it."""
    tracker = tracking.ScaleTracker()
    rng = np.random.default_rng(0)
    for frame in range(75):
        scale = 1.5 * np.exp(rng.normal(0, 0.005))
        tracker.update(still_fit(scale, 0.005), frame / 15, 2.0, 3.0)
    settled = tracker.calibration(74 / 15, 2.0)
    assert settled.log_scale_std < 0.01
    assert np.log(settled.scale / 1.5) == pytest.approx(0.0, abs=0.01)
    dark = tracker.calibration(74 / 15 + 2.0, 2.0)
    assert dark.log_scale_std >= 2 * settled.log_scale_std


@pytest.mark.parametrize("scatter, claimed", [(0.05, 0.01), (0.02, 0.01), (0.005, 0.005)])
def test_the_states_std_covers_its_error_when_fits_scatter_more_than_they_say(scatter, claimed):
    """Fits that claim `claimed` and scatter `scatter` (log s), 4 s at 15 Hz, 100 runs: the
    state's std is at least the spread of its error over the runs (it never claims more than
    the fits show)."""
    errors, stds = [], []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        tracker = tracking.ScaleTracker()
        for frame in range(60):
            scale = np.exp(rng.normal(0, scatter))
            one = fit.Fit(
                "scale", scale, 0.0, claimed, 0.0, 100, 100, 90, 85, 0.01, model_span=(1, 3)
            )
            tracker.update(one, frame / 15, 2.0, 3.0)
        state = tracker.calibration(59 / 15, 2.0)
        errors.append(np.log(state.scale))
        stds.append(state.log_scale_std)
    assert np.mean(stds) >= np.std(errors)


def test_stamps_that_go_back_without_a_fit_keep_ageing_the_state():
    """A bag looped (stamps back to the start) with no fit after: the fit's age goes on from
    the age it had, and its std grows; diagnostics WARN once it passes metric_scale_max_age."""
    tracker = tracking.ScaleTracker()
    tracker.update(still_fit(1.5, 0.005), 10.0, 2.0, 3.0)
    assert tracker.calibration(10.5, 2.0).age == pytest.approx(0.5)
    looped = [tracker.calibration(stamp, 2.0) for stamp in (0.0, 1.0, 3.0)]
    assert [c.age for c in looped] == pytest.approx([0.5, 1.5, 3.5])
    assert looped[0].log_scale_std < looped[1].log_scale_std < looped[2].log_scale_std

    settings = OutputSettings(metric_scale="scale", metric_scale_min_anchors=8)
    camera = fitted_camera(settings, stamp=10.0)
    for stamp in (0.0, 1.0, 2.5):  # looped: no anchors
        camera.apply(smooth_result(with_probs=False), 0, np.empty((0, 3)), K, stamp, settings)
    level, words = camera.verdict(settings)
    assert level == WARN and words.startswith("metric_scale fit 2.5 s old")


def bins_fit(scale, offsets, stamp_mode="bins"):
    return fit.Fit(
        stamp_mode, scale, 0.0, 0.005, 0.005, 100, 100, 90, 85, 0.01,
        bin_offsets=offsets, model_span=(1.0, 3.0),
    )  # fmt: skip


def test_a_fallback_frame_keeps_the_tracked_bins_and_the_next_bins_fit_is_filtered():
    """Mode bins: a frame whose anchors lay at one depth (fitted as a scale alone) keeps the
    tracked per-bin offsets; the next frame's offsets are filtered into them, not taken whole."""
    tracker = tracking.ScaleTracker()
    for frame in range(30):
        tracker.update(bins_fit(1.0, (0.0, 0.2, -0.1)), frame / 15, 2.0, 3.0)
    fallback = dataclasses.replace(bins_fit(1.0, ()), mode="scale", reason="anchors at one depth")
    tracker.update(fallback, 2.0, 2.0, 3.0)
    np.testing.assert_allclose(tracker.calibration(2.0, 2.0).offsets, (0.0, 0.2, -0.1))
    tracker.update(bins_fit(1.0, (0.1, 0.3, 0.0)), 2.0 + 1 / 15, 2.0, 3.0)
    offsets = np.array(tracker.calibration(2.0 + 1 / 15, 2.0).offsets)
    assert (offsets > (0.0, 0.2, -0.1)).all() and (offsets < (0.05, 0.25, -0.05)).all()


def test_turning_the_ground_on_or_off_keeps_the_state_where_a_new_ground_mount_restarts_it():
    """docs/metric_scale.md: a change of sources never restarts the state; a new mount does."""
    settings = OutputSettings(metric_scale="scale", metric_scale_min_anchors=8)
    with_ground = dataclasses.replace(
        settings, metric_scale_sources=("scan", "ground"), ground_height=1.0
    )
    camera = fitted_camera(settings)
    sequence = [(with_ground, True), (settings, True), (with_ground, True)]
    sequence += [(dataclasses.replace(with_ground, ground_height=1.2), False)]
    for stamp, (changed, kept) in enumerate(sequence, start=1):
        calibration = camera.apply(
            smooth_result(with_probs=False), 0, np.empty((0, 3)), K, stamp / 15, changed
        )
        assert (calibration is not None) == kept, (stamp, changed)


def test_a_scale_max_lowered_below_the_tracked_scale_takes_effect_at_the_next_frame():
    settings = OutputSettings(metric_scale="scale", metric_scale_min_anchors=8)
    camera = fitted_camera(settings)
    lowered = dataclasses.replace(settings, metric_scale_max=1.2)
    frame = smooth_result(with_probs=False)
    assert camera.apply(frame, 0, np.empty((0, 3)), K, 1 / 15, lowered) is None
    np.testing.assert_array_equal(frame.coarse_depth, smooth_result().coarse_depth)
    assert camera.reason == "tracked scale 1.5 outside [0.2, 1.2]: restarted"


def test_after_a_reset_the_diagnostics_say_not_fitted_since_it_not_never():
    settings = OutputSettings(metric_scale="scale", metric_scale_min_anchors=8)
    camera = fitted_camera(settings)
    assert camera.verdict(settings) is None
    moved = dataclasses.replace(settings, static_transforms=("0 0 0.1 0 0 0 laser camera",))
    camera.apply(smooth_result(with_probs=False), 0, np.empty((0, 3)), K, 1 / 15, moved)
    level, words = camera.verdict(moved)
    assert level == ERROR and words.startswith("metric_scale not fitted since a restart")
    fresh = CameraScale()
    fresh.apply(smooth_result(with_probs=False), 0, np.empty((0, 3)), K, 0.0, settings)
    assert fresh.verdict(settings)[1].startswith("metric_scale never fitted")


def test_nothing_published_is_negative_or_nan_where_the_model_was_finite():
    """Random fits (scales across their range, shifts either way, stds from 0 to inf, NaN
    among them), random stamps forwards and back: every calibrated depth, std and bin is
    finite, and every depth and bin at least MIN_DEPTH."""
    rng = np.random.default_rng(3)
    tracker = tracking.ScaleTracker()
    bins = np.linspace(1.0, 3.0, 8)
    stamp = 0.0
    for _ in range(400):
        stamp += rng.choice([1 / 15, -3.0, 0.0, 5.0], p=[0.85, 0.05, 0.05, 0.05])
        std = rng.choice([0.0, 0.005, 0.2, np.inf, np.nan])
        one = fit.Fit(
            "scale_shift", float(np.exp(rng.uniform(-1.6, 1.6))), float(rng.uniform(-3, 3)),
            std, std, 100, 100, 90, 85, 0.01, model_span=(1.0, 3.0),
        )  # fmt: skip
        tracker.update(one, stamp, 2.0, 3.0)
        calibration = tracker.calibration(stamp, 2.0)
        if calibration is None:
            continue
        result = smooth_result(with_probs=False)
        result.bins = bins.astype(np.float32)
        calibration.apply(result, 0)
        for values in (result.coarse_depth, result.coarse_std, result.bins_of(0)):
            assert np.isfinite(values).all()
        assert (result.coarse_depth >= fit.MIN_DEPTH).all()
        assert (result.bins_of(0) >= fit.MIN_DEPTH).all()
        assert (calibration.lower_bins(bins) >= fit.MIN_DEPTH).all()


def test_a_depth_image_in_another_frame_than_the_images_is_refused_with_its_reason():
    from helpers import camera_info
    from helpers import stamp as stamped

    from depthclip_ros.metric_scale.range_sources import RangeSources

    sources = RangeSources()
    settings = OutputSettings(
        metric_scale="scale", metric_scale_sources=("depth",), metric_scale_min_anchors=8
    )
    wall = np.full((480, 640), 3.0, np.float32)
    msg = depth_msg(wall, "depth_optical_frame")
    sources.add("depth", stamped(msg, 1, 0, frame="depth_optical_frame"))
    header = stamped(depth_msg(wall, "camera_optical_frame"), 1, 0).header
    header.frame_id = "camera_optical_frame"
    points, _, problems = sources.anchors(
        header, camera_info(640, 480, K[0, 0], K[1, 1], K[0, 2], K[1, 2]), (480, 640), settings
    )
    assert len(points) == 0
    assert problems == [
        "a depth image in frame 'depth_optical_frame' for an image in 'camera_optical_frame': "
        "metric_scale's depth must be registered to the camera (its frame_id)"
    ]
    sources.add("depth", stamped(depth_msg(wall, ""), 1, 0, frame="camera_optical_frame"))
    points, _, problems = sources.anchors(
        header, camera_info(640, 480, K[0, 0], K[1, 1], K[0, 2], K[1, 2]), (480, 640), settings
    )
    assert problems == [] and np.allclose(points[:, 2], 3.0)


def depth_msg(depth, frame):
    from sensor_msgs.msg import Image

    return Image(
        height=depth.shape[0],
        width=depth.shape[1],
        encoding="32FC1",
        step=4 * depth.shape[1],
        data=depth.astype("<f4").tobytes(),
        header=Image().header.__class__(frame_id=frame),
    )


def test_one_rule_decides_a_frames_scan_from_stamps_and_arrivals():
    """docs/metric_scale.md's rule: the scan nearest the image's stamp within the slop, of
    those arrived before the first scan stamped at or after the image's, or before the slop
    after the image arrived. Scans at 0.00 and 0.10 s, an image at 0.06 s arrived at 0.065 s:
    the 0.10 scan arrived at 0.11 s is taken (and decides it: a 0.12 scan after is not); arrived
    at 0.12 s, past the deadline (0.115 s), it is not, and the frame has no scan within 0.05 s."""
    from helpers import stamp as stamped
    from sensor_msgs.msg import Image, LaserScan

    from depthclip_ros.metric_scale.range_sources import RangeSources

    settings = OutputSettings(metric_scale="scale", metric_scale_sources=("scan",))

    def scan(seconds, metres):
        msg = LaserScan(angle_min=-0.1, angle_increment=0.1, range_min=0.1, range_max=10.0)
        msg.ranges = [metres] * 3
        return stamped(msg, 100, int(seconds * 1e9), frame="cam")

    header = stamped(Image(), 100, 60_000_000, frame="cam").header
    image_ns = 100 * 10**9 + 60_000_000
    for arrival, expected in ((100.11, 2.0), (100.12, None)):
        sources = RangeSources()
        sources.add("scan", scan(0.0, 5.0), arrival=100.03)
        sources.expect("cam", image_ns, arrival=100.065, slop=0.05)
        assert not sources.settled("cam", image_ns, 100.07)
        sources.add("scan", scan(0.10, 2.0), arrival=arrival)
        sources.add("scan", scan(0.07, 3.0), arrival=arrival + 0.001)  # nearer, too late
        assert sources.settled("cam", image_ns, 100.116)
        points, _, problems = sources.anchors(header, None, (480, 640), settings, "cam")
        if expected is None:
            assert problems == ["no scan within 0.05 s"] and len(points) == 0
        else:
            assert problems == [] and np.allclose(np.linalg.norm(points, axis=1), expected)
    waiter = RangeSources()
    waiter.expect("cam", image_ns, arrival=100.065, slop=0.05)
    clock = iter(np.arange(100.065, 101.0, 0.01))
    waiter.wait("cam", image_ns, ["scan"], lambda: float(next(clock)))  # no scan: gives up
    assert next(clock) > 100.115  # at the deadline on the arrival clock, not before
    waiter.add("scan", scan(0.06, 1.0), arrival=100.2)
    points, _, problems = waiter.anchors(header, None, (480, 640), settings, "cam")
    assert problems == ["no scan within 0.05 s"]  # arrived past the deadline: not taken
