"""The node's rows of the benchmark: the node as its own process on the middleware's defaults,
fed by the camera driver stand-in (depthclip_ros.tools.camera_driver) at a fixed rate;
latency, rates, memory and CPU."""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from depthclip_ros.config.params_files import default_params_file, load_config
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.synthetic_scenes import render_scene
from depthclip_ros.tools.camera_driver import INFO_PATTERNS, MORE_OUTPUTS
from depthclip_ros.tools.node_process import (
    DDS_PROFILE_VARIABLES,
    dds_profile_env,
    local_dds_env,
    start_node_process,
)

from .measure import cpu_share, sample_process, timed

CAMERA_INFO_STATUS = "frames paired with another stamp's camera_info (last 10 s)"


def node_core_reference(ckpt):
    """The core on the node's input (640x480 rgb8, the shipped config: resize, no flip), in this
    process.

    Measured again right before each rate: this machine's speed drifts by up to 10 % over
    minutes, and the ratio should compare the node with the core under the same conditions.
    """
    model = DepthClip(
        load_config(overrides={"model": ckpt, "device": "cpu", "cache_dir": tempfile.mkdtemp()})
    )
    frame = render_scene("corridor")[0]
    return lambda: statistics.median(timed([lambda: model.predict(frame)], 12, warmup=2)[0]) * 1e3


def middleware_env(dds_profile=None) -> dict:
    env = {**os.environ, **local_dds_env(), "PYTHONWARNINGS": "ignore", "PYTHONFAULTHANDLER": "1"}
    for variable in DDS_PROFILE_VARIABLES:  # the middleware's defaults, as on a robot ...
        env.pop(variable, None)
    if dds_profile:  # ... unless a profile is asked for (optional tuning, measured against them)
        env.update(dds_profile_env(Path(dds_profile).resolve()))
    return env


# Runs already made in this process, by what they ran: a table that asks for the same nodes,
# cameras and driver as another (the node at 30 Hz, camera_info `after`, no compressedDepth
# subscriber) reports that run rather than start the same processes again.
_RUNS = {}


def run_key(ckpt, nodes, cameras, rate, seconds, env, python, driver, beside=(), run=0) -> tuple:
    options = list(driver)
    if options[-2:] == ["--info", "after"]:  # the driver's default pattern
        options = options[:-2]
    return (
        tuple((namespace, repr(sorted({"model": ckpt, **o}.items()))) for namespace, o in nodes),
        tuple(cameras),
        rate,
        seconds,
        tuple(sorted(env.items())),
        python or sys.executable,
        tuple(options),
        tuple(beside),
        run,
    )


def run_nodes(
    ckpt, nodes, cameras, rate, seconds, env, python=None, ready=None, driver=(), beside=(), run=0
):
    """Start one node process per (namespace, parameter overrides) of `nodes` (run by
    `python`), feed `cameras` (the driver's names) at `rate` for `seconds` (`driver`: more of
    its options); (the driver's report, [samples of each node process within the measured
    window], [all samples of each]). `ready` gets each node's seconds from its start to its
    model warmed up. `beside`: a command run beside the nodes while the camera streams (other
    work of the robot), its CPU in the window in the report ("beside CPU (% of a core)"). A
    run like one made before in this process is that run; `run` numbers the repeats a table
    asks for (each its own run)."""
    key = run_key(ckpt, nodes, cameras, rate, seconds, env, python, driver, beside, run)
    if key not in _RUNS:
        starts = []
        _RUNS[key] = (
            _run_nodes(ckpt, nodes, cameras, rate, seconds, env, python, starts, driver, beside),
            starts,
        )
    result, starts = _RUNS[key]
    if ready is not None:
        ready.extend(starts)
    return result


# A node ends within a second of SIGTERM (three at once beside three busy processes: 0.7-0.9 s,
# 2026-11-27); one that has not after this long is a defect to see, not a table to lose.
NODE_EXIT_SECONDS = 20.0


