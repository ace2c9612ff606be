"""temporal_filter: the fused depth, std and probabilities are those of the exponential mixture
of the frames' bin distributions (computed here independently, per pixel), a changed patch
starts again, the whole state restarts where it must, and the std is the mixture's."""

import numpy as np
import pytest

from depthclip_ros.config.parameters import DepthClipConfig, OutputSettings
from depthclip_ros.estimator.result import DepthResult
from depthclip_ros.estimator.temporal_filter import (
    RESTART_AFTER_HALF_LIVES,
    TemporalFilter,
    nearest_cells,
    patch_colours,
)

BINS = np.array([1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0], np.float32)
CONFIG = DepthClipConfig(model="RN50", input_width=128, input_height=96)  # a 3 x 4 grid
GRID = (3, 4)
SIZE = (48, 64)  # the camera's images
MIXTURE = OutputSettings(temporal_filter="mixture", temporal_half_life=0.5)


def distributions(seed: int, shape=GRID) -> np.ndarray:
    """(K, h, w) random bin distributions."""
    logits = np.random.default_rng(seed).normal(size=(len(BINS), *shape))
    p = np.exp(logits)
    return (p / p.sum(axis=0)).astype(np.float32)


def moments(p: np.ndarray) -> tuple:
    """(mean, std) over the bins of distributions (K, ...), in float64."""
    b = BINS.astype(np.float64).reshape(-1, *([1] * (p.ndim - 1)))
    mean = (p * b).sum(axis=0)
    return mean, np.sqrt(np.maximum((p * b * b).sum(axis=0) - mean**2, 0.0))


def fine_distributions(p: np.ndarray) -> np.ndarray:
    """(K, H, W): each pixel takes its nearest cell's distribution (what the depth step's
    upsampling gives at the cells' own pixels; enough for a known answer)."""
    rows, cols = nearest_cells((0, 0, *SIZE), GRID)
    return p[:, rows][:, :, cols]


def result_of(p: np.ndarray) -> DepthResult:
    """A DepthResult whose every array is the distribution `p`'s (one image)."""
    fine = fine_distributions(p)
    depth, std = moments(fine)
    coarse_depth, coarse_std = moments(p)
    return DepthResult(
        depth=depth[None].astype(np.float32),
        depth_std=std[None].astype(np.float32),
        coarse_depth=coarse_depth[None].astype(np.float32),
        coarse_std=coarse_std[None].astype(np.float32),
        bin_probs=p[None].copy(),
        bins=BINS,
        region=(0, 0, *SIZE),
    )


def still_image(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 200, (*SIZE, 3), dtype=np.uint8)


def assert_is_mixture(result, probs, weights):
    """`result` holds the mixture sum w_i p_i (weights summing to 1), per pixel and per cell."""
    mixed = sum(w * p.astype(np.float64) for w, p in zip(weights, probs))
    np.testing.assert_allclose(result.bin_probs[0], mixed, atol=1e-6)
    depth, std = moments(fine_distributions(mixed))
    np.testing.assert_allclose(result.depth[0], depth, atol=1e-5)
    np.testing.assert_allclose(result.depth_std[0], std, atol=1e-4)
    coarse_depth, coarse_std = moments(mixed)
    np.testing.assert_allclose(result.coarse_depth[0], coarse_depth, atol=1e-5)
    np.testing.assert_allclose(result.coarse_std[0], coarse_std, atol=1e-4)


def mixture_weights(stamps, half_life) -> list:
    """The exponential mixture's weights of frames at `stamps` after the last one."""
    weights = [1.0]
    for previous, now in zip(stamps, stamps[1:]):
        keep = 0.5 ** ((now - previous) / half_life)
        weights = [w * keep for w in weights] + [1.0 - keep]
    return weights


