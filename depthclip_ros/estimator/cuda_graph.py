"""The whole CUDA frame as one CUDA graph: uint8 upload, crop/resize, normalisation, encoder,
head, upsampling, replayed with one launch instead of hundreds of Python-issued kernels.

One graph per (batch, image size, number of bins, the config fields that change the graph's
shape: preprocessing, network input, normalisation, dense features, head precision, flip).
Text features, bins and temperature are inputs of the graph (static tensors copied before each
replay), so a run-time change of tokens, bins or temperature replays the same graph. Host
buffers are pinned and reused across frames; the upload and the download run on a stream of
their own. No rclpy.
"""

from __future__ import annotations

import collections
import logging

import numpy as np
import torch

from ..config.parameters import IMAGE_PATH_FIELDS
from .depth_head import bin_probabilities

MAX_GRAPHS = 8  # captured graphs kept (least recently used dropped): sizes x batches in use
# How far a new graph's first replay may be from the eager path on the same frame (metres).
AGREEMENT = {torch.float16: 5e-3, torch.float32: 1e-4}

log = logging.getLogger("depthclip_ros")


def structure_key(cfg, batch: int, height: int, width: int, bins: int) -> tuple:
    return (batch, height, width, bins, *(getattr(cfg, f) for f in IMAGE_PATH_FIELDS))


class CapturedFrame:
    """One captured graph with its static inputs and outputs."""

    def __init__(self, model, cfg, batch: int, height: int, width: int, text, bins):
        self.model, self.cfg = model, cfg
        device = model.device
        # Its own reference to every constant the frame reads (the normalisation's mean and
        # std): a graph replays addresses, which must outlive any cache that made them.
        self.constants = model.normalization_constants(cfg)
        self.copy_stream = torch.cuda.Stream(device)
        self.host_in = torch.empty((batch, height, width, 3), dtype=torch.uint8).pin_memory()
        self.images = torch.empty((batch, height, width, 3), dtype=torch.uint8, device=device)
        self.text = text.detach().clone()
        self.bins = bins.detach().expand(batch, -1).clone()
        self.temperature = torch.tensor(float(cfg.temperature), device=device)
        # Warm-up on a side stream (cuDNN picks its kernels, the allocator fills its pool), as
        # torch.cuda.graphs asks before a capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self._forward()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # Captured on a stream of the model's device: torch.cuda.graph's default stream is the
        # current device's, and a cuda:1 model's kernels would leave that graph empty.
        with torch.cuda.device(device), torch.inference_mode():
            with torch.cuda.graph(self.graph, stream=side):
                self.outputs = self._forward()
        self.host_out = [torch.empty(o.shape, dtype=o.dtype).pin_memory() for o in self.outputs]

    def _forward(self):
        positions, _, grid = self.model.positions(self.images, self.cfg)
        probs = bin_probabilities(positions, self.text, self.temperature, grid)
        return self.model.depth_from_probabilities(
            probs, self.bins, self.cfg, self.images.shape[1:3]
        )

    @torch.inference_mode()  # as captured: a graph of inference tensors replays under it
    def run(self, images: np.ndarray, text, bins, temperature: float) -> list:
        """Replay on `images` (B, H, W, 3) uint8 with this frame's text features, bins and
        temperature; the outputs as NumPy arrays of their own (the next frame reuses the
        buffers)."""
        device = self.model.device
        current = torch.cuda.current_stream(device)
        np.copyto(self.host_in.numpy(), images)
        with torch.cuda.stream(self.copy_stream):
            self.images.copy_(self.host_in, non_blocking=True)
        current.wait_stream(self.copy_stream)
        self.text.copy_(text)
        self.bins.copy_(bins.expand_as(self.bins))
        self.temperature.fill_(float(temperature))
        self.graph.replay()
        self.copy_stream.wait_stream(current)
        with torch.cuda.stream(self.copy_stream):
            for host, out in zip(self.host_out, self.outputs):
                host.copy_(out, non_blocking=True)
        self.copy_stream.synchronize()
        return [host.numpy().copy() for host in self.host_out]


class CapturedFrames:
    """The graphs of one estimator, captured on first use of each structure key and checked:
    the first replay must give the eager path's depth on the same frame. A key whose capture
    fails or disagrees stays on the eager path (`run` answers None), with one warning; `status`
    says "on", or "off: <why>" for the last key refused. `capture` makes a CapturedFrame
    (a stand-in in the CPU tests)."""

    def __init__(self, model, capture=CapturedFrame):
        self.model = model
        self._capture = capture
        self._graphs: collections.OrderedDict = collections.OrderedDict()  # key -> frame
        self._eager: dict = {}  # key -> why it runs eagerly
        self.captures = 0
        self.status = "on"

    def run(self, images: np.ndarray, cfg, text, bins) -> list | None:
        """The captured frame's outputs, or None: this frame's key runs on the eager path."""
        batch, height, width, _ = images.shape
        key = structure_key(cfg, batch, height, width, int(bins.shape[-1]))
        if key in self._eager:
            return None
        frame = self._graphs.get(key)
        if frame is None:
            return self._first(key, images, cfg, text, bins)
        self._graphs.move_to_end(key)
        return frame.run(images, text, bins, cfg.temperature)

    def _first(self, key, images, cfg, text, bins):
        """Capture `key`'s graph and check its first replay against the eager path."""
        batch, height, width, _ = images.shape
        self.captures += 1
        try:
            frame = self._capture(self.model, cfg, batch, height, width, text, bins)
            outputs = frame.run(images, text, bins, cfg.temperature)
        except Exception as exc:  # any failure of the capture: the eager path still works
            return self._refuse(key, f"capture failed: {type(exc).__name__}: {exc}")
        eager = self.model.predict_eager(images).depth
        graph = outputs[0]
        if not np.array_equal(np.isnan(graph), np.isnan(eager)):
            return self._refuse(key, "the graph's depth has NaN where the eager path's has none")
        gap = float(np.nanmax(np.abs(graph - eager))) if np.isfinite(eager).any() else 0.0
        tolerance = AGREEMENT.get(self.model.dtype, AGREEMENT[torch.float16])
        if not gap <= tolerance:
            return self._refuse(
                key, f"the graph's depth differs from the eager path's by {gap:.3g} m"
            )
        log.info("captured a CUDA graph for %dx%d images, batch %d", width, height, batch)
        self._graphs[key] = frame
        while len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        return outputs

    def _refuse(self, key, why: str):
        self._eager[key] = why
        self.status = f"off: {why}"
        log.warning("CUDA graph not used for these frames, running them eagerly: %s", why)
        return None

    def clear(self):
        self._graphs.clear()
        self._eager.clear()
