"""make gpu-check: the CUDA path checked and measured on a lent GPU in one command, ending in one
verdict table with the GPU named. Where torch sees no CUDA device it says so in one line.

Steps: the CUDA tests (pytest -m cuda); the captured frame against the eager path for every
structural option; a capture churn (more sizes than the graph cache holds); exported graphs on
ONNX Runtime's CUDA and TensorRT providers (bench/gpu_onnxruntime.py); the benchmark's
CUDA rows (core, node, depthclip-bag, depthclip-fleet sharing one GPU); the verdict against the
targets of bench/results/performance.md. Runs as `python -m bench.gpu_check` on a host whose
Python has torch and the package's wheels, without `.venv` (../shared/gpu/README.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.estimator import cuda_graph
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.synthetic_scenes import SCENES
from depthclip_ros.tools.random_clip import save_random_checkpoint

from .bag_bench import scene_image, write_camera_bag
from .benchmark import IN_FLIGHT_ROW, bench_cuda_core
from .gpu_onnxruntime import onnxruntime_about, onnxruntime_on_gpu
from .measure import machine, scratch_folder, table
from .node_bench import bench_cuda_node

ROOT = Path(__file__).resolve().parents[1]
VGA = (480, 640)

# (label, config changes, batch, image size): each changes one thing of the first row, the
# shipped CUDA set-up (fp16, the paper's temperature 0.1).
STRUCTURAL_OPTIONS = (
    ("fp16, T 0.1, cuda:0, batch 1, 640x480", {}, 1, VGA),
    ("precision fp32", {"precision": "fp32"}, 1, VGA),
    ("head_precision model (the official fp16 head)", {"head_precision": "model"}, 1, VGA),
    ("dense_features projected", {"dense_features": "projected"}, 1, VGA),
    ("preprocessing crop, flip (the paper)", {"preprocessing": "crop", "flip": True}, 1, VGA),
    ("batch 8", {}, 8, VGA),
    ("batch 3 (padded to 4)", {}, 3, VGA),
    ("1280x720", {}, 1, (720, 1280)),
    ("device cuda (no index)", {"device": "cuda"}, 1, VGA),
)

# What an offline GPU host needs beyond torch and the package's own wheels (../shared/gpu):
# module -> what to install. clip imports pkg_resources, which setuptools 81 removed.
REQUIRED_MODULES = {
    "pytest": "pytest",
    "pluggy": "pluggy (pytest's)",
    "iniconfig": "iniconfig (pytest's)",
    "torchvision": "torchvision (clip's)",
    "regex": "regex (clip's tokenizer)",
    "tqdm": "tqdm",
    "pkg_resources": "setuptools<81 (clip imports pkg_resources)",
}
# What one step needs beyond them: that step is left out where they are missing (its row says
# "not run"), the others run.
STEP_MODULES = {
    "onnxruntime": {
        "onnxruntime": "onnxruntime-gpu (TensorRT's libraries too, for its TensorRT rows)",
        "onnxscript": "onnxscript (torch.onnx's exporter writes the graph with it)",
        "onnx": "onnx (the trunk is taken out of the graph for TensorRT with it)",
    },
}
STEPS = ("tests", "options", "churn", "onnxruntime", "core", "node", "bags")


def missing_modules(steps=STEPS) -> tuple:
    """(lines, {step: its lines}): one line for each module this Python cannot import, of
    REQUIRED_MODULES (every step needs them) and of STEP_MODULES of the chosen `steps`."""

    def lines(modules: dict, why: str = "") -> list:
        return [
            f"gpu-check: no module {name} here: install {what}{why}"
            for name, what in modules.items()
            if importlib.util.find_spec(name) is None
        ]

    by_step = {
        step: lines(STEP_MODULES[step], f"; the {step} step is left out")
        for step in steps
        if step in STEP_MODULES
    }
    return lines(REQUIRED_MODULES), {step: said for step, said in by_step.items() if said}


def step_list(text: str) -> list:
    """--only's comma-separated steps, checked."""
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"steps are {', '.join(STEPS)}; got {text!r}")
    return chosen


