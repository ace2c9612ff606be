"""temporal_filter: the fused probabilities are the exponential mixture of the frames' bin
distributions (computed here independently), the depth and std at every pixel are the core's
depth step on that mixture, a changed patch starts again, the whole state restarts where it
must, and the std is the mixture's."""

import numpy as np
import pytest
import torch

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.head import head_key
from depthclip_ros.estimator.result import DepthResult
from depthclip_ros.estimator.temporal_filter import (
    CHANGE_STRIDE,
    RESTART_AFTER_HALF_LIVES,
    PatchColours,
    TemporalFilter,
)
from depthclip_ros.messages.outputs import arrays_for, fine_arrays

BINS = np.array([1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0], np.float32)
CONFIG = DepthClipConfig(model="RN50", input_width=128, input_height=96)  # a 3 x 4 grid
GRID = (3, 4)
SIZE = (48, 64)  # the camera's images
MIXTURE = OutputSettings(temporal_filter="mixture", temporal_half_life=0.5)
FIELDS = ("depth", "depth_std", "coarse_depth", "coarse_std")  # the fine ones made from the grid


def distributions(seed: int, shape=GRID) -> np.ndarray:
    """(K, h, w) random bin distributions."""
    logits = np.random.default_rng(seed).normal(size=(len(BINS), *shape))
    p = np.exp(logits)
    return (p / p.sum(axis=0)).astype(np.float32)


def depth_step(p: np.ndarray, size=SIZE) -> list:
    """The core's depth step on distributions (K, h, w): [depth, std, coarse depth, coarse std,
    probabilities], each (1, ...) float32."""
    probs = torch.tensor(np.asarray(p, np.float32))[None]
    outputs = DepthClip.depth_from_probabilities(probs, torch.tensor(BINS)[None], CONFIG, size)
    return [t.numpy().copy() for t in outputs]


def result_of(p: np.ndarray, size=SIZE, config=CONFIG) -> DepthResult:
    """What predict gives for one image whose distributions are `p`, made by `config`'s head."""
    return DepthResult(
        *depth_step(p, size), bins=BINS, region=(0, 0, *size), head_keys=(head_key(config),)
    )


def assert_is_mixture(result, probs, weights):
    """`result` is the core's depth step on the mixture sum w_i p_i (weights summing to 1)."""
    mixed = sum(w * p.astype(np.float64) for w, p in zip(weights, probs))
    np.testing.assert_allclose(result.bin_probs[0], mixed, atol=1e-6)
    expected = depth_step(mixed)
    for name, value, atol in zip(
        ("depth", "depth_std", "coarse_depth", "coarse_std"), expected, (1e-5, 1e-4, 1e-5, 1e-4)
    ):
        np.testing.assert_allclose(getattr(result, name)[0], value[0], atol=atol, err_msg=name)


def mixture_weights(stamps, half_life) -> list:
    """The exponential mixture's weights of frames at `stamps` after the last one."""
    weights = [1.0]
    for previous, now in zip(stamps, stamps[1:]):
        keep = 0.5 ** ((now - previous) / half_life)
        weights = [w * keep for w in weights] + [1.0 - keep]
    return weights


def still_image(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 200, (*SIZE, 3), dtype=np.uint8)


def test_a_still_camera_gets_the_mixture_of_its_frames_by_their_stamps():
    """Frames at 0, 0.1, 0.3 (one dropped), 0.35 s: each output is the mixture of the frames
    so far, weighted by the time since each, whatever the frame count."""
    image, stamps = still_image(), [10.0, 10.1, 10.3, 10.35]
    probs = [distributions(seed) for seed in range(len(stamps))]
    temporal = TemporalFilter()
    for n, (stamp, p) in enumerate(zip(stamps, probs), start=1):
        result = result_of(p)
        temporal.apply(result, 0, image, stamp, MIXTURE)
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
        temporal.apply(result, 0, image, stamp, MIXTURE)
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
    temporal.apply(result_of(first), 0, image, 0.0, MIXTURE)
    moved = image.copy()
    moved[16:32, 16:32] = 250  # cell (1, 1) of the 3 x 4 grid: 16 x 16 pixels each
    colours = PatchColours((0, 0, *SIZE), GRID)
    assert (np.abs(colours(moved) - colours(image)).max(axis=-1) > 8).sum() == 1
    result = result_of(second)
    temporal.apply(result, 0, moved, 0.1, MIXTURE)
    keep = 0.5 ** (0.1 / 0.5)
    expected = keep * first + (1 - keep) * second
    expected[:, 1, 1] = second[:, 1, 1]
    np.testing.assert_allclose(result.bin_probs[0], expected, atol=1e-6)
    assert result.coarse_depth[0, 1, 1] == pytest.approx(depth_step(second)[2][0, 1, 1])
    # Every pixel, the restarted patch's neighbours included, is the depth step's on that.
    np.testing.assert_allclose(result.depth[0], depth_step(expected)[0][0], atol=1e-5)
    np.testing.assert_allclose(result.depth_std[0], depth_step(expected)[1][0], atol=1e-4)
    assert temporal.changed_share == pytest.approx(1 / 12)
    # Sensor noise (sigma 3 grey levels) restarts nothing.
    noisy = np.clip(moved + np.random.default_rng(5).normal(0, 3, moved.shape), 0, 255)
    temporal.apply(result_of(distributions(2)), 0, noisy.astype(np.uint8), 0.2, MIXTURE)
    assert temporal.changed_share == 0.0