def end_or_report(proc, log) -> None:
    """Wait for a terminated node process; one still running after NODE_EXIT_SECONDS has its
    threads' stacks written to its log (faulthandler, on SIGABRT), is killed, and the log's
    tail is printed on stderr in one block beginning with one line: the run's table stands."""
    try:
        proc.wait(timeout=NODE_EXIT_SECONDS)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack to the log
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    tail = Path(log).read_text(errors="replace")[-6000:]
    print(
        f"bench: a node (pid {proc.pid}) had not ended {NODE_EXIT_SECONDS:g} s after SIGTERM: "
        f"stopped; its log's end, its threads' stacks last:\n{tail}",
        file=sys.stderr,
    )


def _run_nodes(ckpt, nodes, cameras, rate, seconds, env, python, ready, driver, beside):
    procs, other = [], None
    for namespace, overrides in nodes:
        log = Path(tempfile.mkdtemp()) / "node.log"
        params = {"model": ckpt, "device": "cpu", "cache_dir": tempfile.mkdtemp(), **overrides}
        started = time.monotonic()
        proc = start_node_process(default_params_file(), params, env, log, namespace, python)
        procs.append((proc, log))
        deadline = time.time() + 180
        while "warm-up" not in log.read_text() and time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"a node ended at start-up: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        ready.append(time.monotonic() - started)
    try:
        if beside:
            other = subprocess.Popen(list(beside), stdout=subprocess.DEVNULL)
        watched = [proc for proc, _ in procs] + ([other] if other else [])
        samples = [[] for _ in watched]  # (wall time, RSS MB, CPU s) of each process, sampled
        stop = threading.Event()
        samplers = [
            threading.Thread(target=sample_process, args=(proc.pid, into, stop), daemon=True)
            for proc, into in zip(watched, samples)
        ]
        for sampler in samplers:
            sampler.start()
        camera_args = [arg for name in cameras for arg in ("--camera", name)]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "depthclip_ros.tools.camera_driver",
                *("--rate", str(rate), "--seconds", str(seconds)),
                *("--warmup", str(min(3.0, seconds / 2))),  # a short run's warm-up shorter
                *camera_args,
                *driver,
            ],
            env=env,
            cwd=str(Path(__file__).resolve().parent.parent),
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
        stop.set()
        for sampler in samplers:
            sampler.join()
    finally:
        if other:
            other.kill()
            other.wait()
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            end_or_report(proc, log)
    if out.returncode != 0:
        raise RuntimeError(f"the camera driver failed: {out.stderr[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    window = [[s for s in each if report["start"] <= s[0] <= report["end"]] for each in samples]
    if other:
        report["beside CPU (% of a core)"] = cpu_share(window[-1]) * 100
        window, samples = window[:-1], samples[:-1]
    return report, window, samples


def node_inference_ms(report) -> float:
    """The node's forward time, median, from its last /diagnostics (the first camera's); NaN
    when no status was heard."""
    statuses = report["diagnostics"].values()
    status = next((v for v in statuses if "inference median (ms)" in v), {})
    return float(status.get("inference median (ms)", "nan"))


STAGE_KEYS = ("decode", "inference", "after the model", "outputs")
THREADS = ("executor", "worker", "encoding", "process")


def node_stage_cells(report) -> list:
    """[the frame's stages in the node, median ms; the threads' CPU, % of a core], from its
    last /diagnostics while the camera streamed (the first camera's status, and the node's)."""
    statuses = report["diagnostics while streaming"].values()
    status = next((v for v in statuses if "inference median (ms)" in v), {})
    stages = " / ".join(status.get(f"{key} median (ms)", "-") for key in STAGE_KEYS)
    cpu = next((v for v in statuses if "CPU, process (% of a core)" in v), {})
    threads = " / ".join(cpu.get(f"CPU, {name} (% of a core)", "-") for name in THREADS)
    return [stages, threads]


# The cells every node-under-load table ends with: the node's CPU, its stages and threads.
NODE_LOAD_HEAD = [
    "node CPU (of 1 core)",
    f"in node, median ms: {' / '.join(STAGE_KEYS)}",
    f"CPU, % of a core: {' / '.join(THREADS)}",
]


def node_load_cells(report, window) -> list:
    """NODE_LOAD_HEAD's cells of a run: the node process's CPU over the measured `window`, and
    its stages and threads from its /diagnostics."""
    return [f"{cpu_share(window) * 100:.0f}%", *node_stage_cells(report)]


def latency_median_cell(report) -> str:
    lat = all_latencies_ms(report)
    return f"{np.median(lat):.0f}" if len(lat) else "-"


def all_latencies_ms(report) -> np.ndarray:
    return np.array([t for c in report["cameras"].values() for t in c["latencies"]]) * 1e3


def bench_node(ckpt, rates, seconds, dds_profile=None):
    env = middleware_env(dds_profile)
    rows = []
    core_ms = node_core_reference(ckpt)
    for index, rate in enumerate(rates):
        core = core_ms()
        repeat = rates[:index].count(rate)  # a rate asked for again: a run of its own
        r, (window,), (samples,) = run_nodes(ckpt, [("", {})], [], rate, seconds, env, run=repeat)
        rss0, rss1 = window[0][1], window[-1][1]
        lat = all_latencies_ms(r)
        in_node = node_inference_ms(r)
        camera = r["cameras"][""]
        # A frame waits on average half a camera period for the forward in progress to end
        # (when the camera is faster than the model), then takes one forward.
        floor = core + 0.5 * 1e3 / rate if 1e3 / rate < core else core
        rows.append(
            [
                f"{rate:g}",
                f"{camera['sent'] / r['seconds']:.1f}",
                f"{camera['received'] / r['seconds']:.2f}",
                f"{1e3 / core:.2f}",
                str(camera["sent"] - camera["received"]),
                f"{np.median(lat):.0f}",
                f"{np.percentile(lat, 95):.0f}",
                f"{core:.0f}",
                f"{np.median(lat) / core:.2f}",
                f"{floor / core:.2f}",
                f"{in_node:.0f}",
                f"{np.median(lat) / in_node:.2f}",
                f"{rss0:.0f}",
                f"{rss1:.0f}",
                f"{rss1 - rss0:+.0f}",
                f"{max(s[1] for s in samples):.0f}",
                *node_load_cells(r, window),
            ]
        )
        print("node", rows[-1], file=sys.stderr)
    head = [
        "input rate (Hz)",
        "sent (Hz)",
        "output rate (Hz)",
        "core rate (frames/s)",
        "frames not answered",
        "latency median (ms)",
        "latency p95 (ms)",
        "core latency (ms)",
        "latency median / core",
        "floor / core",
        "forward in node, median (ms)",
        "latency median / forward in node",
        "RSS window start (MB)",
        "RSS end (MB)",
        "RSS growth (MB)",
        "RSS peak (MB)",
        *NODE_LOAD_HEAD,
    ]
    return head, rows


def bench_every_output(ckpt, rate, seconds, runs=1, dds_profile=None):
    """One camera at `rate` with every output subscribed (the driver's --every-output): per
    run, what each output answered of the frames sent, the latency, the node's CPU and where a
    frame's time went (its stages and threads)."""
    env = middleware_env(dds_profile)
    rows, outputs = [], list(MORE_OUTPUTS)
    for run in range(runs):
        r, (window,), _ = run_nodes(
            ckpt, [("", {})], [], rate, seconds, env, driver=("--every-output",), run=run
        )
        camera = r["cameras"][""]
        hz = [camera["received"] / r["seconds"]]
        hz += [camera["outputs"][key] / r["seconds"] for key in outputs]
        rows.append(
            [
                str(run + 1),
                f"{camera['sent'] / r['seconds']:.1f}",
                *(f"{h:.1f}" for h in hz),
                f"{min(hz):.1f}",
                latency_median_cell(r),
                *node_load_cells(r, window),
            ]
        )
        print("every output", rows[-1], file=sys.stderr)
    head = [
        "run",
        "sent (Hz)",
        "depth (Hz)",
        *(f"{key} (Hz)" for key in outputs),
        "slowest output (Hz)",
        "latency median (ms)",
        *NODE_LOAD_HEAD,
    ]
    return head, rows


EXECUTOR_SETUPS = (("1 camera", 100.0, 1), ("8 cameras", 30.0, 8))


def bench_executors(ckpt, seconds, runs=1, setups=EXECUTOR_SETUPS, dds_profile=None):
    """The node under each rclpy executor (`executor`: single_threaded, events), interleaved:
    per set-up (label, offered rate per camera, cameras) and run, what went in and came out,
    the latency, the node's CPU and where a frame's time went (its stages and threads)."""
    env = middleware_env(dds_profile)
    rows = []
    for label, rate, count in setups:
        names = [f"cam{i}" for i in range(count)] if count > 1 else []
        params = {"device": "cpu"}
        if names:
            params["cameras"] = f"[{','.join(names)}]"
        for run in range(runs):
            for executor in ("single_threaded", "events"):
                nodes = [("", {**params, "executor": executor})]
                r, (window,), _ = run_nodes(ckpt, nodes, names, rate, seconds, env, run=run)
                cams = r["cameras"].values()
                out = [c["received"] / r["seconds"] for c in cams]
                rows.append(
                    [
                        label,
                        f"{rate:g}",
                        str(run + 1),
                        executor,
                        f"{sum(c['sent'] for c in cams) / r['seconds']:.1f}",
                        f"{sum(out):.1f}",
                        f"{min(out):.1f}",
                        latency_median_cell(r),
                        *node_load_cells(r, window),
                    ]
                )
                print("executors", rows[-1], file=sys.stderr)
    head = [
        "set-up",
        "offered per camera (Hz)",
        "run",
        "executor",
        "sent, all (Hz)",
        "depth out, all (Hz)",
        "slowest camera (Hz)",
        "latency median (ms)",
        *NODE_LOAD_HEAD,
    ]
    return head, rows


def bench_cameras(ckpt, cameras, rate, seconds, dds_profile=None):
    """One node serving every camera against one single-camera node per camera (each in the
    camera's namespace: the same topics), fed alike."""
    env = middleware_env(dds_profile)
    setups = [
        (f"one node, {len(cameras)} cameras", [("", {"cameras": f"[{','.join(cameras)}]"})]),
        (f"{len(cameras)} nodes, one camera each", [(f"/{name}", {}) for name in cameras]),
    ]
    rows = []
    for label, nodes in setups:
        r, windows, samples = run_nodes(ckpt, nodes, cameras, rate, seconds, env)
        rss = [np.median([s[1] for s in window]) for window in windows]
        cpu = sum(cpu_share(w) for w in windows)
        per_camera = {name: c["received"] / r["seconds"] for name, c in r["cameras"].items()}
        rows.append(
            [
                label,
                str(len(nodes)),
                f"{sum(rss):.0f}",
                f"{sum(max(s[1] for s in each) for each in samples):.0f}",
                f"{sum(c['sent'] for c in r['cameras'].values()) / r['seconds']:.1f}",
                f"{sum(per_camera.values()):.2f}",
                " / ".join(f"{per_camera[name]:.2f}" for name in cameras),
                latency_median_cell(r),
                f"{cpu * 100:.0f}%",
            ]
        )
        print("cameras", rows[-1], file=sys.stderr)
    head = [
        "set-up",
        "processes",
        "RSS, sum of medians (MB)",
        "RSS, sum of peaks (MB)",
        "input (frames/s, all cameras)",
        "output (depth images/s, all cameras)",
        f"output per camera ({' / '.join(cameras)})",
        "latency median (ms)",
        "CPU (of 1 core)",
    ]
    return head, rows


def bench_backends(ckpt, onnx_model, onnx_python, rate, seconds, dds_profile=None):
    """The node on each backend, one after the other in one run: latency, output rate, memory
    and the time from the process start to a warmed-up model."""
    env = middleware_env(dds_profile)
    rows = []
    for backend, model, python in (
        ("torch", ckpt, sys.executable),
        ("onnxruntime", onnx_model, onnx_python or sys.executable),
    ):
        ready = []
        r, (window,), _ = run_nodes(
            ckpt, [("", {"model": model})], [], rate, seconds, env, python, ready
        )
        lat = all_latencies_ms(r)
        venv = Path(python).parent.parent
        rows.append(
            [
                backend,
                f"{venv.name} ({environment_mb(venv):.0f} MB)",
                f"{ready[0]:.1f}",
                f"{r['cameras']['']['received'] / r['seconds']:.2f}",
                f"{np.median(lat):.0f}",
                f"{np.percentile(lat, 95):.0f}",
                f"{node_inference_ms(r):.0f}",
                f"{np.median([s[1] for s in window]):.0f}",
            ]
        )
        print("backend node", rows[-1], file=sys.stderr)
    torch_latency = float(rows[0][4])
    for row in rows:
        row.insert(5, f"{float(row[4]) / torch_latency:.2f}")
    head = [
        "backend",
        "environment (size)",
        "start to warmed-up model (s)",
        "output rate (Hz)",
        "latency median (ms)",
        "latency / torch node's",
        "latency p95 (ms)",
        "forward in node, median (ms)",
        "RSS median (MB)",
    ]
    return head, rows


def environment_mb(venv: Path) -> float:
    """Disk size of a virtual environment's installed packages."""
    total = 0
    for lib in venv.glob("lib/python*/site-packages"):
        total += sum(
            f.stat().st_size for f in lib.rglob("*") if f.is_file() and not f.is_symlink()
        )
    return total / 2**20


def bench_camera_info(ckpt, rate, seconds, dds_profile=None, patterns=INFO_PATTERNS):
    """One camera at `rate`, its camera_info in each of `patterns` (camera_driver's: the
    patterns drivers have)."""
    env = middleware_env(dds_profile)
    rows = []
    for pattern in patterns:
        r, _, _ = run_nodes(ckpt, [("", {})], [], rate, seconds, env, driver=("--info", pattern))
        camera, lat = r["cameras"][""], all_latencies_ms(r)
        infos = camera["camera_infos"]
        rows.append(
            [
                pattern,
                f"{camera['sent'] / r['seconds']:.1f}",
                f"{camera['received'] / r['seconds']:.1f}",
                f"{np.median(lat):.0f}",
                f"{np.percentile(lat, 95):.0f}",
                f"{infos['own']} / {infos['other']}",
            ]
        )
        print("camera_info", rows[-1], file=sys.stderr)
    head = [
        "camera_info",
        "input (Hz)",
        "depth out (Hz)",
        "latency median (ms)",
        "latency p95 (ms)",
        "clouds with the frame's own / the latest camera_info",
    ]
    return head, rows


def bench_compressed_depth_node(ckpt, rate, seconds, dds_profile=None):
    """One camera at `rate`, nobody on depth/image/compressedDepth, then a subscriber: the
    depth's output rate with the PNG encoding running beside the model."""
    env = middleware_env(dds_profile)
    rows = []
    for subscribed in (False, True):
        driver = ("--compressed-depth",) if subscribed else ()
        r, _, _ = run_nodes(ckpt, [("", {})], [], rate, seconds, env, driver=driver)
        camera, lat = r["cameras"][""], all_latencies_ms(r)
        encoded = camera["outputs"].get("compressed_depth", 0) / r["seconds"]
        rows.append(
            [
                "yes" if subscribed else "no",
                f"{camera['sent'] / r['seconds']:.1f}",
                f"{camera['received'] / r['seconds']:.1f}",
                f"{encoded:.1f}" if subscribed else "-",
                f"{np.median(lat):.0f}",
            ]
        )
        print("compressedDepth node", rows[-1], file=sys.stderr)
    head = [
        "compressedDepth subscribed",
        "input (Hz)",
        "depth out (Hz)",
        "compressedDepth out (Hz)",
        "depth latency median (ms)",
    ]
    return head, rows


# The fairness table's network inputs: the shipped one (mildly overloaded, where replies and
# arrivals interleave most) and 1024x768 (heavily).
FAIRNESS_INPUTS = ((544, 416), (1024, 768))


def bench_fairness(
    ckpt, cameras, rate, seconds, inputs=FAIRNESS_INPUTS, dds_profile=None, quick=False
):
    """Several cameras offered more frames than the model takes, at each network input of
    `inputs` ((width, height)), drivers staggered or in one instant, with and without
    max_batch (`quick`: staggered without, in one instant with)."""
    env = middleware_env(dds_profile)
    runs = [(phase, batch) for phase in ("staggered", "same") for batch in (1, len(cameras))]
    if quick:
        runs = [runs[0], runs[-1]]
    rows = []
    for width, height in inputs:
        for phase, max_batch in runs:
            overrides = {
                "cameras": f"[{','.join(cameras)}]",
                "max_batch": max_batch,
                "input_width": width,
                "input_height": height,
            }
            r, _, _ = run_nodes(
                ckpt, [("", overrides)], cameras, rate, seconds, env, driver=("--phase", phase)
            )
            out = [r["cameras"][name]["received"] / r["seconds"] for name in cameras]
            statuses = [
                r["diagnostics"].get(f"/depthclip: {name} depth estimation", {})
                for name in cameras
            ]
            arrived = [float(s.get("input rate (Hz)", "nan")) for s in statuses]
            rows.append(
                [
                    f"{width}x{height}",
                    phase,
                    str(max_batch),
                    f"{rate:g} each",
                    " / ".join(f"{a:.1f}" for a in arrived),
                    " / ".join(f"{o:.2f}" for o in out),
                    f"{sum(out):.1f}",
                    f"{min(out) / max(out):.2f}" if max(out) > 0 else "-",
                    f"{np.median(all_latencies_ms(r)):.0f}",
                    f"{node_inference_ms(r):.0f}",
                ]
            )
            print("fairness", rows[-1], file=sys.stderr)
    head = [
        "network input",
        "drivers",
        "max_batch",
        "offered (Hz)",
        f"arrived at the node, last 10 s (Hz: {' / '.join(cameras)})",
        "depth out per camera (Hz)",
        "depth out, all (Hz)",
        "slowest / fastest",
        "latency median (ms)",
        "forward median (ms)",
    ]
    return head, rows


def bench_cuda_node(ckpt, seconds, dds_profile=None, device="cuda", **params):
    """The node on CUDA (RN50 shapes, the shipped config, 640x480 rgb8): one camera offered 100
    and 300 Hz, and 8 cameras at 30 Hz each with max_batch 8; with what the driver sent and
    where a frame's time went in the node (its stages and threads). `device`: "cpu" for a dry
    run; `params`: more of the node's parameters (executor=... to compare)."""
    env = middleware_env(dds_profile)
    cameras = [f"cam{i}" for i in range(8)]
    node = {"device": device, **params}
    setups = [
        ("1 camera", 100.0, [], node),
        ("1 camera", 300.0, [], node),
        (
            "8 cameras, max_batch 8",
            30.0,
            cameras,
            {**node, "cameras": f"[{','.join(cameras)}]", "max_batch": 8},
        ),
    ]
    rows = []
    for label, rate, names, overrides in setups:
        r, (window,), _ = run_nodes(ckpt, [("", overrides)], names, rate, seconds, env)
        out = [c["received"] / r["seconds"] for c in r["cameras"].values()]
        sent = sum(c["sent"] for c in r["cameras"].values()) / r["seconds"]
        lat = all_latencies_ms(r)
        rows.append(
            [
                label,
                f"{rate:g}",
                f"{sum(out):.1f}",
                f"{min(out):.1f} / {max(out):.1f}",
                f"{np.median(lat):.1f}" if len(lat) else "-",
                f"{np.percentile(lat, 95):.1f}" if len(lat) else "-",
                f"{node_inference_ms(r):.2f}",
                f"{sent:.1f}",
                *node_load_cells(r, window),
            ]
        )
        print("cuda node", rows[-1], file=sys.stderr)
    head = [
        "set-up",
        "offered per camera (Hz)",
        "depth out, all cameras (Hz)",
        "per camera, slowest / fastest (Hz)",
        "latency median (ms)",
        "latency p95 (ms)",
        "forward in node, median (ms)",
        "sent, all cameras (Hz)",
        *NODE_LOAD_HEAD,
    ]
    return head, rows