# (what, target, how the measured value passes), as bench/results/performance.md states them.
TARGETS = {
    "core fp16 batch 1, host to host p50 (ms)": ("<= 1.6", lambda v: v <= 1.6),
    "core fp16 batch 8, frames in flight (frames/s)": (">= 1800", lambda v: v >= 1800),
    "node, one VGA camera offered 300 Hz: depth out (Hz)": (">= 250", lambda v: v >= 250),
    "node, one VGA camera offered 300 Hz: latency p50 (ms)": ("<= 8", lambda v: v <= 8),
    "node, 8 cameras x 30 Hz: slowest camera (Hz)": (">= 28", lambda v: v >= 28),
    "depthclip-bag (VGA frames/s)": (">= 400", lambda v: v >= 400),
    "depthclip-fleet, 4 bags on one GPU (VGA frames/s)": (">= 600", lambda v: v >= 600),
}


def frames(batch: int, size: tuple) -> np.ndarray:
    """`batch` of the demo's scenes (640x480) resized to `size` (height, width)."""
    names = list(SCENES)
    scenes = [Image.fromarray(scene_image(names[i % len(names)])) for i in range(batch)]
    return np.stack([np.asarray(scene.resize(size[::-1])) for scene in scenes])


def captured_vs_eager(ckpt, device: str = "cuda:0", options=STRUCTURAL_OPTIONS) -> tuple:
    """Per structural option: the captured frame's status, its largest depth gap to the eager
    path on the same frames, whether a replay repeats it exactly, the graphs' device memory."""
    rows, passed = [], True
    for label, changes, batch, size in options:
        fields = dict(model=str(ckpt), device=device, cache_dir=tempfile.mkdtemp())
        fields["temperature"] = 0.1
        # The options' own device (cuda without an index) on a GPU; a CPU dry run stays on CPU.
        fields.update({k: v for k, v in changes.items() if k != "device" or device != "cpu"})
        cfg = DepthClipConfig(**fields)
        model = DepthClip(cfg)
        images = frames(batch, size)
        first = model.predict(images)  # captured and checked here
        again = model.predict(images)  # replayed
        # The eager path at the batch the graph ran (3 runs as 4): the same cuDNN algorithms.
        padded = cuda_graph.padded_batch(batch)
        fill = np.repeat(images[-1:], padded - batch, axis=0)
        eager_depth = model.predict_eager(np.concatenate([images, fill])).depth[:batch]
        gap = float(np.nanmax(np.abs(first.depth - eager_depth)))
        tolerance = cuda_graph.AGREEMENT.get(model.dtype, cuda_graph.AGREEMENT[torch.float16])
        repeat = np.array_equal(first.depth, again.depth, equal_nan=True)
        # (a CPU dry run has no graphs: its frames run one at a time anyway)
        in_flight = model.graphs is None or in_flight_equals_one_at_a_time(
            model, images, frames(batch + 1, size)[1:]
        )
        on = model.graph_status in ("on", "not used")  # "not used": a CPU dry run
        ok = on and gap <= tolerance and repeat and in_flight
        passed &= ok
        memory = model.graphs.memory_bytes / 1e6 if model.graphs is not None else 0.0
        rows.append(
            [
                label,
                model.graph_status,
                f"{gap:.2e} (<= {tolerance:g})",
                "yes" if repeat else "no",
                "yes" if in_flight else "no",
                f"{memory:.0f}",
                "pass" if ok else "FAIL",
            ]
        )
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    head = [
        "option",
        "cuda graphs",
        "|graph - eager| max (m)",
        "replay repeats",
        "in flight = one at a time",
        "MB",
        "verdict",
    ]
    return head, rows, passed