def test_a_still_camera_gets_the_mixture_of_its_frames_by_their_stamps():
    """Frames at 0, 0.1, 0.3 (one dropped), 0.35 s: each output is the mixture of the frames
    so far, weighted by the time since each, whatever the frame count."""
    image, stamps = still_image(), [10.0, 10.1, 10.3, 10.35]
    probs = [distributions(seed) for seed in range(len(stamps))]
    temporal = TemporalFilter()
    for n, (stamp, p) in enumerate(zip(stamps, probs), start=1):
        result = result_of(p)
        temporal.apply(result, 0, image, stamp, MIXTURE, CONFIG)
        assert_is_mixture(result, probs[:n], mixture_weights(stamps[:n], 0.5))
    assert temporal.changed_share == 0.0 and sum(temporal.restarts.values()) == 0


def test_the_fused_std_is_the_mixtures_not_shrunk_by_the_frame_count():
    """std^2 = the weighted mean of the frames' variances + the weighted variance of their
    depths (the law of total variance), so it is never below the frames' own spread."""
    image, stamps = still_image(), [0.0, 0.1, 0.2, 0.3, 0.4]
    probs = [distributions(seed) for seed in range(len(stamps))]
    temporal = TemporalFilter()
    frames = []
    for stamp, p in zip(stamps, probs):
        result = result_of(p)
        frames.append((result.coarse_depth[0].copy(), result.coarse_std[0].copy()))
        temporal.apply(result, 0, image, stamp, MIXTURE, CONFIG)
    weights = np.array(mixture_weights(stamps, 0.5))[:, None, None]
    depths = np.stack([d for d, _ in frames])
    variances = np.stack([s**2 for _, s in frames])
    mean = (weights * depths).sum(axis=0)
    total = (weights * variances).sum(axis=0) + (weights * (depths - mean) ** 2).sum(axis=0)
    np.testing.assert_allclose(result.coarse_std[0] ** 2, total, rtol=1e-4, atol=1e-6)
    spread = np.sqrt((weights * (depths - mean) ** 2).sum(axis=0))
    assert (result.coarse_std[0] >= spread - 1e-6).all()


def test_a_changed_patch_starts_again_and_the_others_keep_their_history():
    image = still_image()
    first, second = distributions(0), distributions(1)
    temporal = TemporalFilter()
    temporal.apply(result_of(first), 0, image, 0.0, MIXTURE, CONFIG)
    moved = image.copy()
    moved[16:32, 16:32] = 250  # cell (1, 1) of the 3 x 4 grid: 16 x 16 pixels each
    assert (
        np.abs(
            patch_colours(moved, (0, 0, *SIZE), GRID) - patch_colours(image, (0, 0, *SIZE), GRID)
        ).max(axis=-1)
        > 8
    ).sum() == 1
    result = result_of(second)
    temporal.apply(result, 0, moved, 0.1, MIXTURE, CONFIG)
    keep = 0.5 ** (0.1 / 0.5)
    expected = keep * first + (1 - keep) * second
    expected[:, 1, 1] = second[:, 1, 1]
    np.testing.assert_allclose(result.bin_probs[0], expected, atol=1e-6)
    rows, cols = nearest_cells((0, 0, *SIZE), GRID)
    restarted = (rows[:, None] == 1) & (cols[None, :] == 1)
    np.testing.assert_allclose(
        result.depth[0][restarted], result_of(second).depth[0][restarted], atol=1e-6
    )
    assert temporal.changed_share == pytest.approx(1 / 12)
    # Sensor noise (sigma 3 grey levels) restarts nothing.
    noisy = np.clip(moved + np.random.default_rng(5).normal(0, 3, moved.shape), 0, 255)
    temporal.apply(result_of(distributions(2)), 0, noisy.astype(np.uint8), 0.2, MIXTURE, CONFIG)
    assert temporal.changed_share == 0.0


