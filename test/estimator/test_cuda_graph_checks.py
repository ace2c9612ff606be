"""The CUDA graphs' checks and their way back, on CPU: CapturedFrames with a stand-in for the
capture (one that gives the eager path's outputs, one that is off by a centimetre, one whose
capture raises). A new graph's first replay is compared with the eager path on the same frame;
a key that fails or disagrees runs eagerly from then on, and the status says why."""

import logging

import numpy as np
import pytest
import torch
from captured_frame_stand_in import stand_in
from helpers import structured_image

from depthclip_ros.errors import ImageSizeError
from depthclip_ros.estimator import cuda_graph
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.cuda_graph import CapturedFrames
from depthclip_ros.estimator.depth_head import bin_probabilities, temperature_scale
from depthclip_ros.estimator.result import OUTPUT_FIELDS


@pytest.fixture
def model(make_config):
    return DepthClip(make_config())


def test_a_graph_that_agrees_is_replayed(model):
    capture = stand_in()
    model.graphs = CapturedFrames(model, capture)
    image = structured_image(96, 128)
    first, second = model.predict(image), model.predict(image)
    np.testing.assert_array_equal(first.depth, model.predict_eager(image).depth)
    np.testing.assert_array_equal(second.depth, first.depth)
    assert capture.made == [(1, 96, 128)] and capture.replays == [1, 1]
    assert model.graph_status == "on" and model.graphs.captures == 1


@pytest.mark.parametrize(
    "capture, why",
    [
        (stand_in(offset_m=0.01), "the graph's depth differs from the eager path's by 0.01 m"),
        (stand_in(fails=True), "capture failed: RuntimeError: operation not permitted"),
    ],
)
def test_a_graph_that_fails_or_disagrees_leaves_its_frames_on_the_eager_path(
    model, capture, why, caplog
):
    model.graphs = CapturedFrames(model, capture)
    image = structured_image(96, 128)
    eager = model.predict_eager(image).depth
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        for _ in range(3):
            np.testing.assert_array_equal(model.predict(image).depth, eager)
    assert model.graph_status.startswith(f"off: {why}")
    assert model.graphs.captures == 1  # refused once, not captured again for each frame
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("CUDA graph not used for these frames, running them eagerly: ")
    # Another size is a new key: captured and checked on its own.
    model.predict(structured_image(120, 160))
    assert model.graphs.captures == 2


def test_off_or_on_cpu_no_graphs(make_config):
    assert DepthClip(make_config(cuda_graphs="off")).graph_status == "not used"  # CPU
    assert DepthClip(make_config()).graphs is None


def test_batches_are_padded_to_a_few_graphs_and_sliced_back(model):
    """A bag's or several cameras' varying batches: 3 runs as 4 and 5..8 as 8, each image's
    depth its own (the padding rows dropped)."""
    capture = stand_in()
    model.graphs = CapturedFrames(model, capture)
    images = np.stack([structured_image(96, 128, seed=s) for s in range(8)])
    for batch in (3, 4, 5, 7, 8, 1):
        result = model.predict(images[:batch])
        assert result.depth.shape[0] == batch and result.bin_probs.shape[0] == batch
        # (a batch of another size may sum in another order: float rounding apart)
        eager = model.predict_eager(images[:batch]).depth
        np.testing.assert_allclose(result.depth, eager, atol=1e-5)
    assert [made[0] for made in capture.made] == [4, 8, 1]  # three graphs for six batches
    assert model.graphs.evictions == 0


def test_graphs_beyond_the_cache_push_the_least_recently_used_out_counted(model, monkeypatch):
    monkeypatch.setattr(cuda_graph, "MAX_GRAPHS", 3)
    capture = stand_in()
    model.graphs = CapturedFrames(model, capture)
    sizes = [(64, 96), (96, 128), (128, 160), (160, 192)]
    for size in sizes:
        model.predict(structured_image(*size))
    assert len(capture.made) == 4 and model.graphs.evictions == 1
    model.predict(structured_image(*sizes[-1]))  # kept: replayed
    model.predict(structured_image(*sizes[0]))  # pushed out: captured again
    assert len(capture.made) == 5 and model.graphs.evictions == 2


def test_an_estimator_and_its_graphs_go_without_the_cycle_collector(make_config):
    import gc
    import weakref

    model = DepthClip(make_config())
    model.graphs = CapturedFrames(model, stand_in())
    model.predict(structured_image(96, 128))
    gone = weakref.ref(model)
    gc.disable()
    try:
        del model
        assert gone() is None  # freed by reference counting: its GPU memory goes at once
    finally:
        gc.enable()