@pytest.mark.parametrize(
    "change, reason",
    [
        ("size", "image size"),
        ("stamp back", "stamp not after the previous"),
        ("gap", "gap"),
        ("bins", "prompts, bins or temperature"),
        ("tokens", "prompts, bins or temperature"),  # scene_bins auto: a preset's tokens
        ("grid", "region or feature grid"),  # input_width: another grid on the same image
        ("region", "region or feature grid"),  # crop <-> resize: the same grid elsewhere
        ("reset", "deactivated"),
    ],
)
def test_the_whole_state_restarts(change, reason):
    image = still_image()
    temporal = TemporalFilter()
    temporal.apply(result_of(distributions(0)), 0, image, 5.0, MIXTURE)
    stamp, p, size, config = 5.1, distributions(1), SIZE, CONFIG
    if change == "size":
        image, size = np.zeros((48, 80, 3), np.uint8), (48, 80)
    elif change == "stamp back":
        stamp = 4.0
    elif change == "gap":
        stamp = 5.0 + RESTART_AFTER_HALF_LIVES * 0.5 + 0.01
    elif change == "bins":
        config = CONFIG.replace(depth_bins=tuple(float(b) + 0.5 for b in BINS))
    elif change == "tokens":
        config = CONFIG.replace(depth_tokens=("near",) * len(BINS))
    elif change == "grid":
        p = distributions(1, shape=(3, 5))
    elif change == "reset":
        temporal.reset("deactivated")
    result = result_of(p, size=size, config=config)  # what predict gives under `config`
    if change == "bins":
        result.bins = np.asarray(config.depth_bins, np.float32)
    if change == "region":  # the same 3 x 4 grid over a crop of the image
        result.region = (8, 0, 40, 64)
    alone = {name: getattr(result, name).copy() for name in (*FIELDS, "bin_probs")}
    temporal.apply(result, 0, image, stamp, MIXTURE)
    np.testing.assert_array_equal(result.bin_probs, alone["bin_probs"])  # the frame alone
    if change != "region":  # (the region's fine arrays are made inside it)
        for name, atol in zip(FIELDS, (1e-5, 1e-4, 0.0, 1e-6)):  # its depth step, from the grid
            np.testing.assert_allclose(getattr(result, name), alone[name], atol=atol, err_msg=name)
    assert temporal.restarts == {reason: 1}


def test_a_scene_whose_head_is_the_same_restarts_nothing():
    """scene_bins auto: two scenes that run the same head (neither has a preset, or their
    presets agree) are the same distributions: a switch between them restarts nothing; the
    result names its head, not its scene."""
    image, temporal = still_image(), TemporalFilter()
    for stamp, scene in ((0.0, "office"), (0.1, "kitchen"), (0.2, "office")):
        result = result_of(distributions(int(stamp * 10)))
        result.scenes = [scene]
        temporal.apply(result, 0, image, stamp, MIXTURE)
    assert sum(temporal.restarts.values()) == 0
    assert_is_mixture(
        result, [distributions(s) for s in range(3)], mixture_weights([0, 0.1, 0.2], 0.5)
    )


