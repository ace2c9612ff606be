"""The CPU-sharing table of the benchmark: the node on the int8 graph (each CPU runtime) with one
camera offered faster than the model, alone and with one more CPU-bound process beside it (a
robot's other work), under each runtime's thread options: what the node answers against what
its forward alone allows, and what the other process keeps."""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from depthclip_ros.config.params_files import load_config, preset_configs
from depthclip_ros.estimator.loading import load_estimator
from depthclip_ros.export.calibration import calibration_frames
from depthclip_ros.export.quantization import export_int8
from depthclip_ros.synthetic_scenes import render_scene

from .measure import timed
from .node_bench import middleware_env, run_nodes

# One Python process that never sleeps: the other work of a robot at its worst.
CPU_BOUND = (sys.executable, "-c", "while True: pass")

SPINNING_OFF = ["session.intra_op.allow_spinning=0", "session.inter_op.allow_spinning=0"]


def settings(int8: str) -> list:
    """(name, the node's parameter overrides) of each thread setting, on the int8 graph."""
    ort = {"model": int8, "backend": "onnxruntime"}
    ov = {"model": int8, "backend": "openvino"}
    return [
        ("onnxruntime, defaults (threads spin, one per core)", ort),
        (
            "onnxruntime, session.intra_op.allow_spinning=0",
            {**ort, "onnxruntime_session_config": SPINNING_OFF},
        ),
        ("onnxruntime, inference_threads 1", {**ort, "inference_threads": 1}),
        ("openvino, defaults (threads pinned, one per core)", ov),
        (
            "openvino, ENABLE_CPU_PINNING=NO",
            {**ov, "openvino_properties": ["ENABLE_CPU_PINNING=NO"]},
        ),
        ("openvino, inference_threads 1", {**ov, "inference_threads": 1}),
    ]


# --quick: each runtime's new option once, with the other process only.
QUICK_SETTINGS = (
    "onnxruntime, session.intra_op.allow_spinning=0",
    "openvino, ENABLE_CPU_PINNING=NO",
)


def forward_ms(overrides: dict, reps: int) -> float:
    """The predict median of a VGA frame in this process with the node's `overrides`."""
    config = load_config(overrides={"device": "cpu", "cache_dir": tempfile.mkdtemp(), **overrides})
    model = load_estimator(config)
    frame = render_scene("corridor")[0]
    return statistics.median(timed([lambda: model.predict(frame)], reps, warmup=2)[0]) * 1e3


def bench_sharing(ckpt, rate, seconds, reps, quick=False, dds_profile=None):
    folder = Path(tempfile.mkdtemp())
    int8 = str(folder / "int8.onnx")
    config = load_config(overrides={"model": ckpt, "device": "cpu"})
    frames, source = calibration_frames("demo")
    export_int8(config, Path(int8), frames, source, None, preset_configs())
    env = middleware_env(dds_profile)
    rows = []
    for name, overrides in settings(int8):
        if quick and name not in QUICK_SETTINGS:
            continue
        forward = forward_ms(overrides, reps)
        allowed = min(rate, 1e3 / forward)
        cells = [name, f"{forward:.1f}", f"{allowed:.1f}"]
        for beside in ((), CPU_BOUND):
            if quick and not beside:
                cells += ["-", "-"]
                continue
            report, _, _ = run_nodes(
                ckpt, [("", overrides)], [], rate, seconds, env, beside=beside
            )
            camera = report["cameras"][""]
            answered = camera["received"] / report["seconds"]
            cells += [f"{answered:.2f}", f"{answered / allowed * 100:.0f} %"]
        cells.append(f"{report['beside CPU (% of a core)']:.0f} %")
        rows.append(cells)
        print("sharing", rows[-1], file=sys.stderr)
    head = [
        "threads",
        "forward alone (ms)",
        f"forward allows (Hz, at most {rate:g})",
        "node answers, alone (Hz)",
        "of what the forward allows",
        "node answers, one CPU-bound process beside (Hz)",
        "of what the forward allows (beside)",
        "the process beside keeps (of one core)",
    ]
    return head, rows
