"""The CPU variants table of the benchmark: each precision and backend a CPU robot can run (torch
fp32 and bf16, ONNX Runtime fp32 and int8, OpenVINO fp32, bf16 and int8), in one run: the core's
predict at VGA (timed interleaved in this process), the node's output rate for a VGA camera
offered at each rate (the node as its own process, default middleware), the depth figure each
exported graph measured at warm-up on this CPU, and the depth difference from torch fp32 on the
NYU samples and the demo scenes. The int8 graphs as exported before 7-bit weights run beside
today's: what the exactness on x86 without VNNI costs in speed."""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from depthclip_ros.config.params_files import load_config, preset_configs
from depthclip_ros.errors import DepthClipError
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.export.calibration import calibration_frames
from depthclip_ros.export.graph import export
from depthclip_ros.export.quantization import export_int8
from depthclip_ros.metrics import depth_agreement
from depthclip_ros.model_loading import load_estimator
from depthclip_ros.synthetic_scenes import SCENES, render_scene

from .measure import timed
from .node_bench import all_latencies_ms, middleware_env, node_inference_ms, run_nodes

NYU_SAMPLES = Path(__file__).resolve().parents[2] / "shared/data/nyu_samples/official_splits"
# A random CLIP saturates the softmax at the shipped temperature 0.1 (one bin everywhere, every
# variant equal); at 1.0 its depth follows the features, so the differences show.
COMPARED_AT_TEMPERATURE = 1.0


def nyu_frames() -> list:
    from PIL import Image

    return [
        np.asarray(Image.open(p).convert("RGB")) for p in sorted(NYU_SAMPLES.rglob("rgb_*.jpg"))
    ]


def demo_int8(config, path: Path, **options) -> str:
    """`config`'s int8 graph written to `path`, calibrated on the demo scenes (as a user
    without recorded frames would); `options`: export_int8's (weight_bits)."""
    frames, source = calibration_frames("demo")
    export_int8(config, path, frames, source, None, preset_configs(), **options)
    return str(path)


def variants(ckpt: str, folder: Path) -> list:
    """(name, parameter overrides) of every variant; the graphs exported to `folder`, the int8
    one calibrated on the demo scenes (as a user without recorded frames would)."""
    # Exported at the comparison's temperature: the reference frames' float32 depth (and so the
    # figure each graph measures at warm-up) is computed at the export config's temperature.
    config = load_config(
        overrides={"model": ckpt, "device": "cpu", "temperature": COMPARED_AT_TEMPERATURE}
    )
    fp32 = str(folder / "rn50_fp32.onnx")
    export(config, Path(fp32), None, preset_configs())
    int8 = demo_int8(config, folder / "rn50_int8.onnx")
    int8_8bit = demo_int8(config, folder / "rn50_int8_8bit.onnx", weight_bits=8)
    return [
        ("torch fp32, NCHW (before channels_last)", {"model": ckpt, "precision": "fp32"}),
        ("torch fp32, channels_last (shipped)", {"model": ckpt, "precision": "fp32"}),
        ("torch bf16", {"model": ckpt, "precision": "bf16"}),
        ("onnxruntime fp32", {"model": fp32, "backend": "onnxruntime"}),
        ("onnxruntime int8", {"model": int8, "backend": "onnxruntime"}),
        (
            "onnxruntime int8, 8-bit weights (before)",
            {"model": int8_8bit, "backend": "onnxruntime"},
        ),
        ("openvino fp32", {"model": fp32, "backend": "openvino"}),
        ("openvino bf16", {"model": fp32, "backend": "openvino", "precision": "bf16"}),
        ("openvino int8", {"model": int8, "backend": "openvino"}),
        ("openvino int8, 8-bit weights (before)", {"model": int8_8bit, "backend": "openvino"}),
        # One core left to the camera driver and the middleware (2-core robots).
        (
            "onnxruntime int8, inference_threads 1",
            {"model": int8, "backend": "onnxruntime", "inference_threads": 1},
        ),
        (
            "openvino int8, inference_threads 1",
            {"model": int8, "backend": "openvino", "inference_threads": 1},
        ),
    ]


def nchw(model: DepthClip) -> DepthClip:
    """The core with its trunk in the default layout (as before channels_last)."""
    model.encoder = model.encoder.to(memory_format=torch.contiguous_format)
    layout = model.dense_features
    model.dense_features = lambda x: layout(x.contiguous())
    return model


def load(name: str, overrides: dict, cache: str):
    """A variant at the comparison's temperature, so torch bf16's figure at warm-up is measured
    where the graphs' are (their reference depth is at the export's 1.0)."""
    config = {"device": "cpu", "cache_dir": cache, "temperature": COMPARED_AT_TEMPERATURE}
    try:
        model = load_estimator(load_config(overrides={**config, **overrides}))
    except DepthClipError as exc:  # bf16 on a CPU without it: the table says so
        return str(exc)
    model.warm_up()  # an exported graph's or bf16's figure, measured here
    return nchw(model) if "NCHW" in name else model