@pytest.mark.parametrize(
    "change, reason",
    [
        ("size", "image size"),
        ("stamp back", "stamp not after the previous"),
        ("gap", "gap"),
        ("bins", "prompts, bins or temperature"),
        ("reset", "deactivated"),
    ],
)
def test_the_whole_state_restarts(change, reason):
    image = still_image()
    temporal = TemporalFilter()
    temporal.apply(result_of(distributions(0)), 0, image, 5.0, MIXTURE, CONFIG)
    config, stamp, p = CONFIG, 5.1, distributions(1)
    if change == "size":
        image = np.zeros((48, 80, 3), np.uint8)
    elif change == "stamp back":
        stamp = 4.0
    elif change == "gap":
        stamp = 5.0 + RESTART_AFTER_HALF_LIVES * 0.5 + 0.01
    elif change == "bins":
        config = CONFIG.replace(depth_bins=tuple(float(b) + 0.5 for b in BINS))
    else:
        temporal.reset("deactivated")
    result = result_of(p)
    if change == "bins":  # what predict gives under the new config
        result.bins = np.asarray(config.depth_bins, np.float32)
    if change == "size":
        result.region = (0, 0, 48, 80)
        result.depth = np.zeros((1, 48, 80), np.float32)
        result.depth_std = result.depth.copy()
    untouched = {name: getattr(result, name).copy() for name in ("depth", "bin_probs")}
    temporal.apply(result, 0, image, stamp, MIXTURE, config)
    for name, value in untouched.items():  # the frame alone
        np.testing.assert_array_equal(getattr(result, name), value)
    assert temporal.restarts == {reason: 1}


def test_off_leaves_the_result_alone_and_forgets():
    image = still_image()
    temporal = TemporalFilter()
    temporal.apply(result_of(distributions(0)), 0, image, 0.0, MIXTURE, CONFIG)
    result = result_of(distributions(1))
    before = result.depth.copy()
    temporal.apply(result, 0, image, 0.1, OutputSettings(), CONFIG)
    np.testing.assert_array_equal(result.depth, before)
    result = result_of(distributions(2))
    before = result.depth.copy()
    temporal.apply(result, 0, image, 0.2, MIXTURE, CONFIG)  # a fresh start, not a restart
    np.testing.assert_array_equal(result.depth, before)
    assert sum(temporal.restarts.values()) == 0


def test_only_the_arrays_fetched_are_fused_and_a_field_returning_starts_alone():
    image = still_image()
    temporal = TemporalFilter()
    temporal.apply(result_of(distributions(0)), 0, image, 0.0, MIXTURE, CONFIG)
    second = result_of(distributions(1))
    second.depth_std = second.coarse_depth = second.coarse_std = second.bin_probs = None
    temporal.apply(second, 0, image, 0.1, MIXTURE, CONFIG)  # depth alone: fused
    third = result_of(distributions(2))
    alone = third.bin_probs.copy()
    temporal.apply(third, 0, image, 0.2, MIXTURE, CONFIG)
    np.testing.assert_array_equal(third.bin_probs, alone)  # its history ended at 0.1
    assert not np.allclose(third.depth, result_of(distributions(2)).depth)


def test_a_batch_of_cameras_fuses_each_row_with_its_own_filter():
    image = still_image()
    cameras = [TemporalFilter(), TemporalFilter()]
    for stamp, seeds in ((0.0, (0, 1)), (0.1, (2, 3))):
        rows = [result_of(distributions(s)) for s in seeds]
        batch = DepthResult(
            **{
                name: np.concatenate([getattr(r, name) for r in rows])
                for name in ("depth", "depth_std", "coarse_depth", "coarse_std", "bin_probs")
            },
            bins=BINS,
            region=(0, 0, *SIZE),
        )
        for index, temporal in enumerate(cameras):
            temporal.apply(batch, index, image, stamp, MIXTURE, CONFIG)
    keep = 0.5 ** (0.1 / 0.5)
    for index, (a, b) in enumerate(((0, 2), (1, 3))):
        expected = keep * distributions(a) + (1 - keep) * distributions(b)
        np.testing.assert_allclose(batch.bin_probs[index], expected, atol=1e-6)
