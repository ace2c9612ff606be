"""temporal_filter: each patch's bin distribution fused with the recent frames' of the same
camera, restarted where the image changed. The rule beside the head that the node,
depthclip-bag and depthclip-fleet apply to each camera's results in stamp order. NumPy only.

The fusion is an exponential mixture of distributions: after a frame at time t the fused
distribution is a * fused(t_prev) + (1 - a) * p(t), with a = 0.5 ** ((t - t_prev) / half-life)
(a dropped frame decays by its time). A mixture, not a product: frames of one scene repeat
CLIP's errors, so they are not independent evidence, and a product would claim a certainty no
frame has. The mixture is kept on the feature grid, as the depth step's moments: a mixture's
mean is the mixture of the means, and its variance that of the variances plus the spread of the
means (the law of total variance: a v_1 + (1 - a) v_2 + a (1 - a) (m_1 - m_2)^2, non-negative
terms, exact in float32), so the fused moments follow exactly from the frames' coarse depth and
std. The full-resolution depth and std are then the depth step's own on the fused
distribution: its moments upsampled (bilinear, align_corners), the std per pixel as the
mixture of its two cells' distributions (BilinearUpsampling.std). That std is the mixture's:
each frame's own spread plus the spread of the frames' depths within the half-life; it never
shrinks with the number of frames.

A patch (a cell of the feature grid) whose content changed starts again from the current frame:
its mean colour, sampled every CHANGE_STRIDE pixels, moved by more than `change_threshold` grey
levels in a channel since the previous frame (a sudden change), or it drifted off the colour of
what its fused distribution is made of (the patch's colours mixed with the same weights as its
distributions) the same way two frames in a row, by more than SLOW_CHANGE_SHARE of the threshold
(a slow or low-contrast change: an edge crossing the patch a few pixels a frame, which the
previous frame alone never sees add up). The mean over a patch is robust to sensor noise (about
20 samples a VGA patch) and to a pan of a few pixels (the mean barely moves), and moves when
another surface fills the patch. A surface of the background's own colour is missed (it is
then mixed in over about a half-life). The whole state restarts at a new image size or a new
geometry (the region the network sees, the feature grid: preprocessing, input size), a stamp
not after the previous one (a bag's loop), a gap longer than RESTART_AFTER_HALF_LIVES
half-lives, a new head (prompts, bins, temperature: the head that made the result, as the
result names it, so a frame made before a parameter change is fused under its own head), and
when the caller resets it (deactivation). Under scene_bins auto a new scene restarts the state
only where its head differs (its preset's tokens or bins).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

RESTART_AFTER_HALF_LIVES = 4.0
CHANGE_STRIDE = 8  # pixels between the samples of a patch's mean colour
# A slow change: a patch's colour off its fused colour, in the same direction two frames in a
# row, by more than this share of the change threshold and NOISE_MARGIN times the frame's
# typical offset (the median patch's: sensor noise, most of an image being still).
SLOW_CHANGE_SHARE = 0.25
NOISE_MARGIN = 3.0
# What a prediction brings while fusing: the grid's depth (needed) and std (221 floats a VGA
# frame, always fetched while fusing, so the std's history never restarts when an output that
# shows the std gets a subscriber).
FUSED_FROM = ("coarse_depth", "coarse_std")


FINE_ARRAYS = ("depth", "depth_std")  # what the filter makes at full resolution


@dataclasses.dataclass
class _State:
    stamp: float
    key: tuple
    geometry: tuple  # (image size, region, grid)
    colours: np.ndarray  # (h, w, 3) float32 fused colour of each patch (mixed as `mean`)
    last: np.ndarray  # (h, w, 3) float32 the previous frame's colour of each patch
    drift: np.ndarray  # (h, w, 3) float32: a slow change's sign last frame (-1, 1; 0: none)
    mean: np.ndarray  # (h, w) fused depth of each patch
    variance: np.ndarray | None  # (h, w) its fused variance, while the coarse std is fetched
    probs: np.ndarray | None  # (K, h, w) fused bin probabilities, while they are fetched


class PatchColours:
    """(h, w, 3) float32 mean colour of each cell of the feature grid over an image's input
    `region`, from every CHANGE_STRIDE-th pixel: cell (i, j) is the block of the region the
    network's cell sees. Two small averaging products (rows, then columns)."""

    def __init__(self, region: tuple, grid: tuple):
        self._region = region
        _, _, height, width = region
        self._rows, self._columns = (
            _block_averages(cells, len(range(0, size, CHANGE_STRIDE)), size)
            for cells, size in zip(grid, (height, width))
        )
        # Scratch reused every frame: a new array's pages cost more than the products here.
        self._samples = np.empty((self._rows.shape[1], self._columns.shape[1] * 3), np.float32)
        self._down = np.empty((grid[0], self._samples.shape[1]), np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        top, left, height, width = self._region
        samples = image[top : top + height : CHANGE_STRIDE, left : left + width : CHANGE_STRIDE]
        np.copyto(self._samples, samples.reshape(samples.shape[0], -1))
        np.matmul(self._rows, self._samples, out=self._down)  # (h, sampled columns * 3)
        return self._columns @ self._down.reshape(len(self._down), -1, 3)  # (h, w, 3)


def _block_averages(cells: int, samples: int, size: int) -> np.ndarray:
    """(cells, samples) float32: row i averages the samples (every CHANGE_STRIDE-th of `size`
    pixels) that fall in cell i's 1/cells of the extent."""
    cell_of_sample = np.arange(samples) * CHANGE_STRIDE * cells // size
    averages = (cell_of_sample[None, :] == np.arange(cells)[:, None]).astype(np.float32)
    return averages / np.maximum(averages.sum(axis=1, keepdims=True), 1.0)


def _cells_and_fractions(cells: int, size: int) -> tuple:
    """For each of `size` output positions under align_corners upsampling from `cells`: the
    cell before it and the fraction of the way to the next (position i * (cells-1)/(size-1))."""
    position = np.arange(size) * ((cells - 1) / max(size - 1, 1))
    before = np.minimum(np.floor(position).astype(np.intp), max(cells - 2, 0))
    return before, (position - before).astype(np.float32)


class BilinearUpsampling:
    """(h, w) grids -> (height, width) as the depth step upsamples its moments (bilinear,
    align_corners=True): across the columns on the small grid, then down the rows, each run of
    rows between the same two cells by one small product (one pass over the output)."""

    def __init__(self, grid: tuple, size: tuple):
        cells_h, cells_w = grid
        before, fraction = _cells_and_fractions(cells_w, size[1])
        columns = np.arange(size[1])
        self._across = np.zeros((cells_w, size[1]), np.float32)  # (w, width) lerp weights
        self._across[before, columns] = 1.0 - fraction
        # Each column's two cells' difference, times sqrt(f (1 - f)): the mixture's spread.
        self._spread = np.zeros((cells_w, size[1]), np.float32)
        if cells_w > 1:
            self._across[before + 1, columns] += fraction
            root = np.sqrt(fraction * (1.0 - fraction))
            self._spread[before, columns] = -root
            self._spread[before + 1, columns] += root
        before, fraction = _cells_and_fractions(cells_h, size[0])
        self._down = np.stack([1.0 - fraction, fraction, fraction * (1.0 - fraction)], axis=1)
        starts = np.flatnonzero(np.diff(before, prepend=-1))
        self._runs = [
            (int(before[a]), int(a), int(b)) for a, b in zip(starts, [*starts[1:], size[0]])
        ]
        # Scratch reused every frame (a new array's pages cost more than its arithmetic):
        # rows of the grid upsampled across, and per pair of grid rows the three terms.
        self._rows = np.empty((3, cells_h, size[1]), np.float32)
        self._terms = np.empty((max(cells_h - 1, 1), 3, size[1]), np.float32)

    def __call__(self, cells: np.ndarray, out: np.ndarray) -> None:
        """`cells` (h, w) upsampled into `out` (height, width; a view is fine)."""
        across = self._rows[0]
        np.matmul(cells.astype(np.float32, copy=False), self._across, out=across)  # (h, width)
        if across.shape[0] == 1:
            out[...] = across[0]
            return
        for cell, start, stop in self._runs:
            np.matmul(self._down[start:stop, :2], across[cell : cell + 2], out=out[start:stop])

    def std(self, mean: np.ndarray, variance: np.ndarray, out: np.ndarray) -> None:
        """The std of the upsampled distribution into `out`: sqrt(up(second moment) -
        up(mean)^2) from each cell's `mean` and `variance` (>= 0). Between two cells with weights
        1 - f and f the variance is (1 - f) v_a + f v_b + f (1 - f) (m_b - m_a)^2 (a mixture of
        two): non-negative terms, so no cancellation and never below 0, across the columns and
        then down the rows (one small product per run of rows, its square root taken while the
        run is in the cache)."""
        mean, variance = (np.asarray(a, np.float32) for a in (mean, variance))
        across_mean, across, spread = self._rows
        np.matmul(mean, self._across, out=across_mean)  # (h, width)
        np.matmul(variance, self._across, out=across)
        np.matmul(mean, self._spread, out=spread)
        np.square(spread, out=spread)
        across += spread
        if across.shape[0] == 1:
            np.sqrt(across[0], out=out[...])
            return
        terms = self._terms  # terms[cell]: (3, width) of v_a, v_b, (m_b - m_a)^2
        terms[:, 0], terms[:, 1] = across[:-1], across[1:]
        np.subtract(across_mean[1:], across_mean[:-1], out=terms[:, 2])
        np.square(terms[:, 2], out=terms[:, 2])
        for cell, start, stop in self._runs:
            run = out[start:stop]
            np.matmul(self._down[start:stop], terms[cell], out=run)
            np.sqrt(run, out=run)


def _channel_max(a: np.ndarray) -> np.ndarray:
    """(h, w) the largest of each patch's 3 channels (max over a last axis of 3 costs 5x)."""
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])


