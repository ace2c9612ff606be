"""gpu-check's ONNX Runtime step: the exported any-size RN50 graph on onnxruntime-gpu's CUDA and
TensorRT providers, against the torch core on the same GPU: which provider each runs on, their
depth gap, TensorRT's one trunk engine per largest batch serving two camera sizes, a reopen from
the engine cache, a stale engine rebuilt. Where onnxruntime has no GPU provider the rows say "not
run" and why.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.export import graph as export
from depthclip_ros.graph_runtimes.onnx_runtime import CUDA, TENSORRT, OnnxDepthClip

VGA, WIDE = (480, 640), (360, 640)
# |exported graph - torch core| in fp16 at T 1.0 (metres): both are fp16 trunks with float32
# heads (TensorRT runs the trunk alone, so its fp16 build never touches the head); ONNX
# Runtime's CUDA kernels round as torch's do, TensorRT picks tactics of its own (fused
# convolutions, other accumulation orders): a first bound, to be confirmed by a GPU run.
GAP = {CUDA: 5e-3, TENSORRT: 2e-2}


class _Warnings(logging.Handler):
    """The package's warnings while a model opens."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _open(config: DepthClipConfig) -> tuple:
    """(the model, seconds to open it, the warnings it gave)."""
    handler = _Warnings()
    log = logging.getLogger("depthclip_ros")
    log.addHandler(handler)
    try:
        t0 = time.perf_counter()
        model = OnnxDepthClip(config)
        return model, time.perf_counter() - t0, handler.lines
    finally:
        log.removeHandler(handler)


def _gap(model, reference, images) -> float:
    return float(np.nanmax(np.abs(model.predict(images).depth - reference.predict(images).depth)))


def _row(what, provider, detail, ok) -> list:
    return [what, provider, detail, "pass" if ok else "FAIL"]


def onnxruntime_on_gpu(frames, ckpt, device: str = "cuda:0", reference_device=None) -> tuple:
    """(head, rows, ok): the ONNX Runtime step on `device`; `frames(batch, size)` gives the
    images; `reference_device`: the torch core's (default `device`; "cpu" in a dry run)."""
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
    any_size = folder / "any.onnx"
    export.export(base, any_size)
    head = ["check", "provider", "measured", "verdict"]
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
    cuda, _, _ = _open(config.replace(onnxruntime_providers="cuda"))
    if cuda.provider != CUDA:
        rows.append(
            [
                "onnxruntime on CUDA",
                cuda.provider,
                "not run: onnxruntime has no CUDA provider here; install onnxruntime-gpu",
                "not run",
            ]
        )
        return head, rows, True
    gap = _gap(cuda, reference, images)
    rows.append(
        _row("any-size graph, providers cuda", cuda.provider, f"{gap:.2e} m", gap <= GAP[CUDA])
    )
    del cuda
    # auto: TensorRT on the trunk (its libraries installed), else CUDA with one warning.
    model, seconds, warnings = _open(config)
    gap = _gap(model, reference, images)
    said = "; ".join(w[:120] for w in warnings) or "no warning"
    took = model.provider == TENSORRT and not warnings
    ok = gap <= GAP[model.provider] and (took or len(warnings) == 1)
    rows.append(
        _row(
            "any-size graph, providers auto",
            model.provider,
            f"{gap:.2e} m, {seconds:.0f} s; {said}",
            ok,
        )
    )
    del model
    rows += _tensorrt_engines(config, reference, frames)
    return head, rows, all(row[3] in ("pass", "not run") for row in rows)


def _tensorrt_engines(config, reference, frames) -> list:
    """The any-size graph on TensorRT: its first trunk engine (batch 1), the engine warm_up
    builds for max_batch 4 serving a VGA and a 640x360 camera, a batch of 6 in parts, a reopen
    from the cache, a stale engine rebuilt."""
    model, seconds, warnings = _open(config)
    if model.provider != TENSORRT:
        why = "; ".join(w[:160] for w in warnings) or "onnxruntime has no TensorRT provider here"
        return [["TensorRT engines", model.provider, f"not run: {why}", "not run"]]
    root = Path(config.tensorrt_cache_dir)
    rows = [
        _row("first trunk engine (batch 1)", TENSORRT, f"built in {seconds:.0f} s", not warnings)
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
            TENSORRT,
            f"{', '.join(built)} in {seconds:.0f} s; {gap:.2e} m",
            ok and gap <= GAP[TENSORRT],
        )
    )
    del model
    model, seconds, warnings = _open(config)
    rows.append(
        _row(
            "reopen: engine from the cache",
            model.provider,
            f"{seconds:.1f} s",
            model.provider == TENSORRT and not warnings,
        )
    )
    del model
    for engine in root.glob("*/trunk-batch1/*.engine"):
        engine.write_bytes(b"not an engine of this TensorRT")
    model, seconds, warnings = _open(config)
    ok = model.provider == TENSORRT and len(warnings) == 1 and "cannot be read" in warnings[0]
    rows.append(
        _row(
            "stale engine: cleared, built again",
            model.provider,
            f"{seconds:.0f} s; {len(warnings)} warning(s)",
            ok,
        )
    )
    return rows
