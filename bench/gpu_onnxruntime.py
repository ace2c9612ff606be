"""gpu-check's ONNX Runtime step: the exported any-size RN50 graph on onnxruntime-gpu's CUDA and
TensorRT providers, against the torch core on the same GPU: which provider runs each part of
the graph, their depth gap, nothing printed by ONNX Runtime's own fallback, the CUDA provider's
first frames after its warm-up, TensorRT refusing the whole graph as the tests' stand-in says,
its one trunk engine per largest batch serving two camera sizes, a reopen from the engine cache,
a stale engine rebuilt. Where onnxruntime has no GPU provider the rows say "not run" and why;
where it lists TensorRT, a TensorRT row that did not run is a FAIL.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.export import graph as export
from depthclip_ros.graph_runtimes.onnx_providers import CUDA, TENSORRT, one_line
from depthclip_ros.graph_runtimes.onnx_runtime import OnnxDepthClip

VGA, WIDE = (480, 640), (360, 640)
# |exported graph - torch core| in fp16 at T 1.0 (metres): both are fp16 trunks with float32
# heads (TensorRT runs the trunk alone, so its fp16 build never touches the head); ONNX
# Runtime's CUDA kernels round as torch's do, TensorRT picks tactics of its own (fused
# convolutions, other accumulation orders): a first bound, to be confirmed by a GPU run.
GAP = {CUDA: 5e-3, TENSORRT: 2e-2}
STALL_S = 0.05  # a first frame's time beyond its batch's next ones that counts as a stall


class _Warnings(logging.Handler):
    """The package's warnings while a model opens."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _open(config: DepthClipConfig) -> tuple:
    """(the model, seconds to open it, the warnings it gave, what it printed on stdout: ONNX
    Runtime's own fallback prints its "EP Error" there, which the package turns off)."""
    handler = _Warnings()
    log = logging.getLogger("depthclip_ros")
    log.addHandler(handler)
    printed = io.StringIO()  # ONNX Runtime's wrapper prints its fallback with print()
    try:
        with contextlib.redirect_stdout(printed):
            t0 = time.perf_counter()
            model = OnnxDepthClip(config)
        return model, time.perf_counter() - t0, handler.lines, printed.getvalue()
    finally:
        log.removeHandler(handler)


def onnxruntime_about() -> str:
    """ONNX Runtime's version and the providers it lists, in one line."""
    import onnxruntime as ort

    listed = ", ".join(ort.get_available_providers())
    return f"onnxruntime {ort.__version__}; providers listed: {listed}"


def _gap(model, reference, images) -> float:
    return float(np.nanmax(np.abs(model.predict(images).depth - reference.predict(images).depth)))


def _row(what, provider, detail, ok) -> list:
    return [what, provider, detail, "pass" if ok else "FAIL"]


_GRAPHS = {}  # (checkpoint, precision) -> its any-size graph, exported once in a process


def any_size_graph(config: DepthClipConfig) -> Path:
    """The any-size graph of `config` as depthclip-export writes it."""
    key = (config.model, config.precision)
    if key not in _GRAPHS:
        path = Path(tempfile.mkdtemp()) / "any.onnx"
        export.export(config, path)
        _GRAPHS[key] = path
    return _GRAPHS[key]


def onnxruntime_on_gpu(frames, ckpt, device: str = "cuda:0", reference_device=None) -> tuple:
    """(head, rows, ok): the ONNX Runtime step on `device`; `frames(batch, size)` gives the
    images; `reference_device`: the torch core's (default `device`; "cpu" in a dry run)."""
    import onnxruntime as ort

    folder = Path(tempfile.mkdtemp())
    base = DepthClipConfig(
        model=str(ckpt),
        device=reference_device or device,
        precision="fp16" if (reference_device or device) != "cpu" else "fp32",
        temperature=1.0,
        cache_dir=str(folder / "cache"),
    )
    reference = DepthClip(base)
    precision = base.precision
    any_size = any_size_graph(base)
    head = ["check", "providers (each part of the graph)", "measured", "verdict"]
    config = base.replace(
        model=str(any_size),
        backend="onnxruntime",
        device=device,
        precision=precision,
        tensorrt_cache_dir=str(folder / "tensorrt"),
    )
    images = frames(3, VGA)
    rows = []
    # CUDA alone: the fallback's provider, its depth against the torch core's.
    cuda, _, _, _ = _open(config.replace(onnxruntime_providers="cuda"))
    if cuda.provider != CUDA:
        rows.append(
            [
                "onnxruntime on CUDA",
                cuda.placement,
                "not run: onnxruntime has no CUDA provider here; install onnxruntime-gpu",
                "not run",
            ]
        )
        return head, rows, True
    gap = _gap(cuda, reference, images)
    ok = gap <= GAP[CUDA] and "on CPU" not in cuda.placement
    rows.append(_row("any-size graph, providers cuda", cuda.placement, f"{gap:.2e} m", ok))
    rows.append(_cuda_warmed(cuda, frames))
    del cuda
    # auto: TensorRT on the trunk (its libraries installed), else CUDA with one warning; never
    # ONNX Runtime's own fallback ("EP Error" on stdout, device 0).
    model, seconds, warnings, printed = _open(config)
    gap = _gap(model, reference, images)
    said = "; ".join(w[:120] for w in warnings) or "no warning"
    took = model.provider == TENSORRT and not warnings
    quiet = "EP Error" not in printed
    ok = gap <= GAP[model.provider] and (took or len(warnings) == 1) and quiet
    rows.append(
        _row(
            "any-size graph, providers auto",
            model.placement,
            f"{gap:.2e} m, {seconds:.0f} s; {said}" + ("" if quiet else "; EP Error on stdout"),
            ok,
        )
    )
    del model
    rows += _tensorrt_engines(config, reference, frames, TENSORRT in ort.get_available_providers())
    return head, rows, all(row[3] in ("pass", "not run") for row in rows)


