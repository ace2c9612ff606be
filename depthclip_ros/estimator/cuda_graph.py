"""The whole CUDA frame as one CUDA graph: uint8 upload, crop/resize, normalisation, encoder,
head, upsampling, replayed with one launch instead of hundreds of Python-issued kernels.

One graph per (padded batch, image size, number of bins, the config fields that change the
graph's shape: preprocessing, network input, normalisation, dense features, head precision,
flip). Batches are padded to a power of two (BATCH_SIZES), so a bag's or several cameras'
varying batches share a few graphs, and the cache holds every padded batch of a few image
sizes, within a share of the device's memory (each graph's own pool, measured). Text features,
bins and temperature are inputs of the graph (static tensors, copied only when they changed),
so a run-time change of tokens, bins or temperature replays the same graph.

Frames in flight: each graph has two slots (pinned host buffers and device buffers for its
input and outputs), used in turn, so while one frame replays the next is uploaded and the last
one's arrays come back, each on a stream of its own with events between them. The copies are
not in the graph: the slot's input is copied into the graph's static input, and the outputs out
of its static outputs, on the graph's stream (device to device, cheap). A slot's arrays are
taken before the slot serves again (two frames later). No rclpy.
"""

from __future__ import annotations

import collections
import logging
import queue
import sys
import threading
import weakref

import numpy as np
import torch

from ..config.parameters import IMAGE_PATH_FIELDS
from ..errors import ImageSizeError
from .depth_head import bin_probabilities, temperature_scale
from .result import OUTPUT_FIELDS, Started

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)  # a batch runs as the first of these that holds it
SLOTS = 2  # frames in flight a graph takes: one replaying while the next uploads
IMAGE_SIZES_KEPT = 3  # camera sizes whose graphs of every padded batch the cache keeps
MAX_GRAPHS = len(BATCH_SIZES) * IMAGE_SIZES_KEPT  # least recently used dropped beyond
GRAPH_MEMORY_SHARE = 0.25  # of the device's memory the kept graphs may hold, likewise
# How far a new graph's first replay may be from the eager path on the same frame (metres).
AGREEMENT = {torch.float16: 5e-3, torch.float32: 1e-4}

log = logging.getLogger("depthclip_ros")


def release_device_memory(device) -> None:
    """Give the caching allocator's free blocks back (after a failed capture)."""
    if getattr(device, "type", "") == "cuda":
        torch.cuda.empty_cache()


def graph_memory_budget(device) -> int:
    """Bytes the kept graphs of a model on `device` may hold: GRAPH_MEMORY_SHARE of its memory
    (a Jetson's memory is the robot's too); no bound off CUDA (the CPU tests' stand-ins)."""
    if getattr(device, "type", "") != "cuda":
        return sys.maxsize
    return int(torch.cuda.get_device_properties(device).total_memory * GRAPH_MEMORY_SHARE)


def pool_bytes(segments, pool, device_index: int) -> int:
    """Device memory of one graph's private pool: the caching allocator's segments (as
    torch.cuda.memory_snapshot() lists them) that belong to `pool` (CUDAGraph.pool()) on the
    device. Reserved-memory differences around a capture are no measure: the capture empties
    the allocator's cache in between, and they go negative."""
    return sum(
        segment["total_size"]
        for segment in segments
        if tuple(segment["segment_pool_id"]) == tuple(pool)
        and segment.get("device", device_index) == device_index
    )


def held_bytes(frame, segments, device_index: int) -> int:
    """Memory a captured `frame` holds: its graph's pool (pool_bytes of `segments`), its static
    inputs on the device and its slots' buffers, on the device and pinned on the host
    (page-locked: on a Jetson the same memory as the device's, and on any host memory the
    system cannot page out)."""
    tensors = [frame.images, frame.text, frame.bins, frame.scale]
    for slot in frame.ring.slots:
        tensors += [slot.host_in, slot.images, *slot.outputs, *slot.host_out]
    return pool_bytes(segments, frame.graph.pool(), device_index) + sum(
        t.numel() * t.element_size() for t in tensors
    )


def padded_batches(max_batch: int) -> list:
    """The padded batches that batches of 1 to `max_batch` images run as."""
    return sorted({padded_batch(batch) for batch in range(1, max_batch + 1)})


def structure_key(cfg, batch: int, height: int, width: int, bins: int) -> tuple:
    return (batch, height, width, bins, *(getattr(cfg, f) for f in IMAGE_PATH_FIELDS))


