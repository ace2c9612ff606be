"""The CPU-sharing table of the benchmark: the node on the int8 graph (each CPU runtime) with one
camera offered faster than the model, alone and with one more CPU-bound process beside it (a
robot's other work), under each runtime's thread options: what the node answers against what
its forward alone allows, and what the other process keeps."""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from depthclip_ros.config.params_files import load_config
from depthclip_ros.model_loading import load_estimator
from depthclip_ros.synthetic_scenes import render_scene

from .measure import timed
from .node_bench import STAGE_KEYS, middleware_env, node_stage_cells, run_nodes
from .precision_bench import demo_int8

# One Python process that never sleeps: the other work of a robot at its worst.
CPU_BOUND = (sys.executable, "-c", "while True: pass")

SPINNING = ["session.intra_op.allow_spinning=1", "session.inter_op.allow_spinning=1"]


def settings(int8: str) -> list:
    """(name, the node's parameter overrides) of each thread setting, on the int8 graph: the
    package's defaults (threads one per core, neither spinning nor pinned), the runtime's own
    default back, one thread."""
    ort = {"model": int8, "backend": "onnxruntime"}
    ov = {"model": int8, "backend": "openvino"}
    return [
        ("onnxruntime, defaults (one thread per core, not spinning)", ort),
        (
            "onnxruntime, session.intra_op.allow_spinning=1 (before)",
            {**ort, "onnxruntime_session_config": SPINNING},
        ),
        ("onnxruntime, inference_threads 1", {**ort, "inference_threads": 1}),
        (
            "onnxruntime, inference_streams 2 (two frames in flight)",
            {**ort, "inference_streams": 2},
        ),
        ("openvino, defaults (one thread per core, not pinned)", ov),
        (
            "openvino, ENABLE_CPU_PINNING=YES (before)",
            {**ov, "openvino_properties": ["ENABLE_CPU_PINNING=YES"]},
        ),
        ("openvino, inference_threads 1", {**ov, "inference_threads": 1}),
        (
            "openvino, inference_streams 2 (two frames in flight)",
            {**ov, "inference_streams": 2},
        ),
    ]


# --quick: one runtime's option, with the other process only (the rows' code is the same for
# every setting; the process beside takes a core for the run).
QUICK_SETTINGS = ("onnxruntime, session.intra_op.allow_spinning=1 (before)",)


class ForwardAlone:
    """Each (name, the node's overrides) of `chosen` as a model of this process, to time its
    predict of a VGA frame right before and after a row's node runs: this machine's speed
    drifts by a tenth over minutes, and the node's rate is held against the forward of its
    own minutes."""

    def __init__(self, chosen: list):
        self.frame = render_scene("corridor")[0]
        self.models = {
            name: load_estimator(
                load_config(
                    overrides={"device": "cpu", "cache_dir": tempfile.mkdtemp(), **overrides}
                )
            )
            for name, overrides in chosen
        }

    def ms(self, names, reps: int) -> dict:
        """{name: predict median (ms)} of the models `names`, timed interleaved."""
        calls = [lambda m=self.models[n]: m.predict(self.frame) for n in names]
        times = timed(calls, reps, warmup=2)
        return {name: statistics.median(t) * 1e3 for name, t in zip(names, times)}


def bench_sharing(ckpt, rate, seconds, reps, quick=False, dds_profile=None):
    """The table's rows: each setting's node alone and with CPU_BOUND beside it, against what
    the runtime's fastest forward alone allows, its forward timed right before and after the
    row's node runs (the mean of the two medians)."""
    folder = Path(tempfile.mkdtemp())
    config = load_config(overrides={"model": ckpt, "device": "cpu"})
    int8 = demo_int8(config, folder / "int8.onnx")
    chosen = [s for s in settings(int8) if not quick or s[0] in QUICK_SETTINGS]
    alone = ForwardAlone(chosen)
    env = middleware_env(dds_profile)
    rows = []
    for name, overrides in chosen:
        runtime = name.split(",")[0]
        alike = [other for other, _ in chosen if other.startswith(runtime)]
        before = alone.ms(alike, reps)
        answered, stages = [], "-"
        for beside in ((), CPU_BOUND):
            if quick and not beside:
                answered.append(None)
                continue
            report, _, _ = run_nodes(
                ckpt, [("", overrides)], [], rate, seconds, env, beside=beside
            )
            answered.append(report["cameras"][""]["received"] / report["seconds"])
            if not beside:
                stages = node_stage_cells(report)[0]
        after = alone.ms(alike, reps)
        forward = {other: (before[other] + after[other]) / 2 for other in alike}
        allowed = min(rate, 1e3 / min(forward.values()))
        cells = [name, f"{before[name]:.1f} / {after[name]:.1f}", f"{allowed:.1f}"]
        for rate_answered in answered:
            if rate_answered is None:
                cells += ["-", "-"]
            else:
                cells += [f"{rate_answered:.2f}", f"{rate_answered / allowed * 100:.0f} %"]
        cells += [f"{report['beside CPU (% of a core)']:.0f} %", stages]
        rows.append(cells)
        print("sharing", rows[-1], file=sys.stderr)
    head = [
        "threads",
        "forward alone, before / after the node runs (ms)",
        f"the runtime's fastest forward allows (Hz, at most {rate:g})",
        "node answers, alone (Hz)",
        "of what the fastest forward allows",
        "node answers, one CPU-bound process beside (Hz)",
        "of what the fastest forward allows (beside)",
        "the process beside keeps (of one core)",
        f"in node, alone, median ms: {' / '.join(STAGE_KEYS)}",
    ]
    return head, rows