def test_the_head_that_made_the_result_keys_the_state_not_the_config_in_use():
    """A frame made before a parameter change (bins) and fused after it is its own head's:
    fused with the frames before; the first frame of the new head restarts."""
    image, temporal = still_image(), TemporalFilter()
    new = CONFIG.replace(depth_bins=tuple(float(b) + 0.5 for b in BINS))
    temporal.apply(result_of(distributions(0)), 0, image, 0.0, MIXTURE)
    temporal.apply(result_of(distributions(1)), 0, image, 0.1, MIXTURE)  # old head, late
    assert sum(temporal.restarts.values()) == 0
    temporal.apply(result_of(distributions(2), config=new), 0, image, 0.2, MIXTURE)
    assert temporal.restarts == {"prompts, bins or temperature": 1}


def test_read_only_arrays_are_fused_into_copies():
    """Ray hands a worker's arrays back read-only (depthclip-fleet): the filter fuses into
    copies of those, with the same result as into writable arrays."""
    image = still_image()
    writable, read_only = TemporalFilter(), TemporalFilter()
    for seed, stamp in enumerate((0.0, 0.1)):
        mine, frozen = result_of(distributions(seed)), result_of(distributions(seed))
        for name in (*FIELDS, "bin_probs"):
            getattr(frozen, name).flags.writeable = False
        writable.apply(mine, 0, image, stamp, MIXTURE)
        read_only.apply(frozen, 0, image, stamp, MIXTURE)
        for name in (*FIELDS, "bin_probs"):
            np.testing.assert_array_equal(getattr(frozen, name), getattr(mine, name))


def test_off_leaves_the_result_alone_and_forgets():
    image = still_image()
    temporal = TemporalFilter()
    temporal.apply(result_of(distributions(0)), 0, image, 0.0, MIXTURE)
    result = result_of(distributions(1))
    before = result.depth.copy()
    temporal.apply(result, 0, image, 0.1, OutputSettings())
    np.testing.assert_array_equal(result.depth, before)
    result = result_of(distributions(2))
    before = result.depth.copy()
    temporal.apply(result, 0, image, 0.2, MIXTURE)  # a fresh start, not a restart
    np.testing.assert_allclose(result.depth, before, atol=1e-5)  # the frame alone
    assert sum(temporal.restarts.values()) == 0


@pytest.mark.parametrize(
    "outputs", [{"depth"}, {"depth", "std"}, {"points", "clearing"}, {"depth", "points"}]
)
def test_the_fine_arrays_are_made_from_the_grid_when_the_node_leaves_them_on_the_gpu(outputs):
    """While fusing, the node fetches the grid's arrays only (arrays_for), the grid's std
    always: the filter makes the full-resolution depth, and the std where an output wants it
    (fine_arrays), equal to those it fuses when every array is fetched, at a start, across a
    changed patch and a restart; NaN outside the crop's region."""
    arrays = arrays_for(outputs, MIXTURE)
    fine = fine_arrays(outputs, MIXTURE)
    assert not {"depth", "depth_std"} & set(arrays) and "coarse_std" in arrays
    assert ("depth_std" in fine) == bool(outputs & {"std", "points", "clearing"})
    moved = still_image()
    moved[16:32, 16:32] = 250
    frames = [(still_image(), 0.0), (still_image(), 0.1), (moved, 0.2), (moved, 9.0)]
    everything, node = TemporalFilter(), TemporalFilter()
    region = (4, 8, 40, 48)  # a crop of the 48 x 64 image
    for seed, (image, stamp) in enumerate(frames):
        full = result_of(distributions(seed), size=region[2:])
        full.depth, full.depth_std = (
            np.pad(a, ((0, 0), (4, 4), (8, 8)), constant_values=np.nan)
            for a in (full.depth, full.depth_std)
        )
        full.region = region
        part = full.fetched(arrays)
        everything.apply(full, 0, image, stamp, MIXTURE)
        node.apply(part, 0, image, stamp, MIXTURE, fine)
        np.testing.assert_allclose(part.depth, full.depth, atol=1e-6)
        np.testing.assert_allclose(part.coarse_std, full.coarse_std, atol=1e-6)
        assert np.isnan(part.depth[0, :4]).all() and np.isfinite(part.depth[0, 4:44, 8:56]).all()
        if "depth_std" in fine:
            np.testing.assert_allclose(part.depth_std, full.depth_std, atol=1e-6)
        else:
            assert part.depth_std is None
    assert node.restarts == everything.restarts == {"gap": 1}