def padded_batch(batch: int) -> int:
    """The batch a graph runs `batch` images as (the rest padded): the first of BATCH_SIZES that
    holds it; beyond them, the next multiple of the largest (a bag's batch of 100 and of 120
    share a graph of 128)."""
    step = BATCH_SIZES[-1]
    return next((size for size in BATCH_SIZES if size >= batch), -(-batch // step) * step)


class PinnedBuffers:
    """Pinned host buffers of the eager CUDA upload, one per input shape, the `kept` most
    recently used (a camera's shape is reused every frame; a bag's many shapes are not kept)."""

    def __init__(self, kept: int = 4, allocate=None):
        self.kept = kept
        self._allocate = allocate or (lambda like: torch.empty_like(like).pin_memory())
        self._buffers: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buffers)

    def like(self, tensor):
        """The buffer for `tensor`'s shape and dtype (made on first use)."""
        key = (tuple(tensor.shape), tensor.dtype)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = self._allocate(tensor)
            while len(self._buffers) > self.kept:
                self._buffers.popitem(last=False)
        self._buffers.move_to_end(key)
        return buffer


class Slot:
    """One frame in flight: its input and outputs on the host (pinned) and on the device, the
    events between its upload, replay and download, and the frame that holds it."""

    def __init__(self, batch: int, height: int, width: int, outputs, device):
        self.host_in = torch.empty((batch, height, width, 3), dtype=torch.uint8).pin_memory()
        self.images = torch.empty((batch, height, width, 3), dtype=torch.uint8, device=device)
        self.outputs = [torch.empty_like(o) for o in outputs]
        self.host_out = [torch.empty(o.shape, dtype=o.dtype).pin_memory() for o in outputs]
        self.uploaded, self.replayed = torch.cuda.Event(), torch.cuda.Event()  # streams wait
        # The host waits for this one: blocking, it sleeps instead of spinning on a core the
        # node's other threads need.
        self.arrived = torch.cuda.Event(blocking=True)
        self.holder = None  # the InFlight whose arrays these buffers hold, until taken


class SlotRing:
    """Slots used in turn: a slot's last frame has its arrays taken before it serves again."""

    def __init__(self, slots):
        self.slots, self._turn = list(slots), 0

    def take(self):
        slot = self.slots[self._turn]
        self._turn = (self._turn + 1) % len(self.slots)
        if slot.holder is not None:  # the frame before last: its arrays taken, its buffers free
            slot.holder.wait()
        return slot


class InFlight:
    """A replay's arrays on their way to the host: `done()` says whether they have arrived,
    `wait()` waits for them and gives them as NumPy arrays of their own. From any thread, once
    or more."""

    def __init__(self, slot, wanted):
        self._slot, self._wanted = slot, wanted
        self._arrays = None
        self._lock = threading.Lock()

    def done(self) -> bool:
        return self._arrays is not None or self._slot.arrived.query()

    def wait(self) -> list:
        with self._lock:
            if self._arrays is None:
                self._slot.arrived.synchronize()
                self._arrays = [
                    host.numpy().copy()
                    for host, copy in zip(self._slot.host_out, self._wanted)
                    if copy
                ]
            return self._arrays

    def when_done(self, callback) -> None:
        ARRIVALS.when_done(self, callback)


class Arrivals:
    """Calls each callback once its frame's arrays are on the host: torch exposes no host
    callback on a CUDA stream, so one thread waits for them in turn (and takes them, off the
    caller's thread)."""

    def __init__(self):
        self._waiting = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def when_done(self, pending, callback) -> None:
        if pending.done():
            callback()
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="depthclip-cuda-arrivals", daemon=True
                )
                self._thread.start()
        self._waiting.put((pending, callback))

    def _run(self) -> None:
        while True:
            pending, callback = self._waiting.get()
            try:
                pending.wait()
            except Exception:  # the caller's own wait says what went wrong
                pass
            try:
                callback()
            except Exception:  # the waiter's own; the next frames' callbacks still come
                log.exception("a callback on a CUDA frame's arrival failed")


ARRIVALS = Arrivals()