def test_only_the_arrays_asked_for_come_back(model):
    """predict(arrays=...): on the captured path only those cross to the host (the depth
    too: temporal_filter makes it from the grid's); the eager path answers alike. The first
    replay's check still compares the depth."""
    model.graphs = CapturedFrames(model, stand_in())
    image = structured_image(96, 128)
    for predict in (model.predict, model.predict_eager):
        result = predict(image, arrays=("bin_probs",))
        assert result.depth is None and result.depth_std is None
        assert result.coarse_depth is None and result.coarse_std is None
        np.testing.assert_allclose(result.bin_probs, model.predict_eager(image).bin_probs)
        grid = predict(image, arrays=("coarse_depth", "depth"))
        np.testing.assert_allclose(grid.depth, model.predict_eager(image).depth, atol=1e-6)
        assert grid.coarse_depth.shape[0] == 1 and grid.bin_probs is None
        assert predict(image, arrays=()).depth is None
    assert model.graphs.kept == 1 and model.graph_status == "on"
    assert model.predict(image).depth_std is not None  # None: every array
    with pytest.raises(ValueError, match="no such arrays"):
        model.predict(image, arrays=("points",))


def test_a_warm_up_at_the_cameras_size_captures_its_graphs_before_its_first_frame(model):
    """The node announces a camera's size from its camera_info, with its max_batch: every
    padded batch up to it is captured then, and the frames replay (none captured mid-stream)."""
    capture = stand_in()
    model.graphs = CapturedFrames(model, capture)
    model.warm_up((120, 160), max_batch=3)
    assert capture.made == [(1, 120, 160), (2, 120, 160), (4, 120, 160)]
    images = np.stack([structured_image(120, 160, seed=s) for s in range(3)])
    for batch in (1, 3, 2):
        model.predict(images[:batch])
    assert model.graphs.captures == 3 and model.prepares_image_sizes
    model.warm_up((120, 160))  # max_batch 1: the batch-1 graph, kept
    assert model.graphs.captures == 3


def test_the_kept_graphs_are_bounded_by_their_device_memory_too(model):
    """Each graph's memory is its own pool's (stand-in: 100 MB each); beyond the budget the
    least recently used go, the newest always stays."""

    class Sized(stand_in()):
        memory_bytes = 100_000_000

    model.graphs = CapturedFrames(model, Sized, max_bytes=250_000_000)
    sizes = [(64, 96), (96, 128), (128, 160)]
    for size in sizes:
        model.predict(structured_image(*size))
    assert model.graphs.kept == 2 and model.graphs.evictions == 1
    assert model.graphs.memory_bytes == 200_000_000
    model.predict(structured_image(*sizes[0]))  # pushed out: captured again
    assert model.graphs.captures == 4 and model.graphs.evictions == 2
    model.graphs.max_bytes = 10  # a single graph beyond the budget is still kept
    model.predict(structured_image(*sizes[1]))
    assert model.graphs.kept == 1 and model.graphs.memory_bytes == 100_000_000


def test_a_check_after_a_parameter_change_compares_under_the_captured_head(model):
    """A parameter change (here: other bins, the same count) can land between a graph's capture
    and its first replay's check: the check runs the eager path under the head the graph was
    captured with, so the graph is kept, and the next frame replays it under the new head."""
    changed = model.config.replace(depth_bins=tuple(2 * b for b in model.config.depth_bins))

    class ChangedDuringCapture(stand_in()):
        def __init__(self, model, cfg, batch, height, width, text, bins):
            super().__init__(model, cfg, batch, height, width, text, bins)
            model.update_config(changed)  # a parameter service call on another thread

    model.graphs = CapturedFrames(model, ChangedDuringCapture)
    image = structured_image(96, 128)
    model.predict(image)
    assert model.graph_status == "on" and model.graphs.kept == 1
    np.testing.assert_allclose(
        model.predict(image).depth, model.predict_eager(image).depth, atol=1e-6
    )
    assert model.graphs.captures == 1


def test_a_failed_capture_is_released_before_the_device_cache_is_emptied(model, monkeypatch):
    """A capture that raises in its constructor is referenced only by the exception's
    traceback: emptying the allocator's cache while that is alive keeps its pool. The failed
    graph must be gone by then (a capture that fails in its first replay likewise)."""
    import weakref

    made = []

    class FailsHalfway(stand_in()):
        def __init__(self, model, cfg, batch, height, width, text, bins):
            made.append(weakref.ref(self))
            raise RuntimeError("operation not permitted when stream is capturing")

    class FailsInReplay(stand_in()):
        def __init__(self, model, cfg, batch, height, width, text, bins):
            made.append(weakref.ref(self))

        def run(self, images, text, bins, temperature, fields=OUTPUT_FIELDS):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")

    alive_at_release = []
    monkeypatch.setattr(
        cuda_graph, "release_device_memory", lambda device: alive_at_release.append(made[-1]())
    )
    for capture in (FailsHalfway, FailsInReplay):
        model.graphs = CapturedFrames(model, capture)
        model.predict(structured_image(96, 128))
        assert model.graph_status.startswith("off: capture failed: ")
    assert len(made) == 2 and alive_at_release == [None, None]