def _fine_array(result, size: tuple) -> np.ndarray:
    """(B, H, W) float32 for a full-resolution array the filter makes: NaN outside the region;
    inside, each image's own filter writes its row."""
    fine = np.empty((len(result.coarse_depth), *size), np.float32)
    if result.region != (0, 0, *size):
        fine.fill(np.nan)
    return fine


class TemporalFilter:
    """One camera's fused distributions. `apply` fuses image `index` of a DepthResult in place:
    its coarse depth (needed) and std (FUSED_FROM) and its bin probabilities, those it holds, and
    from them the full-resolution depth, and its std with the coarse std. Those two need not be
    fetched (arrays_for leaves them on a GPU while fusing): `apply` makes them. Frames must come
    in their camera's stamp order. `restarts` counts the whole restarts by reason;
    `changed_share` is the share of patches the last frame restarted."""

    def __init__(self):
        self._state = None
        self.restarts = collections.Counter()
        self.changed_share = 0.0
        self._geometry = None  # (region, grid), PatchColours, BilinearUpsampling

    def words(self, settings) -> str:
        """The filter's state in words (/diagnostics)."""
        if settings.temporal_filter == "off":
            return "off"
        restarts = ", ".join(f"{reason} {n}" for reason, n in sorted(self.restarts.items()))
        return (
            f"{settings.temporal_filter}, half-life {settings.temporal_half_life:g} s; patches "
            f"restarted by the last frame {self.changed_share * 100:.0f} %; whole restarts: "
            f"{restarts or 'none'}"
        )

    def reset(self, reason: str = "reset") -> None:
        if self._state is not None:
            self.restarts[reason] += 1
        self._state = None

    def apply(self, result, index: int, image, stamp: float, settings, fine=FINE_ARRAYS) -> None:
        """Fuse image `index` of `result` (stamp in seconds, the uint8 RGB image it came from)
        with this camera's recent frames, under `settings` (temporal_filter, its half-life and
        change threshold: OutputSettings), the head being the one that made the result. `fine`:
        the full-resolution arrays (of FINE_ARRAYS) to make from the fused grid: those the
        outputs want. Arrays of `result` that are read-only (Ray's) are replaced by copies."""
        if settings.temporal_filter == "off":
            self._state = None
            return
        if result.coarse_depth is None:
            raise ValueError(
                "temporal_filter fuses the grid's depth: predict was not asked for coarse_depth"
            )
        if result.head_keys is None:
            raise ValueError("temporal_filter needs the result's head_keys (the estimator's)")
        result.writable()
        mean = result.coarse_depth[index]  # (h, w): the cells fused
        measure_colours, upsample = self._measures(result.region, mean.shape)
        colours = measure_colours(image)
        key = result.head_keys[index]
        size = image.shape[:2]
        geometry = (size, tuple(result.region), mean.shape)
        variance = None if result.coarse_std is None else result.coarse_std[index] ** 2
        probs = None if result.bin_probs is None else result.bin_probs[index]
        state, reason = self._state, None
        if state is None:
            reason = "start"
        elif size != state.geometry[0]:
            reason = "image size"
        elif geometry != state.geometry:
            reason = "region or feature grid"
        elif key != state.key:
            reason = "prompts, bins or temperature"
        elif stamp <= state.stamp:
            reason = "stamp not after the previous"
        elif stamp - state.stamp > RESTART_AFTER_HALF_LIVES * settings.temporal_half_life:
            reason = "gap"
        if reason is not None:  # this frame alone, its fine arrays made as a fused frame's
            if state is not None:
                self.restarts[reason] += 1
            probs = None if probs is None else probs.copy()
            drift = np.zeros(colours.shape, np.float32)
            self._state = _State(
                stamp, key, geometry, colours, colours, drift, mean.copy(), variance, probs
            )
            self.changed_share = 1.0
            self._write_back(result, index, self._state, upsample, size, fine)
            return
        keep = np.float32(0.5 ** ((stamp - state.stamp) / settings.temporal_half_life))
        changed = self._changed(colours, state, settings.temporal_change_threshold)
        self.changed_share = np.count_nonzero(changed) / changed.size
        if changed.any():
            keep = np.where(changed, np.float32(0.0), keep)  # (h, w): changed patches restart
        gap = state.mean - mean
        if variance is None or state.variance is None:  # the std's history ends, or starts
            state.variance = variance  # (about the fused depth: the frame's own spread)
        else:
            state.variance = variance + keep * (state.variance - variance + (1 - keep) * gap**2)
        state.mean = mean + keep * gap
        if probs is None or state.probs is None or state.probs.shape != probs.shape:
            state.probs = None if probs is None else probs.copy()  # its history starts here
        else:
            state.probs = probs + keep * (state.probs - probs)
        # The colours mixed as the distributions are: what the fused depth is made of.
        state.colours = colours + np.asarray(keep)[..., None] * (state.colours - colours)
        state.stamp = stamp
        self._write_back(result, index, state, upsample, size, fine)

    @staticmethod
    def _changed(colours, state: _State, threshold: float) -> np.ndarray:
        """(h, w) bool: the patches whose content changed: off the previous frame's colour by
        more than `threshold` in a channel, or drifting off their fused colour (SLOW_CHANGE_SHARE,
        two frames in a row); updates the state's previous colours and drift."""
        sudden = _channel_max(np.abs(colours - state.last)) > threshold
        offset = colours - state.colours
        size = np.abs(offset)
        largest = _channel_max(size).ravel()
        middle = largest.size // 2  # the median patch's (a partition: np.median costs 20x)
        noise = NOISE_MARGIN * float(np.partition(largest, middle)[middle])
        drift = np.sign(offset, out=offset)  # -1, 0, 1 in each channel
        drift[size <= max(SLOW_CHANGE_SHARE * threshold, noise)] = 0
        same = (drift == state.drift) & (drift != 0)
        persistent = same[..., 0] | same[..., 1] | same[..., 2]
        state.drift, state.last = drift, colours
        return sudden | persistent

    def _write_back(self, result, index, state: _State, upsample, size: tuple, fine) -> None:
        """The fused distribution's arrays into image `index` of `result`: the coarse ones as
        they are, the full-resolution depth and std where fetched or in `fine` (`size` is the
        image's) by the depth step's upsampling (`upsample`, a BilinearUpsampling of the
        region)."""
        result.coarse_depth[index] = state.mean
        if result.bin_probs is not None and state.probs is not None:
            result.bin_probs[index] = state.probs
        top, left, height, width = result.region
        inside = (slice(top, top + height), slice(left, left + width))
        if result.depth is None and "depth" in fine:
            result.depth = _fine_array(result, size)
        if result.depth is not None:
            upsample(state.mean, result.depth[index][inside])
        if state.variance is None or result.coarse_std is None:
            return
        np.sqrt(state.variance, out=result.coarse_std[index])
        if result.depth_std is None and "depth_std" in fine:
            result.depth_std = _fine_array(result, size)
        if result.depth_std is not None:
            upsample.std(state.mean, state.variance, result.depth_std[index][inside])

    def _measures(self, region: tuple, grid: tuple) -> tuple:
        """(PatchColours, BilinearUpsampling) of this region and grid, made once."""
        if self._geometry is None or self._geometry[0] != (region, grid):
            upsampling = BilinearUpsampling(grid, region[2:])
            self._geometry = ((region, grid), PatchColours(region, grid), upsampling)
        return self._geometry[1:]