def in_flight_equals_one_at_a_time(model, images, others) -> bool:
    """Three frames begun before the first is taken (the third reuses the first's slot) give,
    to the bit, what each gives alone."""
    sequence = (images, others, images)
    begun = [model.begin_predict(x) for x in sequence]
    in_flight = [started() for started in begun]
    alone = [model.predict(x) for x in sequence]
    return all(
        np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True)
        for a, b in zip(in_flight, alone)
        for name in ("depth", "depth_std", "coarse_depth")
    )


def capture_churn(ckpt, device: str = "cuda:0") -> tuple:
    """More image sizes than the graph cache keeps, visited twice: every frame still right,
    the evictions counted."""
    model = DepthClip(
        DepthClipConfig(model=str(ckpt), device=device, cache_dir=tempfile.mkdtemp())
    )
    # Each size its own key: more keys than the cache holds, so the second round re-captures.
    sizes = [(96 + 16 * i, 128) for i in range(cuda_graph.MAX_GRAPHS + 2)]
    worst = 0.0
    started = time.perf_counter()
    for _ in range(2):
        for size in sizes:
            images = frames(1, size)
            graph, eager = model.predict(images).depth, model.predict_eager(images).depth
            worst = max(worst, float(np.nanmax(np.abs(graph - eager))))
    seconds = time.perf_counter() - started
    graphs = model.graphs
    captures = graphs.captures if graphs is not None else 0
    evictions = graphs.evictions if graphs is not None else 0
    ok = worst <= cuda_graph.AGREEMENT[torch.float16] and model.graph_status in ("on", "not used")
    row = [
        f"{len(sizes)} sizes x 2 rounds, batch 1 (cache: {cuda_graph.MAX_GRAPHS} graphs)",
        str(captures),
        str(evictions),
        f"{worst:.2e}",
        f"{seconds:.1f}",
        "pass" if ok else "FAIL",
    ]
    head = ["churn", "captures", "pushed out", "|graph - eager| max (m)", "seconds", "verdict"]
    return head, [row], ok


def _params(folder: Path, ckpt, device: str) -> Path:
    path = folder / "params.yaml"
    params = {"model": str(ckpt), "device": device, "cache_dir": str(folder / "cache")}
    path.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": params}}))
    return path


STEP_TIMEOUT = 900  # seconds a step's process may take (--step-timeout)