def figure_cell(model) -> str:
    """The depth figure an exported graph or torch bf16 measured at warm-up (median / p99 /
    max)."""
    figure = getattr(model, "depth_figure", None)
    if figure is None:
        return "-"
    return (
        f"{figure.median * 1e3:.2f} / {figure.p99 * 1e3:.2f} / {figure.max * 1e3:.2f} mm, "
        f"{figure.agreement * 100:.1f} %"
    )


def agreement_cells(models, reference, frames) -> dict:
    """{variant: "median / p99 mm, delta %"} against `reference` on `frames`."""
    cells = {}
    truth = np.concatenate([reference.predict(f).depth.ravel() for f in frames])
    for name, model in models.items():
        got = np.concatenate([model.predict(f).depth.ravel() for f in frames])
        a = depth_agreement(truth, got)
        cells[name] = (
            f"{a['median'] * 1e3:.2f} / {a['p99'] * 1e3:.2f} mm, {a['delta'] * 100:.1f} %"
        )
    return cells


# --quick's node runs: one variant of each runtime (the node's code is the same for the others).
QUICK_NODE_VARIANTS = (
    "torch fp32, channels_last (shipped)",
    "onnxruntime int8",
    "openvino int8",
)


def bench_cpu_variants(ckpt, rates, seconds, reps, dds_profile=None, node=True, quick=False):
    """The CPU variants' table; `node`: their node columns (`quick`: only for
    QUICK_NODE_VARIANTS)."""
    folder = Path(tempfile.mkdtemp())
    specs = variants(ckpt, folder)
    cache = tempfile.mkdtemp()
    loaded = {name: load(name, overrides, cache) for name, overrides in specs}
    models = {name: m for name, m in loaded.items() if not isinstance(m, str)}
    frame = render_scene("corridor")[0]  # 640x480
    times = timed([lambda m=m: m.predict(frame) for m in models.values()], reps, warmup=2)
    medians = {name: statistics.median(t) for name, t in zip(models, times)}
    p95 = {name: float(np.percentile(t, 95)) for name, t in zip(models, times)}
    baseline = medians["torch fp32, channels_last (shipped)"]
    reference = models["torch fp32, channels_last (shipped)"]
    nyu = nyu_frames()
    demo = [render_scene(name)[0] for name in SCENES]
    nyu_cells = agreement_cells(models, reference, nyu) if nyu else {}
    demo_cells = agreement_cells(models, reference, demo)
    env = middleware_env(dds_profile)
    rows = []
    for name, overrides in specs:
        model = loaded[name]
        if isinstance(model, str):
            rows.append([name, f"refused: {model}"] + ["-"] * (7 + len(rates)))
            continue
        rate_cells, latency, in_node = [], "-", "-"
        for rate in rates:
            if not node or "NCHW" in name:  # not a node option: the shipped fp32 is NHWC
                rate_cells.append("-")
                continue
            if quick and name not in QUICK_NODE_VARIANTS:
                rate_cells.append("-")
                continue
            report, _, _ = run_nodes(ckpt, [("", overrides)], [], rate, seconds, env)
            camera = report["cameras"][""]
            rate_cells.append(
                f"{camera['received'] / report['seconds']:.1f} of "
                f"{camera['sent'] / report['seconds']:.1f}"
            )
            latency = f"{np.median(all_latencies_ms(report)):.0f}"
            in_node = f"{node_inference_ms(report):.0f}"
        rows.append(
            [
                name,
                model.runtime,
                f"{medians[name] * 1e3:.1f}",
                f"{p95[name] * 1e3:.1f}",
                f"{baseline / medians[name]:.2f}x",
                *rate_cells,
                latency,
                in_node,
                figure_cell(model),
                nyu_cells.get(name, "no NYU samples here"),
                demo_cells[name],
            ]
        )
        print("cpu variant", rows[-1], file=sys.stderr)
    head = [
        "variant",
        "runtime",
        "predict median (ms)",
        "p95 (ms)",
        "speed / torch fp32",
        *(f"node out of {r:g} Hz (Hz)" for r in rates),
        f"node latency median at {rates[-1]:g} Hz (ms)",
        f"forward in node at {rates[-1]:g} Hz, median (ms)",
        "depth vs fp32 measured at warm-up (reference frames; median / p99 / max, delta<1.25)",
        f"depth vs torch fp32, NYU samples (median / p99, delta<1.25; T "
        f"{COMPARED_AT_TEMPERATURE:g})",
        f"... demo scenes (T {COMPARED_AT_TEMPERATURE:g})",
    ]
    return head, rows