class CapturedFrame:
    """One captured graph with its static inputs and outputs, and its slots."""

    def __init__(self, model, cfg, batch: int, height: int, width: int, text, bins):
        self.model, self.cfg = model, cfg  # `model`: a weak proxy (no cycle with the estimator)
        device = model.device
        # Its own reference to every constant the frame reads (the normalisation's mean and
        # std): a graph replays addresses, which must outlive any cache that made them.
        self.constants = model.normalization_constants(cfg)
        self.upload_stream = torch.cuda.Stream(device)
        self.download_stream = torch.cuda.Stream(device)
        self.images = torch.empty((batch, height, width, 3), dtype=torch.uint8, device=device)
        self.text = text.detach().clone()
        self.bins = bins.detach().expand(batch, -1).clone()
        self.scale = torch.tensor(temperature_scale(cfg.temperature), device=device)
        # What the static inputs hold: copied again only when the frame brings others (a
        # config change replaces the head's tensors whole).
        self._inputs_from = (text, bins, float(cfg.temperature))
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
        # Capture errors only for this thread's unsafe calls: another thread's CUDA work (a
        # pinned buffer allocated by a reader) must not invalidate this capture.
        with torch.cuda.device(device), torch.inference_mode():
            with torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
                self.outputs = self._forward()
        with torch.cuda.device(device):
            self.ring = SlotRing(
                Slot(batch, height, width, self.outputs, device) for _ in range(SLOTS)
            )
        self.memory_bytes = held_bytes(self, torch.cuda.memory_snapshot(), device.index or 0)

    def _forward(self):
        positions, _, grid = self.model.positions(self.images, self.cfg)
        probs = bin_probabilities(positions, self.text, self.scale, grid)
        return self.model.depth_from_probabilities(
            probs, self.bins, self.cfg, self.images.shape[1:3]
        )

    @torch.inference_mode()  # as captured: a graph of inference tensors replays under it
    def start(self, images: np.ndarray, text, bins, temperature: float, fields=OUTPUT_FIELDS):
        """Replay on `images` (B, H, W, 3) uint8 with this frame's text features, bins and
        temperature, without waiting: an InFlight of the outputs `fields` (of OUTPUT_FIELDS, in
        its order); the others stay on the device. Frames started from one thread replay in
        the order they were started."""
        device = self.model.device
        slot = self.ring.take()
        np.copyto(slot.host_in.numpy(), images)
        with torch.cuda.device(device):
            current = torch.cuda.current_stream(device)
            with torch.cuda.stream(self.upload_stream):
                slot.images.copy_(slot.host_in, non_blocking=True)
                slot.uploaded.record(self.upload_stream)
            current.wait_event(slot.uploaded)
            self.images.copy_(slot.images)
            inputs = (text, bins, float(temperature))
            if inputs[0] is not self._inputs_from[0]:
                self.text.copy_(text)
            if inputs[1] is not self._inputs_from[1]:
                self.bins.copy_(bins.expand_as(self.bins))
            if inputs[2] != self._inputs_from[2]:
                self.scale.fill_(temperature_scale(inputs[2]))
            self._inputs_from = inputs
            self.graph.replay()
            wanted = [name in fields for name in OUTPUT_FIELDS]
            for kept, out, copy in zip(slot.outputs, self.outputs, wanted):
                if copy:
                    kept.copy_(out)
            slot.replayed.record(current)
            self.download_stream.wait_event(slot.replayed)
            with torch.cuda.stream(self.download_stream):
                for host, kept, copy in zip(slot.host_out, slot.outputs, wanted):
                    if copy:
                        host.copy_(kept, non_blocking=True)
                slot.arrived.record(self.download_stream)
        slot.holder = InFlight(slot, wanted)
        return slot.holder

    def run(self, images: np.ndarray, text, bins, temperature: float, fields=OUTPUT_FIELDS):
        """`start`, waited for: the outputs `fields` as NumPy arrays of their own."""
        return self.start(images, text, bins, temperature, fields).wait()