def test_a_graph_counts_its_slots_buffers_beside_its_pool():
    """A captured frame's memory: its pool's segments, its static inputs on the device and
    each slot's buffers, on the device and pinned on the host (a Jetson's device memory is its
    host memory)."""
    import types

    def slot():
        return types.SimpleNamespace(
            host_in=torch.zeros((2, 48, 64, 3), dtype=torch.uint8),
            images=torch.zeros((2, 48, 64, 3), dtype=torch.uint8),
            outputs=[torch.zeros((2, 48, 64)), torch.zeros((2, 7, 2, 2))],
            host_out=[torch.zeros((2, 48, 64)), torch.zeros((2, 7, 2, 2))],
            holder=None,
        )

    frame = types.SimpleNamespace(
        graph=types.SimpleNamespace(pool=lambda: (1, 3)),
        images=torch.zeros((2, 48, 64, 3), dtype=torch.uint8),
        text=torch.zeros((1024, 7), dtype=torch.float16),
        bins=torch.zeros((2, 7)),
        scale=torch.tensor(10.0),
        ring=cuda_graph.SlotRing([slot(), slot()]),
    )
    segments = [{"device": 0, "total_size": 2 << 20, "segment_pool_id": (1, 3)}]
    static_inputs = 2 * 48 * 64 * 3 + 1024 * 7 * 2 + 2 * 7 * 4 + 4
    each_slot = 2 * (2 * 48 * 64 * 3 + (2 * 48 * 64 + 2 * 7 * 2 * 2) * 4)
    assert cuda_graph.held_bytes(frame, segments, 0) == (2 << 20) + static_inputs + 2 * each_slot


def test_a_graphs_memory_is_its_pools_segments():
    """torch.cuda.memory_snapshot()'s segments (their keys as torch/cuda/memory.py documents
    them): those of the graph's pool on its device count; the allocator's other segments, and
    another device's, do not."""
    segments = [
        {"device": 0, "total_size": 2 << 20, "segment_pool_id": (0, 0)},  # the default pool
        {"device": 0, "total_size": 20 << 20, "segment_pool_id": (1, 3)},
        {"device": 0, "total_size": 4 << 20, "segment_pool_id": [1, 3]},
        {"device": 1, "total_size": 8 << 20, "segment_pool_id": (1, 3)},
        {"device": 0, "total_size": 6 << 20, "segment_pool_id": (1, 4)},
    ]
    assert cuda_graph.pool_bytes(segments, (1, 3), 0) == 24 << 20
    assert cuda_graph.pool_bytes(segments, (1, 3), 1) == 8 << 20
    assert cuda_graph.pool_bytes([], (1, 3), 0) == 0
    assert cuda_graph.padded_batches(3) == [1, 2, 4]
    assert cuda_graph.padded_batches(64) == [1, 2, 4, 8, 16, 32, 64]


