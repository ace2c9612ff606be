"""The reference frames depthclip-export stores beside every graph (estimator.reference_frames):
frames no calibration saw, run through the fp32 graph on ONNX Runtime's CPU provider here, so
that each backend measures its own depth difference where it runs.
"""

from __future__ import annotations

import numpy as np

from ..estimator.cpu_features import cpu_description
from ..estimator.reference_frames import REFERENCE_FRAMES, Reference, write_reference
from ..graph_runtimes.onnx_runtime import OnnxDepthClip
from ..synthetic_scenes import SCENES, render_scene
from .calibration import spread


def fit_frames(frames: list, size) -> list:
    """The frames, resized (PIL bilinear) to a fixed-size graph's `size` (height, width)."""
    if size is None:
        return list(frames)
    from PIL import Image

    return [
        f if f.shape[:2] == size else np.asarray(Image.fromarray(f).resize(size[::-1], 2))
        for f in frames
    ]


def demo_frames() -> list:
    """The built-in scenes: the reference of a graph exported without calibration frames."""
    return [render_scene(name)[0] for name in SCENES]


def graph_depth(model: OnnxDepthClip, frames: list) -> list:
    """The depth (H, W) of each of `frames` on the exported graph `model`, one frame a run."""
    return [model.predict(frame).depth[0] for frame in frames]


def store_reference(out, fp32: OnnxDepthClip, frames: list, size) -> Reference:
    """Write the reference of the graph `out`: at most REFERENCE_FRAMES of `frames` (fitted to
    the graph's `size`; a graph of any size: to the first frame's), their float32 depth on
    `fp32` (the same model's fp32 graph on ONNX Runtime's CPU provider) and the inputs they ran
    with."""
    chosen = spread(list(frames), REFERENCE_FRAMES)
    chosen = fit_frames(chosen, size or chosen[0].shape[:2])  # one size: one array
    head = fp32.head
    reference = Reference(
        frames=np.stack(chosen),
        depth=np.stack(graph_depth(fp32, chosen)),
        text_features=head.text,
        bins=head.bins,
        temperature=float(head.config.temperature),
        measured_with=f"{fp32.runtime}, {cpu_description()}",
    )
    write_reference(out, reference)
    return reference