class CapturedFrames:
    """The graphs of one estimator, captured on first use of each structure key and checked:
    the first replay must give the eager path's depth on the same frame. A key whose capture
    fails or disagrees stays on the eager path (`run` answers None), with one warning; `status`
    says "on", or "off: <why>" for the last key refused. The least recently used graphs go
    beyond MAX_GRAPHS or `max_bytes` (default: graph_memory_budget). `capture` makes a
    CapturedFrame (a stand-in in the CPU tests)."""

    def __init__(self, model, capture=CapturedFrame, max_bytes: int | None = None):
        # A weak proxy: the estimator owns its graphs, and the graphs' device memory goes with
        # the estimator at once, not when the cycle collector finds a cycle.
        self.model = weakref.proxy(model)
        self._capture = capture
        self.max_bytes = graph_memory_budget(model.device) if max_bytes is None else max_bytes
        self._graphs: collections.OrderedDict = collections.OrderedDict()  # key -> frame
        self._eager: dict = {}  # key -> why it runs eagerly
        self.captures = 0
        self.evictions = 0  # graphs dropped for others: more keys in use than the cache holds

    @property
    def status(self) -> str:
        """ "on"; "off: <why> (<size>, batch <b>); ..." while no graph is kept; else "on for N
        graphs; eager: <why> (<size>, batch <b>); ..." for the keys refused."""
        if not self._eager:
            return "on"
        refused = "; ".join(
            f"{why} ({key[2]}x{key[1]}, batch {key[0]})" for key, why in self._eager.items()
        )
        if not self._graphs:
            return f"off: {refused}"
        return f"on for {len(self._graphs)} graphs; eager: {refused}"

    @property
    def kept(self) -> int:
        """Graphs in the cache."""
        return len(self._graphs)

    @property
    def memory_bytes(self) -> int:
        """Device memory the kept graphs hold."""
        return sum(getattr(frame, "memory_bytes", 0) for frame in self._graphs.values())

    def run(self, images: np.ndarray, head, fields=OUTPUT_FIELDS) -> list | None:
        """The captured frame's outputs `fields` (in OUTPUT_FIELDS' order) under `head` (its
        config, text features and bins), or None: this frame's key runs on the eager path."""
        pending = self.start(images, head, fields)
        return None if pending is None else pending()

    def start(self, images: np.ndarray, head, fields=OUTPUT_FIELDS) -> Started | None:
        """`run` begun: a Started of its outputs (a new key's: captured, checked and on the
        host), or None: this frame's key runs on the eager path."""
        cfg, text, bins = head.config, head.text, head.bins
        batch, height, width, _ = images.shape
        padded = padded_batch(batch)
        if padded > batch:  # copies of the last image: the graph's rows beyond are dropped
            images = np.concatenate([images, np.repeat(images[-1:], padded - batch, axis=0)])
        key = structure_key(cfg, padded, height, width, int(bins.shape[-1]))
        if key in self._eager:
            return None
        frame = self._graphs.get(key)
        if frame is None:
            outputs = self._first(key, images, head, fields)
            if outputs is None:
                return None
            pending = Started(lambda: outputs)
        else:
            self._graphs.move_to_end(key)
            in_flight = frame.start(images, text, bins, cfg.temperature, fields)
            pending = Started(in_flight.wait, in_flight.done, in_flight.when_done)
        if padded == batch:
            return pending
        # the padded rows dropped
        return Started(
            lambda: [out[:batch].copy() for out in pending()], pending.done, pending.when_done
        )

    def _first(self, key, images, head, fields):
        """Capture `key`'s graph and check its first replay against the eager path under the
        same `head` (a parameter change since the capture is no disagreement)."""
        cfg, text, bins = head.config, head.text, head.bins
        batch, height, width, _ = images.shape
        self.captures += 1
        frame, failure = None, None
        try:
            frame = self._capture(self.model, cfg, batch, height, width, text, bins)
            checked = tuple(f for f in OUTPUT_FIELDS if f == "depth" or f in fields)
            outputs = frame.run(images, text, bins, cfg.temperature, checked)
            eager = self.model.predict_eager(images, arrays=("depth",), head=head).depth
        except ImageSizeError:  # the frame's own error (the eager path says it too), no graph's
            raise
        except Exception as exc:  # the capture, its replay or the check (out of memory...)
            failure = f"capture failed: {type(exc).__name__}: {exc}"
        if failure is not None:
            # Out of the except block: its traceback, which held the failed graph (a capture
            # that raised in its constructor is referenced only there), is gone, so the graph's
            # pool and buffers are free when the cache is emptied for the eager path.
            frame = None
            release_device_memory(self.model.device)
            return self._refuse(key, failure)
        graph = outputs[0]  # the depth: checked whether or not the caller asked for it
        if not np.array_equal(np.isnan(graph), np.isnan(eager)):
            return self._refuse(key, "the graph's depth has NaN where the eager path's has none")
        gap = float(np.nanmax(np.abs(graph - eager))) if np.isfinite(eager).any() else 0.0
        tolerance = AGREEMENT.get(self.model.dtype, AGREEMENT[torch.float16])
        if not gap <= tolerance:
            return self._refuse(
                key, f"the graph's depth differs from the eager path's by {gap:.3g} m"
            )
        log.info(
            "captured a CUDA graph for %dx%d images, batch %d: %.0f MB on the device",
            width,
            height,
            batch,
            getattr(frame, "memory_bytes", 0) / 1e6,
        )
        self._graphs[key] = frame
        evicted = 0
        while len(self._graphs) > 1 and (
            len(self._graphs) > MAX_GRAPHS or self.memory_bytes > self.max_bytes
        ):
            self._graphs.popitem(last=False)
            evicted += 1
        if evicted:  # the pushed-out pools' memory back to the device, not kept cached
            self.evictions += evicted
            release_device_memory(self.model.device)
        return [out for name, out in zip(checked, outputs) if name in fields]

    def _refuse(self, key, why: str):
        self._eager[key] = why
        log.warning("CUDA graph not used for these frames, running them eagerly: %s", why)
        return None

    def clear(self):
        self._graphs.clear()
        self._eager.clear()