def test_the_std_history_is_kept_whatever_is_subscribed():
    """A subscriber of depth/std that comes and goes: the grid's std is fetched and fused
    throughout, so the std published when it returns is the mixture's of every frame."""
    image, temporal = still_image(), TemporalFilter()
    temporal.apply(result_of(distributions(0)), 0, image, 0.0, MIXTURE)
    depth_only = {"depth"}
    second = result_of(distributions(1)).fetched(arrays_for(depth_only, MIXTURE))
    temporal.apply(second, 0, image, 0.1, MIXTURE, fine_arrays(depth_only, MIXTURE))
    assert second.depth_std is None and second.coarse_std is not None
    with_std = {"depth", "std"}
    back = result_of(distributions(2)).fetched(arrays_for(with_std, MIXTURE))
    temporal.apply(back, 0, image, 0.2, MIXTURE, fine_arrays(with_std, MIXTURE))
    weights = mixture_weights([0.0, 0.1, 0.2], 0.5)
    mixed = sum(w * distributions(s).astype(np.float64) for s, w in enumerate(weights))
    expected = depth_step(mixed)
    np.testing.assert_allclose(back.depth[0], expected[0][0], atol=1e-5)
    np.testing.assert_allclose(back.coarse_std[0], expected[3][0], atol=1e-4)
    np.testing.assert_allclose(back.depth_std[0], expected[1][0], atol=1e-4)


def test_the_fine_arrays_fetched_are_fused_and_the_probabilities_restart_when_they_return():
    """The fine depth and std come from the fused coarse moments, whichever are fetched; the
    probabilities' history ends while they are not fetched."""
    image = still_image()
    temporal = TemporalFilter()
    temporal.apply(result_of(distributions(0)), 0, image, 0.0, MIXTURE)
    second = result_of(distributions(1))
    second.depth_std = second.bin_probs = None
    temporal.apply(second, 0, image, 0.1, MIXTURE)  # depth and the grid: fused
    keep = 0.5 ** (0.1 / 0.5)
    fused = keep * distributions(0) + (1 - keep) * distributions(1)
    np.testing.assert_allclose(second.depth[0], depth_step(fused)[0][0], atol=1e-5)
    np.testing.assert_allclose(second.depth_std[0], depth_step(fused)[1][0], atol=1e-4)
    third = result_of(distributions(2))
    alone = third.bin_probs.copy()
    temporal.apply(third, 0, image, 0.2, MIXTURE)
    np.testing.assert_array_equal(third.bin_probs, alone)  # its history ended at 0.1
    assert not np.allclose(third.depth, result_of(distributions(2)).depth)


def test_a_prediction_without_the_grids_depth_is_refused_and_the_node_asks_for_it():
    temporal = TemporalFilter()
    result = result_of(distributions(0))
    result.coarse_depth = None
    with pytest.raises(ValueError, match="not asked for coarse_depth"):
        temporal.apply(result, 0, still_image(), 0.0, MIXTURE)
    assert arrays_for({"depth"}, MIXTURE) == ("coarse_depth", "coarse_std")
    assert arrays_for({"depth", "std"}, MIXTURE) == ("coarse_depth", "coarse_std")
    assert arrays_for({"depth"}, OutputSettings()) == ("depth",)
    assert arrays_for({"depth", "std"}, OutputSettings()) == ("depth", "depth_std")


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
            head_keys=(head_key(CONFIG),) * 2,
        )
        for index, temporal in enumerate(cameras):
            temporal.apply(batch, index, image, stamp, MIXTURE)
    keep = 0.5 ** (0.1 / 0.5)
    for index, (a, b) in enumerate(((0, 2), (1, 3))):
        expected = keep * distributions(a) + (1 - keep) * distributions(b)
        np.testing.assert_allclose(batch.bin_probs[index], expected, atol=1e-6)


