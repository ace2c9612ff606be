"""temporal_filter: each patch's bin distribution fused with the recent frames' of the same
camera, restarted where the image changed. The rule beside the head that the node,
depthclip-bag and depthclip-fleet apply to each camera's results in stamp order. NumPy only.

The fusion is an exponential mixture of distributions: after a frame at time t the fused
distribution is a * fused(t_prev) + (1 - a) * p(t), with a = 0.5 ** ((t - t_prev) / half-life)
(a dropped frame decays by its time). A mixture, not a product: frames of one scene repeat
CLIP's errors, so they are not independent evidence, and a product would claim a certainty no
frame has. The depth and its second moment are linear in the distribution, so the fused depth
and std follow exactly from the frames' depth and std, at full resolution, without the depth
step run again: depth = sum w_t d_t, std^2 = sum w_t (s_t^2 + (d_t - c)^2) - (depth - c)^2 (c:
the bins' centre, where both stay small). That std is the mixture's: each frame's own spread
plus the spread of the frames' depths within the half-life; it never shrinks with the number of
frames.

A patch (a cell of the feature grid) whose content changed starts again from the current frame:
its mean colour, sampled every CHANGE_STRIDE pixels, moved by more than `change_threshold` grey
levels in a channel since the previous frame. The mean over a patch is robust to sensor noise
(about 20 samples a VGA patch) and to a pan of a few pixels (the mean barely moves), and moves
when another surface fills the patch; a surface of the background's own colour is missed (it is
then mixed in over about a half-life). The whole state restarts at a new image size, a stamp
not after the previous one (a bag's loop), a gap longer than RESTART_AFTER_HALF_LIVES
half-lives, a change of the head (prompts, bins, temperature), and when the caller resets it
(deactivation).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from .result import feature_grid

RESTART_AFTER_HALF_LIVES = 4.0
CHANGE_STRIDE = 8  # pixels between the samples of a patch's mean colour
FINE, COARSE = ("depth", "depth_std"), ("coarse_depth", "coarse_std")


@dataclasses.dataclass
class _State:
    stamp: float
    key: tuple
    size: tuple
    colours: np.ndarray  # (h, w, 3) float32 mean colour of each patch
    fields: dict  # name -> fused array (depth, coarse depth: mean; std: second moment)


def head_key(config, bins) -> tuple:
    """What the fused distributions are distributions of: the prompts, the bins, T."""
    return (tuple(config.prompts), tuple(float(b) for b in bins), float(config.temperature))


def patch_colours(image: np.ndarray, region: tuple, grid: tuple) -> np.ndarray:
    """(h, w, 3) float32 mean colour of each cell of the feature grid over the image's input
    region, from every CHANGE_STRIDE-th pixel: cell (i, j) is the block of the region the
    network's cell sees."""
    top, left, height, width = region
    cells_h, cells_w = grid
    rows = np.arange(top, top + height, CHANGE_STRIDE)
    cols = np.arange(left, left + width, CHANGE_STRIDE)
    samples = image[top : top + height : CHANGE_STRIDE, left : left + width : CHANGE_STRIDE]
    row_starts = np.searchsorted(rows - top, np.arange(cells_h) * height / cells_h)
    col_starts = np.searchsorted(cols - left, np.arange(cells_w) * width / cells_w)
    sums = np.add.reduceat(
        np.add.reduceat(samples.astype(np.float32), row_starts, axis=0), col_starts, axis=1
    )
    counts = np.outer(np.diff([*row_starts, len(rows)]), np.diff([*col_starts, len(cols)]))
    return sums / np.maximum(counts, 1)[..., None]


def nearest_cells(region: tuple, grid: tuple) -> tuple:
    """(row cell of each image row, column cell of each image column) of the region, under
    align_corners upsampling (cell i sits at pixel i * (size - 1) / (cells - 1))."""
    _, _, height, width = region
    return tuple(
        np.rint(np.arange(size) * ((cells - 1) / max(size - 1, 1))).astype(np.intp)
        for size, cells in ((height, grid[0]), (width, grid[1]))
    )