def test_an_out_of_memory_in_the_first_replays_check_leaves_that_key_eager(model, monkeypatch):
    """The check of a new graph's first replay runs the eager path, which can run out of device
    memory beside the new graph: the key is refused (not captured again for every frame), the
    capture dropped and the allocator's cache freed."""
    capture = stand_in()
    model.graphs = CapturedFrames(model, capture)
    freed = []
    monkeypatch.setattr(cuda_graph, "release_device_memory", lambda device: freed.append(1))
    eager = model.predict_eager
    calls = []

    def eager_once_out_of_memory(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # torch's own class for it, on CPU
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return eager(*args, **kwargs)

    monkeypatch.setattr(model, "predict_eager", eager_once_out_of_memory)
    image = structured_image(96, 128)
    for _ in range(3):
        np.testing.assert_array_equal(model.predict(image).depth, eager(image).depth)
    assert model.graphs.captures == 1 and freed == [1] and model.graphs.kept == 0
    assert model.graph_status == (
        "off: capture failed: OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB "
        "(128x96, batch 1)"
    )


def test_the_status_is_per_size_and_a_frames_own_size_error_is_no_failed_capture(
    make_config, monkeypatch
):
    model = DepthClip(make_config())
    sizes_refused = {(120, 160)}

    class PerSize(stand_in()):
        def __init__(self, model, cfg, batch, height, width, text, bins):
            if (height, width) in sizes_refused:
                raise RuntimeError("operation not permitted when stream is capturing")
            super().__init__(model, cfg, batch, height, width, text, bins)

    model.graphs = CapturedFrames(model, PerSize)
    model.predict(structured_image(96, 128))
    model.predict(structured_image(120, 160))
    assert model.graph_status == (
        "on for 1 graphs; eager: capture failed: RuntimeError: operation not permitted when "
        "stream is capturing (160x120, batch 1)"
    )
    crop = DepthClip(make_config(preprocessing="crop"))  # takes 640x480 frames only
    crop.graphs = CapturedFrames(crop, stand_in())
    with pytest.raises(ImageSizeError):
        crop.predict(structured_image(96, 128))
    assert crop.graph_status == "on" and crop.graphs.kept == 0  # the frame's error, not a graph's


@pytest.mark.parametrize("temperature", [0.1, 0.07, 0.3, 1.7])
def test_the_eager_path_and_the_graphs_scale_tensor_give_the_same_fp16_head(temperature):
    """The graph multiplies by a 0-dim float32 tensor, the eager path by a number: both hold
    temperature_scale, so the fp16 logits agree to the bit (a float32 tensor divisor against a
    Python float one differed by an ulp on about 1 % of logits on CUDA)."""
    generator = torch.Generator().manual_seed(3)
    positions = torch.randn(2, 35, 16, generator=generator).half()
    positions = positions / positions.norm(dim=-1, keepdim=True)
    text = torch.randn(16, 7, generator=generator).half()
    number = temperature_scale(temperature)
    eager = bin_probabilities(positions, text, number, (5, 7))
    graph = bin_probabilities(positions, text, torch.tensor(number), (5, 7))
    assert eager.dtype == torch.float16
    torch.testing.assert_close(eager, graph, atol=0, rtol=0)
    assert number == float(np.float32(1.0) / np.float32(temperature))


def test_a_cuda_device_is_resolved_to_its_index_once(monkeypatch):
    """What the core caches per device (the normalisation constants) is read under the same
    key as it is made: cuda and auto resolve to cuda:N (stand-ins for a machine with 2 GPUs)."""
    from depthclip_ros.estimator.clip_loading import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_batches_beyond_64_share_padded_graphs_and_pinned_buffers_are_bounded():
    assert [cuda_graph.padded_batch(b) for b in (1, 3, 64, 65, 100, 128, 129)] == [
        1,
        4,
        64,
        128,
        128,
        128,
        192,
    ]
    made = []
    buffers = cuda_graph.PinnedBuffers(kept=2, allocate=lambda like: made.append(1) or like * 0)
    frames = [torch.zeros((1, h, 64, 3), dtype=torch.uint8) for h in (48, 48, 96, 120, 48)]
    got = [buffers.like(f) for f in frames]
    assert len(made) == 4 and len(buffers) == 2  # 48 reused once, then pushed out by 96, 120
    assert got[0] is got[1] and tuple(got[3].shape) == (1, 120, 64, 3)


def test_frames_in_flight_give_what_one_at_a_time_gives(model):
    """With graphs, frames are begun before the earlier ones are taken (two a graph in flight:
    a third takes the first's arrays before its slot serves again). Begun across camera sizes
    changing mid-stream, padded batches, a parameter change and a size whose capture failed
    (eager), then taken in order: each equals the one-at-a-time eager path run when it began
    (its depth moved by the 1.5x bins after the change: a stale head would show)."""

    class FailsForOneSize(stand_in()):
        def __init__(self, model, cfg, batch, height, width, text, bins):
            if (height, width) == (64, 80):
                raise RuntimeError("out of memory")
            super().__init__(model, cfg, batch, height, width, text, bins)

    assert model.frames_in_flight == 1
    model.graphs = CapturedFrames(model, FailsForOneSize)
    assert model.frames_in_flight == 2
    hotter = model.config.replace(
        temperature=0.5, depth_bins=tuple(1.5 * b for b in model.config.depth_bins)
    )
    steps = [(96, 128, 1), (96, 128, 1), (72, 96, 3), (96, 128, 1), (64, 80, 1), (72, 96, 3)]
    steps += [(96, 128, 1), "change", (96, 128, 1), (72, 96, 3), (64, 80, 2), (96, 128, 1)]
    begun, expected = [], []
    for i, step in enumerate(steps):
        if step == "change":
            model.update_config(hotter)
            continue
        height, width, batch = step
        images = np.stack([structured_image(height, width, seed=i * 10 + b) for b in range(batch)])
        begun.append(model.begin_predict(images, arrays=("depth", "depth_std")))
        expected.append(model.predict_eager(images, arrays=("depth", "depth_std")))
    assert model.graphs.kept == 2 and "out of memory (80x64, batch 1)" in model.graph_status
    for started, eager in zip(begun, expected):
        assert started.done()
        result = started()
        # (a padded batch runs other kernels than the batch alone: within float32's rounding)
        np.testing.assert_allclose(result.depth, eager.depth, rtol=0, atol=1e-6)
        np.testing.assert_allclose(result.depth_std, eager.depth_std, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(result.bins, eager.bins)
    called = []
    begun[-1].when_done(lambda: called.append(1))
    assert called == [1]