@pytest.mark.parametrize(
    "grid, size",
    [((13, 17), (416, 544)), ((3, 4), (48, 64)), ((1, 5), (7, 30)), ((4, 1), (30, 1))],
)
def test_the_upsampling_is_the_depth_steps_into_a_view_and_its_std_never_negative(grid, size):
    """BilinearUpsampling equals torch's bilinear align_corners upsampling (the core's), writes
    only the view it is given (the crop's region), and its std is sqrt(up(E[b^2]) - up(E[b])^2)
    of distributions whose variance is 0 in some cells (one-hot: no cancellation below 0)."""
    from depthclip_ros.estimator.temporal_filter import BilinearUpsampling

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(len(BINS), 0.3), size=grid)  # (h, w, K)
    probs[0, 0] = np.eye(len(BINS))[2]  # one-hot: variance 0
    mean = (probs * BINS).sum(-1)
    second = (probs * BINS.astype(np.float64) ** 2).sum(-1)
    variance = np.maximum(second - mean**2, 0.0)

    def up(cells):
        t = torch.tensor(cells, dtype=torch.float64)[None, None]
        return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=True)[
            0, 0
        ].numpy()

    upsampling = BilinearUpsampling(grid, size)
    canvas = np.full((2, size[0] + 4, size[1] + 6), np.nan, np.float32)
    depth, std = canvas[:, 2:-2, 3:-3]
    upsampling(mean.astype(np.float32), depth)
    upsampling.std(mean.astype(np.float32), variance.astype(np.float32), std)
    np.testing.assert_allclose(depth, up(mean), atol=1e-5)
    expected = np.sqrt(np.maximum(up(second) - up(mean) ** 2, 0.0))
    np.testing.assert_allclose(std, expected, atol=1e-3)  # sqrt near 0 magnifies rounding
    np.testing.assert_allclose(std**2, expected**2, atol=1e-5)
    assert (std >= 0).all() and std[0, 0] == 0.0
    assert np.isnan(canvas[:, :2]).all() and np.isnan(canvas[:, :, :3]).all()
    assert np.isnan(canvas[:, -2:]).all() and np.isnan(canvas[:, :, -3:]).all()


def crossing_object(frames: int, step: int, contrast: float, size=(96, 128), seed=0):
    """A wall (grey 120) that an object of grey 120 + `contrast` enters from the left, `step`
    pixels a frame, with sensor noise (sigma 3): [(image, the share of each cell of GRID the
    object covers, as the filter samples the cell: every CHANGE_STRIDE-th column)]."""
    rng = np.random.default_rng(seed)
    height, width = size
    sampled = np.arange(0, width, CHANGE_STRIDE)
    cell_of_sample = sampled * GRID[1] // width
    frames_out = []
    for t in range(frames):
        edge = step * (t + 1)  # the object's columns: [0, edge)
        image = np.full((height, width, 3), 120.0)
        image[:, :edge] += contrast
        image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
        covered = np.bincount(cell_of_sample, sampled < edge) / np.bincount(cell_of_sample)
        frames_out.append((image, np.broadcast_to(covered, GRID)))
    return frames_out


def wall_and_object(coverage: np.ndarray) -> np.ndarray:
    """(K, h, w): each cell's distribution, the wall's (near 3 m) and the object's (near 1 m)
    mixed by how much of the cell the object covers: the model's depth follows the content."""
    wall, thing = distributions(7, shape=(1, 1))[:, 0, 0], np.zeros(len(BINS))
    wall = 0.1 * wall + 0.9 * np.eye(len(BINS))[-1]
    thing = 0.1 * distributions(8, shape=(1, 1))[:, 0, 0] + 0.9 * np.eye(len(BINS))[0]
    c = coverage[None]
    return ((1 - c) * wall[:, None, None] + c * thing[:, None, None]).astype(np.float32)


@pytest.mark.parametrize(
    "step, contrast", [(3, 30.0), (2, 30.0), (1, 30.0), (3, 20.0), (12, 120.0)]
)
def test_a_slow_low_contrast_object_reaches_its_depth_within_three_frames(step, contrast):
    """A mid-grey object walking across a wall at 30 Hz (contrast 20-30, 1-3 px a frame: its
    edge moves a patch's mean colour by contrast / 4 each time it crosses a sampled column,
    below the change threshold of 8): each patch's fused depth is within 5 % of the frame's
    own at most 3 frames after the object covers it (compared only with the previous frame,
    the patch was never restarted and lagged by tens of frames). The fast object too."""
    size = (96, 128)
    temporal, lags = TemporalFilter(), {}
    sequence = crossing_object(frames=128 // step + 8, step=step, contrast=contrast, size=size)
    for t, (image, coverage) in enumerate(sequence):
        result = result_of(wall_and_object(coverage), size=size)
        alone = result.coarse_depth[0].copy()
        temporal.apply(result, 0, image, t / 30.0, MIXTURE)
        reached = np.abs(result.coarse_depth[0] - alone) <= 0.05 * alone
        for cell in zip(*np.nonzero(coverage == 1.0)):
            if cell not in lags:
                lags[cell] = (t, None)
            first, done = lags[cell]
            if done is None and reached[cell]:
                lags[cell] = (first, t - first)
    assert len(lags) == GRID[0] * GRID[1]
    assert all(done is not None and done <= 3 for _, done in lags.values()), lags