def _cuda_warmed(model, frames) -> list:
    """The CUDA provider warmed at a camera's size for batches up to 4 (what camera_info
    does): each batch's first frame then costs about what its next ones cost (a cuDNN algorithm
    search left for mid-stream costs RN50 hundreds of milliseconds or more: STALL_S)."""
    t0 = time.perf_counter()
    model.warm_up(VGA, max_batch=4)
    warm_up = time.perf_counter() - t0
    stalls = []
    for batch in (3, 1, 4, 2):
        images = frames(batch, VGA)
        times = []
        for _ in range(4):
            t0 = time.perf_counter()
            model.predict(images)
            times.append(time.perf_counter() - t0)
        stalls.append((times[0] - float(np.median(times[1:])), batch))
    stall, batch = max(stalls)
    return _row(
        "CUDA provider warmed at 640x480, max_batch 4: a batch's first frame beyond its next",
        model.placement,
        f"{stall * 1e3:.1f} ms (batch {batch}, worst); warm-up {warm_up:.1f} s",
        stall <= STALL_S,
    )


def _stand_in():
    """The tests' ONNX Runtime stand-in module (test/support/onnx_runtime_stand_in.py), loaded
    from its file: its words are what this GPU's ONNX Runtime is checked against."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "test" / "support" / "onnx_runtime_stand_in.py"
    spec = importlib.util.spec_from_file_location("onnx_runtime_stand_in", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refused_as_the_stand_in_says(config, embed_dim: int) -> list:
    """The whole any-size graph on TensorRT alone, with a profile for its images (what the
    package once passed; `embed_dim`: its text features'): refused, in the words the tests'
    stand-in gives ORT (test/support/onnx_runtime_stand_in.py), so the CPU tests decide as
    this GPU does."""
    import onnxruntime as ort

    tensorrt_refusal = _stand_in().tensorrt_refusal

    bins = len(config.depth_bins)
    shapes = f"images:1x480x640x3,text_features:{embed_dim}x{bins},bins:{bins}"
    options = {"device_id": config.device.partition(":")[2] or "0"}
    options.update({f"trt_profile_{name}_shapes": shapes for name in ("min", "opt", "max")})
    expected = tensorrt_refusal(config.model, options).split("\n")[0]
    settings = ort.SessionOptions()
    settings.log_severity_level = 3
    try:
        ort.InferenceSession(
            config.model,
            sess_options=settings,
            providers=[TENSORRT],
            provider_options=[options],
            enable_fallback=0,
        )
        got = "built"
    except Exception as exc:  # what ORT raises: EPFail, RuntimeError
        got = one_line(str(exc)) or type(exc).__name__
    same = bool(expected) and expected in got
    return _row(
        "whole any-size graph on TensorRT: refused as the stand-in says",
        TENSORRT,
        f"stand-in: {expected[:70]}...; here: {got[:160]}",
        same,
    )


def _tensorrt_engines(config, reference, frames, listed: bool) -> list:
    """The any-size graph on TensorRT: its first trunk engine (batch 1), the engine warm_up
    builds for max_batch 4 serving a VGA and a 640x360 camera, a batch of 6 in parts, a reopen
    from the cache, a stale engine rebuilt. `listed`: onnxruntime lists TensorRT, so rows that
    cannot run are failures, not "not run"."""
    model, seconds, warnings, _ = _open(config)
    if model.provider != TENSORRT:
        why = "; ".join(w[:160] for w in warnings) or "onnxruntime has no TensorRT provider here"
        verdict = "FAIL" if listed else "not run"
        return [["TensorRT engines", model.placement, f"not run: {why}", verdict]]
    root = Path(config.tensorrt_cache_dir)
    rows = [
        _row(
            "first trunk engine (batch 1)",
            model.placement,
            f"built in {seconds:.0f} s",
            not warnings and model.placement.startswith("preprocessing CUDA, trunk Tensorrt"),
        ),
        _refused_as_the_stand_in_says(config, model.embed_dim),
    ]
    t0 = time.perf_counter()
    model.warm_up(VGA, max_batch=4)
    model.warm_up(WIDE, max_batch=4)
    seconds = time.perf_counter() - t0
    built = sorted(p.name for p in root.glob("*/trunk-batch*"))
    images = frames(6, VGA)
    batched = model.predict(images).depth
    one = model.predict(images[5]).depth[0]
    gap = max(_gap(model, reference, images[:3]), _gap(model, reference, frames(2, WIDE)))
    ok = built == ["trunk-batch1", "trunk-batch4"] and np.allclose(batched[5], one, atol=1e-3)
    rows.append(
        _row(
            "warm_up VGA and 640x360, max_batch 4; batch 6 in parts",
            model.placement,
            f"{', '.join(built)} in {seconds:.0f} s; {gap:.2e} m",
            ok and gap <= GAP[TENSORRT],
        )
    )
    del model
    model, seconds, warnings, _ = _open(config)
    rows.append(
        _row(
            "reopen: engine from the cache",
            model.placement,
            f"{seconds:.1f} s",
            model.provider == TENSORRT and not warnings,
        )
    )
    del model
    for engine in root.glob("*/trunk-batch1/*.engine"):
        engine.write_bytes(b"not an engine of this TensorRT")
    model, seconds, warnings, _ = _open(config)
    ok = model.provider == TENSORRT and len(warnings) == 1 and "cannot be read" in warnings[0]
    rows.append(
        _row(
            "stale engine: cleared, built again",
            model.placement,
            f"{seconds:.0f} s; {len(warnings)} warning(s)",
            ok,
        )
    )
    return rows