class TemporalFilter:
    """One camera's fused distributions. `apply` fuses image `index` of a DepthResult in place
    (its depth, depth_std, coarse depth and std, bin probabilities: those it holds); frames must
    come in their camera's stamp order. `restarts` counts the whole restarts by reason;
    `changed_share` is the share of patches the last frame restarted."""

    def __init__(self):
        self._state = None
        self.restarts = collections.Counter()
        self.changed_share = 0.0
        self._scratch = {}  # field -> buffers reused every frame (a fresh VGA array costs more
        # in page faults than the arithmetic on it)

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

    def apply(self, result, index: int, image, stamp: float, settings, config) -> None:
        """Fuse image `index` of `result` (stamp in seconds, the uint8 RGB image it came from)
        with this camera's recent frames, under `settings` (temporal_filter, its half-life and
        change threshold: OutputSettings) and the head of `config`."""
        if settings.temporal_filter == "off":
            self._state = None
            return
        top, left, height, width = result.region
        grid = feature_grid(height, width, config)
        colours = patch_colours(image, result.region, grid)
        key = head_key(config, result.bins_of(index))
        size = image.shape[:2]
        fields = {
            name: getattr(result, name)[index]
            for name in (*FINE, *COARSE, "bin_probs")
            if getattr(result, name) is not None
        }
        centre = 0.5 * (key[1][0] + key[1][-1])
        moments = _moments(fields, centre, self._buffers)
        state, reason = self._state, None
        if state is None:
            reason = "start"
        elif size != state.size:
            reason = "image size"
        elif key != state.key:
            reason = "prompts, bins or temperature"
        elif stamp <= state.stamp:
            reason = "stamp not after the previous"
        elif stamp - state.stamp > RESTART_AFTER_HALF_LIVES * settings.temporal_half_life:
            reason = "gap"
        if reason is not None:
            if state is not None:
                self.restarts[reason] += 1
            fused = {name: np.array(value) for name, value in moments.items()}
            self._state = _State(stamp, key, size, colours, fused)
            self.changed_share = 1.0
            return
        keep = 0.5 ** ((stamp - state.stamp) / settings.temporal_half_life)
        changed = np.abs(colours - state.colours).max(axis=-1) > settings.temporal_change_threshold
        self.changed_share = float(changed.mean())
        cell_keep = pixel_keep = np.float32(keep)  # no patch changed: one weight for all
        if changed.any():
            cell_keep = np.where(changed, 0.0, keep).astype(np.float32)  # (h, w)
            pixel_keep = np.full(size, keep, np.float32)
            pixel_keep[top : top + height, left : left + width] = _expanded(
                cell_keep, nearest_cells(result.region, grid)
            )
        for name, new in moments.items():
            old = state.fields.get(name)
            if old is None or old.shape != new.shape:  # a field not fused last frame
                state.fields[name] = np.array(new)
                continue
            # new + keep * (old - new), in place
            old -= new
            old *= pixel_keep if name in FINE else cell_keep
            old += new
        for name in list(state.fields):
            if name not in moments:
                del state.fields[name]  # not asked for this frame: its history ends
        state.stamp, state.colours = stamp, colours
        _write_back(result, index, state.fields, centre)

    def _buffers(self, name: str, like: np.ndarray) -> tuple:
        """Two float32 arrays shaped as `like`, this filter's own for `name`."""
        buffers = self._scratch.get(name)
        if buffers is None or buffers[0].shape != like.shape:
            buffers = tuple(np.empty(like.shape, np.float32) for _ in range(2))
            self._scratch[name] = buffers
        return buffers


def _expanded(cells: np.ndarray, nearest: tuple) -> np.ndarray:
    """(h, w) cell values repeated over the pixels whose nearest cell each is (rows and
    columns of `nearest` ascend, so each cell's pixels are one block)."""
    rows, cols = nearest
    row_counts = np.bincount(rows, minlength=cells.shape[0])
    col_counts = np.bincount(cols, minlength=cells.shape[1])
    return np.repeat(np.repeat(cells, row_counts, axis=0), col_counts, axis=1)


def _moments(fields: dict, centre: float, buffers) -> dict:
    """The linear quantities of each field: depth, coarse depth and probabilities as they are
    (not copied); each std as its second moment about `centre` (with its depth), in the
    `buffers(name, like)` given."""
    out = dict(fields)
    for depth, std in (FINE, COARSE):
        if std in out and depth in out:
            second, square = buffers(std, out[std])
            np.subtract(out[depth], np.float32(centre), out=second)
            np.multiply(second, second, out=second)
            np.multiply(out[std], out[std], out=square)
            second += square
            out[std] = second
        else:
            out.pop(std, None)
    return out


def _write_back(result, index: int, fused: dict, centre: float) -> None:
    """The fused fields into image `index` of `result`: each std from its second moment."""
    for name, value in fused.items():
        target = getattr(result, name)[index]
        if name in (FINE[1], COARSE[1]):
            depth = fused[FINE[0] if name == FINE[1] else COARSE[0]]
            np.subtract(depth, centre, out=target)
            target *= target
            np.subtract(value, target, out=target)
            np.maximum(target, 0.0, out=target)
            np.sqrt(target, out=target)
        else:
            target[...] = value
