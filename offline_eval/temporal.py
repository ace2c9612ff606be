"""temporal_filter measured: one image with known depth (an NYU sample, a demo scene) made into
four sequences at FRAME_RATE (the slow object at SLOW_RATE), each run through the model once
and fused with the node's rule (estimator.temporal_filter) under `off` and `mixture`:

- still: the image with sensor noise (Gaussian, sigma NOISE grey levels) every frame;
- pan: a window sliding PAN_PIXELS to the right each frame, with the noise;
- moving object: a textured square at OBJECT_DEPTH metres crossing the still noisy image,
  OBJECT_STEP pixels a frame;
- slow object: a flat square SLOW_CONTRAST grey levels brighter than the image under its
  start (a mid-grey person walking past a wall), SLOW_STEP pixels a frame at SLOW_RATE: its
  edge moves a patch's mean colour by a few grey levels a frame, below the change threshold.

Per sequence and filter: flicker (median |d_t - d_t-1| over the pixels whose content did not
change; for the pan, at the same scene point), lag (frames until a pixel the object newly covers
is within 5 % of the object's depth step from the depth the frame alone gives there: 0 = at
once), |depth - truth| median, and the filter's own time per frame. With random weights this
measures the mechanism, not the accuracy on real scenes.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.estimator.temporal_filter import TemporalFilter
from depthclip_ros.messages import topics
from depthclip_ros.messages.outputs import arrays_for, fine_arrays

FRAME_RATE = 15.0
NOISE = 3.0  # grey levels
PAN_PIXELS = 2
OBJECT_SIZE, OBJECT_STEP, OBJECT_DEPTH = 96, 12, 1.2
SLOW_CONTRAST, SLOW_STEP, SLOW_RATE = 30.0, 3, 30.0
LAG_TOLERANCE = 0.05
HEAD = [
    "sequence",
    "temporal_filter",
    "flicker (um)",
    "flicker / off's",
    "lag (frames)",
    "error vs truth, median (m)",
    "filter (ms/frame)",
]


@dataclasses.dataclass
class Sequence:
    name: str
    frames: list  # uint8 (H, W, 3)
    truths: list  # (H, W) metres
    changed: list  # bool (H, W): content changed since the previous frame (first: all)
    shift: int = 0  # pixels the scene moves left each frame (the pan)
    covered: list | None = None  # bool (H, W): the object's pixels (moving object)
    rate: float = FRAME_RATE  # frames a second


def _noisy(rgb, rng) -> np.ndarray:
    return np.clip(rgb + rng.normal(0.0, NOISE, rgb.shape), 0, 255).astype(np.uint8)


def sequences(rgb: np.ndarray, truth: np.ndarray, frames: int = 20, seed: int = 0) -> list:
    """The four sequences of one image (uint8 (H, W, 3)) and its depth (H, W), `frames` each."""
    rng = np.random.default_rng(seed)
    height, width = truth.shape
    base = rgb.astype(np.float64)
    nothing = np.zeros((height, width), bool)
    still = Sequence(
        "still",
        [_noisy(base, rng) for _ in range(frames)],
        [truth] * frames,
        [~nothing] + [nothing] * (frames - 1),
    )
    window = width - PAN_PIXELS * frames
    pan = Sequence(
        "pan",
        [_noisy(base[:, i * PAN_PIXELS : i * PAN_PIXELS + window], rng) for i in range(frames)],
        [truth[:, i * PAN_PIXELS : i * PAN_PIXELS + window] for i in range(frames)],
        [np.ones((height, window), bool)] * frames,
        shift=PAN_PIXELS,
    )
    texture = np.random.default_rng(seed + 1).integers(0, 255, (OBJECT_SIZE, OBJECT_SIZE, 3))
    top = (height - OBJECT_SIZE) // 2
    moving = _crossing("moving object", base, truth, texture, top, OBJECT_STEP, frames, rng)
    under = base[top : top + OBJECT_SIZE, :OBJECT_SIZE].mean(axis=(0, 1))
    flat = np.broadcast_to(np.clip(under + SLOW_CONTRAST, 0, 255), texture.shape)
    slow = _crossing("slow object", base, truth, flat, top, SLOW_STEP, frames, rng)
    slow.rate = SLOW_RATE
    return [still, pan, moving, slow]


def _crossing(name, base, truth, look, top, step, frames, rng) -> Sequence:
    """`look` (an OBJECT_SIZE square's colours) at OBJECT_DEPTH crossing the noisy image from
    the left, `step` pixels a frame."""
    height, width = truth.shape
    nothing = np.zeros((height, width), bool)
    sequence = Sequence(name, [], [], [], covered=[])
    previous = nothing
    for i in range(frames):
        left = (i * step) % max(width - OBJECT_SIZE, 1)
        image, depth, covered = base.copy(), truth.copy(), nothing.copy()
        image[top : top + OBJECT_SIZE, left : left + OBJECT_SIZE] = look
        depth[top : top + OBJECT_SIZE, left : left + OBJECT_SIZE] = OBJECT_DEPTH
        covered[top : top + OBJECT_SIZE, left : left + OBJECT_SIZE] = True
        sequence.frames.append(_noisy(image, rng))
        sequence.truths.append(depth)
        sequence.changed.append(covered | previous if i else ~nothing)
        sequence.covered.append(covered)
        previous = covered
    return sequence


def run(model, sequence: Sequence, modes=("off", "mixture"), half_life: float = 0.5) -> dict:
    """{mode: (depth maps, seconds the filter took on each frame after the first)}: each frame
    predicted once, then fused under each mode from the arrays the node fetches for every
    output under it (while fusing, the grid's: the filter makes the full-resolution depth and
    std), at the sequence's frame rate."""
    settings = {
        mode: OutputSettings(temporal_filter=mode, temporal_half_life=half_life) for mode in modes
    }
    filters = {mode: TemporalFilter() for mode in modes}
    out = {mode: ([], []) for mode in modes}
    for i, frame in enumerate(sequence.frames):
        result = model.predict(frame)
        for mode in modes:
            own = result.fetched(arrays_for(topics.OUTPUTS, settings[mode]))
            fine = fine_arrays(topics.OUTPUTS, settings[mode])
            started = time.perf_counter()
            filters[mode].apply(own, 0, frame, i / sequence.rate, settings[mode], fine)
            out[mode][1].append(time.perf_counter() - started)
            out[mode][0].append(own.depth[0].copy())  # the result freed, as a node's
    return {mode: (depths, times[1:]) for mode, (depths, times) in out.items()}  # warmed up


def flicker(sequence: Sequence, depths: list) -> float:
    """Median |d_t - d_t-1| in metres over the pixels whose content did not change (the pan:
    the same scene point, PAN_PIXELS to the left now)."""
    steps = []
    for t in range(1, len(depths)):
        now, before = depths[t], depths[t - 1]
        if sequence.shift:
            now, before = now[:, : -sequence.shift], before[:, sequence.shift :]
            keep = np.ones(now.shape, bool)
        else:
            keep = ~sequence.changed[t]
        steps.append(np.abs(now - before)[keep & np.isfinite(now) & np.isfinite(before)])
    return float(np.median(np.concatenate(steps)))


def lag(sequence: Sequence, fused: list, alone: list) -> float:
    """The median of lag_frames; NaN without an object."""
    lags = lag_frames(sequence, fused, alone)
    return float(np.median(lags)) if lags else float("nan")


def lag_frames(sequence: Sequence, fused: list, alone: list) -> list:
    """For each pixel the object newly covers (after its first frame): the frames until the
    fused depth is within LAG_TOLERANCE of the step the object made there (the median over
    those pixels of |alone - alone the frame before|) from the frame's own depth (a pixel the
    object leaves before: the frames it stayed). Relative to the step, not to the depth: a
    random CLIP moves its depth by micrometres where an object comes."""
    lags = []
    if not sequence.covered:
        return lags
    for t in range(1, len(fused)):
        pending = sequence.covered[t] & ~sequence.covered[t - 1]
        if not pending.any():
            continue
        tolerance = LAG_TOLERANCE * float(np.median(np.abs(alone[t] - alone[t - 1])[pending]))
        for k in range(t, len(fused)):
            stayed = pending & ~sequence.covered[k]
            lags += [k - t] * int(stayed.sum())
            pending &= sequence.covered[k]
            close = pending & (np.abs(fused[k] - alone[k]) <= tolerance)
            lags += [k - t] * int(close.sum())
            pending &= ~close
            if not pending.any():
                break
    return lags


def truth_error(sequence: Sequence, depths: list) -> float:
    """Median |depth - truth| in metres over every frame's pixels with both."""
    errors = [np.abs(d - t)[np.isfinite(d) & (t > 0)] for d, t in zip(depths, sequence.truths)]
    return float(np.median(np.concatenate(errors)))


def measure(model, rgb: np.ndarray, truth: np.ndarray, frames: int = 20) -> tuple:
    """(rows of HEAD, {sequence: {mode: depths}}, {mode: the filter's seconds on every frame})
    of the three sequences of one image."""
    rows, depths, costs = [], {}, {}
    for sequence in sequences(rgb, truth, frames):
        runs = run(model, sequence)
        depths[sequence.name] = {mode: maps for mode, (maps, _) in runs.items()}
        off = flicker(sequence, runs["off"][0])
        for mode, (maps, times) in runs.items():
            costs.setdefault(mode, []).extend(times)
            seconds = np.median(times)
            steps = flicker(sequence, maps)
            rows.append(
                [
                    sequence.name,
                    mode,
                    f"{steps * 1e6:.2f}",
                    f"{steps / off:.3f}" if off > 0 else "-",
                    f"{lag(sequence, maps, runs['off'][0]):.0f}",
                    f"{truth_error(sequence, maps):.3f}",
                    f"{seconds * 1e3:.2f}",
                ]
            )
    return rows, depths, costs


def side_by_side(depths: dict, frames=(1, 2, 3, 4), colormap: str = "turbo") -> tuple:
    """(uint8 RGB picture, its scale in metres): the still sequence's |d_t - d_t-1| at frames
    `frames`, off above, mixture below, in the depth/colored output's colour map from 0 to the
    99th percentile of off's (a random CLIP's depth moves by microns: the scale says how many)."""
    from depthclip_ros.messages.colormaps import colorize

    steps = {
        mode: [np.abs(depths["still"][mode][i] - depths["still"][mode][i - 1]) for i in frames]
        for mode in ("off", "mixture")
    }
    scale = float(np.nanpercentile(np.stack(steps["off"]), 99)) or 1e-9
    rows = [
        np.concatenate([colorize(step, 0.0, scale, colormap) for step in steps[mode]], axis=1)
        for mode in ("off", "mixture")
    ]
    return np.concatenate(rows, axis=0), scale