def _module(module: str, *argv) -> str:
    """A tool of the package run as `python -m` (no console scripts on the GPU host)."""
    command = [sys.executable, "-m", module, *map(str, argv)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout


# The fleet's set-ups on one GPU: (workers sharing it, --batch-size).
FLEET_SETUPS = ((1, 8), (2, 8))


def bag_and_fleet(
    ckpt, device: str = "cuda", frames_in_bag: int = 600, bags: int = 4, setups=FLEET_SETUPS
) -> tuple:
    """depthclip-bag on one bag and depthclip-fleet on `bags` bags of as many frames, its
    workers sharing one GPU as each of `setups` says: VGA frames/s, start-up excluded (the
    processing seconds each reports; depthclip-bag's leave out its image size's graph
    captures too, made before its first frame); the fleet's rate: its best set-up's."""
    folder = Path(tempfile.mkdtemp())
    params = _params(folder, ckpt, device)
    write_camera_bag(folder / "archive" / "run0", frames_in_bag)
    argv = ["--image-topic", "/cam/image_raw", "--params", params, "--quiet"]
    out = _module(
        "depthclip_ros.bag.cli", "process", folder / "archive" / "run0", folder / "out", *argv
    )
    rates = {"bag": frames_in_bag / float(re.search(r"copied, ([0-9.]+) s", out).group(1))}
    rows = [
        [f"depthclip-bag process, one bag of {frames_in_bag} (batch 1)", f"{rates['bag']:.3g}"]
    ]
    each = "a bag" if bags == 1 else f"{bags} bags"
    if importlib.util.find_spec("ray") is None:
        rows.append([f"depthclip-fleet, {each} of {frames_in_bag}", "not run: no ray here"])
        return ["tool (VGA frames, MCAP)", "frames/s, start-up excluded"], rows, rates
    for i in range(1, bags):
        shutil.copytree(folder / "archive" / "run0", folder / "archive" / f"run{i}")
    for workers, batch in setups:
        out = _module(
            "depthclip_ros.fleet.cli",
            folder / "archive",
            "--out",
            folder / f"fleet{workers}x{batch}",
            "--workers",
            workers,
            "--gpus-per-worker",
            f"{1 / workers:g}" if device.startswith("cuda") else 0,
            "--batch-size",
            batch,
            *argv,
        )
        rate = float(re.search(r"start-up excluded\) \| ([0-9.]+)", out).group(1))
        rates["fleet"] = max(rate, rates.get("fleet", 0.0))
        share = "1 GPU" if workers == 1 else f"{workers} workers sharing 1 GPU"
        rows.append(
            [f"depthclip-fleet, {each} of {frames_in_bag} ({share}, batch {batch})", f"{rate:.3g}"]
        )
    return ["tool (VGA frames, MCAP)", "frames/s, start-up excluded"], rows, rates


def _number(cell) -> float:
    """A table cell's leading number; NaN for '-' (nothing measured), which no target meets."""
    try:
        return float(str(cell).split("/")[0].split()[0])
    except (ValueError, IndexError):
        return float("nan")


def _value(rows, label, column, batch=None) -> float:
    for row in rows:
        if row[0] == label and (batch is None or row[1] == str(batch)):
            return _number(row[column])
    return float("nan")


def verdicts(core_rows, node_rows, tools) -> list:
    """[what, target, measured, verdict] against TARGETS; `tools`: bag_and_fleet's rates."""
    captured = "core predict, captured frame (host to host)"
    measured = {
        "core fp16 batch 1, host to host p50 (ms)": _value(core_rows, captured, 2, batch=1),
        "core fp16 batch 8, frames in flight (frames/s)": _value(
            core_rows, IN_FLIGHT_ROW, 4, batch=8
        ),
        "node, one VGA camera offered 300 Hz: depth out (Hz)": _value(
            node_rows, "1 camera", 2, batch=300
        ),
        "node, one VGA camera offered 300 Hz: latency p50 (ms)": _value(
            node_rows, "1 camera", 4, batch=300
        ),
        "node, 8 cameras x 30 Hz: slowest camera (Hz)": _value(
            node_rows, "8 cameras, max_batch 8", 3
        ),
        "depthclip-bag (VGA frames/s)": tools.get("bag", float("nan")),
        "depthclip-fleet, 4 bags on one GPU (VGA frames/s)": tools.get("fleet", float("nan")),
    }
    return [
        [what, target, f"{measured[what]:.1f}", "met" if ok(measured[what]) else "NOT MET"]
        for what, (target, ok) in TARGETS.items()
    ]


def main(argv=None) -> int:
    global STEP_TIMEOUT
    first_line = __doc__.split("\n")[0]
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=first_line)
    p.add_argument("--node-seconds", type=float, default=5.0, help="per node set-up (default 5)")
    p.add_argument(
        "--only", type=step_list, default=list(STEPS), help=f"steps, of {', '.join(STEPS)}"
    )
    p.add_argument(
        "--step-timeout",
        type=float,
        default=STEP_TIMEOUT,
        help=f"seconds a step's process (the tests, a tool) may take (default {STEP_TIMEOUT})",
    )
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device on this machine (torch {torch.__version__}): not run")
        return 0
    missing, left_out = missing_modules(args.only)
    for line in [*missing, *(line for said in left_out.values() for line in said)]:
        print(line)  # before any GPU minute is spent
    if missing or set(args.only) <= set(left_out):
        return 2
    STEP_TIMEOUT = args.step_timeout
    with scratch_folder("depthclip-gpu-check-"):
        return run_steps(args, left_out)


def run_steps(args, left_out: dict) -> int:
    """Every step of `args.only`, its table printed as it comes, then the verdict; 0 when every
    row passed or could not run on this host."""
    started = time.perf_counter()
    print(f"# gpu-check\n\nMachine: {machine()}\n", flush=True)
    ckpt = save_random_checkpoint(Path(tempfile.mkdtemp()) / "rn50_random.pt", "RN50")
    rows, measured = [], {}
    for step in args.only:
        t0 = time.perf_counter()
        if step in left_out:  # its modules are missing (said above)
            rows.append(
                [
                    f"step {step}",
                    "runs",
                    "not run: " + left_out[step][0].removeprefix("gpu-check: "),
                    "not run",
                ]
            )
            continue
        try:
            step_rows = run_step(step, ckpt, args, measured)
        except Exception as exc:  # a step that fails or times out: its row says so, the rest run
            step_rows = [[f"step {step}", "runs", f"{type(exc).__name__}: {exc}"[:300], "FAIL"]]
        rows += step_rows
        for row in step_rows:  # the verdict as it comes: a step cut short keeps what it had
            print(f"gpu-check: {row[0]}: {row[3]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"## Verdict ({torch.cuda.get_device_name(0)}, {time.perf_counter() - started:.0f} s)\n")
    print(table(["what", "target", "measured", "verdict"], rows))
    # "not run": what this host cannot run (no onnxruntime, or one without a GPU provider), said
    # in its row; TensorRT listed but not run is a FAIL (bench/gpu_onnxruntime.py).
    return 0 if all(r[3] in ("pass", "met", "not run") for r in rows) else 1


TARGET_PREFIXES = {"core": ("core ",), "node": ("node,",), "bags": ("depthclip-",)}


def step_verdicts(step: str, measured: dict) -> list:
    """The TARGETS rows of one measuring step, from what it measured."""
    rows = verdicts(measured.get("core", []), measured.get("node", []), measured.get("bags", {}))
    return [row for row in rows if row[0].startswith(TARGET_PREFIXES[step])]


def run_step(step: str, ckpt, args, measured: dict) -> list:
    """Run one step, print its table; its verdict rows (what, target, measured, verdict)."""
    if step == "tests":
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-ra", "-q", "-m", "cuda", "test/estimator"],
            cwd=ROOT,
            timeout=STEP_TIMEOUT,
        )
        got = "pass" if tests.returncode == 0 else "FAIL"
        return [["CUDA tests (pytest -m cuda)", "pass", got, got]]
    if step in ("options", "churn"):
        check = captured_vs_eager if step == "options" else capture_churn
        head, rows, ok = check(ckpt)
        title = "Captured frame against the eager path" if step == "options" else "Capture churn"
        print(f"## {title} (RN50 shapes, random weights)\n")
        print(table(head, rows) + "\n", flush=True)
        what = "captured = eager, every structural option" if step == "options" else step
        return [[what, "pass", "pass" if ok else "FAIL", "pass" if ok else "FAIL"]]
    if step == "onnxruntime":
        head, rows, ok = onnxruntime_on_gpu(frames, ckpt)
        print("## Exported graphs on ONNX Runtime's CUDA and TensorRT (RN50 shapes, fp16)\n")
        print(f"{onnxruntime_about()}\n")
        print(table(head, rows) + "\n", flush=True)
        return [[f"onnxruntime: {r[0]}", "pass", f"{r[1]}: {r[2]}"[:200], r[3]] for r in rows]
    if step == "core":
        head, measured["core"] = bench_cuda_core(ckpt)
        print("## CUDA core (RN50 shapes, fp16)\n")
        print(table(head, measured["core"]) + "\n", flush=True)
    elif step == "node":
        head, measured["node"] = bench_cuda_node(ckpt, args.node_seconds)
        print(f"## CUDA node ({args.node_seconds:g} s each, default middleware)\n")
        print(table(head, measured["node"]) + "\n", flush=True)
    else:  # bags
        head, rows, measured["bags"] = bag_and_fleet(ckpt)
        print("## Recorded bags on CUDA\n")
        print(table(head, rows) + "\n", flush=True)
    return step_verdicts(step, measured)


if __name__ == "__main__":
    sys.exit(main())
