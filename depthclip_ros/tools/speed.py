"""depthclip-speed: how fast the depth runs on this machine, with your parameters and model.

  depthclip-speed [--params FILE] [--rate 15] [--seconds 10] [--frames 20]

Two measurements, printed as one table with the machine named: the core (one 640x480 frame
through the model, as the node runs it, after two warm-up frames) and the node as its own
process fed by a camera driver process at `--rate` for `--seconds` over this machine's loopback
(the depth images and their latency as the driver receives them, the forward from the node's
own /diagnostics). It runs where the package is
installed (a colcon workspace as the pip set-up); the model is the one `--params` names (RN50's
weights are downloaded on first use; an exported graph needs none). Exit 0 done, 2 the
parameters, the model or the node failed (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import DepthClipError

WARMUP_FRAMES = 2


def measure_core(params_file, frames: int) -> dict:
    """The core's latency on the built-in corridor scene: median and p95 (ms), frames/s."""
    from ..config.params_files import load_config
    from ..model_loading import load_estimator
    from ..synthetic_scenes import render_scene

    estimator = load_estimator(load_config(params_file))
    rgb, _ = render_scene("corridor")
    for _ in range(WARMUP_FRAMES):
        estimator.predict(rgb)
    seconds = []
    for _ in range(frames):
        start = time.perf_counter()
        estimator.predict(rgb)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "model": estimator.model_identity,
        "device": str(estimator.device),
        "precision": estimator.precision_detail,
        "median_ms": median * 1e3,
        "p95_ms": float(np.percentile(seconds, 95)) * 1e3,
        "frames_per_s": 1.0 / median,
    }


def measure_node(params_file, rate: float, seconds: float) -> dict:
    """The node as its own process, fed by a camera driver process at `rate` for `seconds`:
    the driver's count of depth images back, and the node's own figures from /diagnostics."""
    from .node_process import local_dds_env, start_node_process, stop_node_process

    env = local_dds_env()
    log = Path(tempfile.mkdtemp(prefix="depthclip_speed_")) / "node.log"
    node = start_node_process(params_file, {}, env, log)
    try:
        driver = subprocess.run(
            [
                sys.executable,
                "-m",
                "depthclip_ros.tools.camera_driver",
                "--rate",
                str(rate),
                "--seconds",
                str(seconds),
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=seconds + 300,
        )
        if node.poll() is not None or driver.returncode != 0:
            driver_words = (driver.stderr.strip().splitlines() or ["no report"])[-1]
            raise DepthClipError(_last_line(log) or f"the camera driver: {driver_words}")
        report = json.loads(driver.stdout.strip().splitlines()[-1])
    finally:
        stop_node_process(node, timeout=20)
    (camera,) = report["cameras"].values()
    status = next(iter(report["diagnostics at the stream's end"].values()), {})
    latencies = camera["latencies"]  # seconds from a frame's stamp to its depth back
    return {
        "offered_hz": rate,
        "out_hz": camera["received"] / report["seconds"],
        "latency": (
            f"{statistics.median(latencies) * 1e3:.0f} / {np.percentile(latencies, 95) * 1e3:.0f}"
            if latencies
            else "-"
        ),
        "inference": " / ".join(
            status.get(f"inference {which} (ms)", "-") for which in ("median", "p95")
        ),
    }


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f"the node stopped: {lines[-1]}" if lines else ""


def table(machine: str, core: dict, node: dict) -> str:
    rows = [
        ("machine", machine),
        ("model", core["model"]),
        ("device, precision", f"{core['device']}, {core['precision']}"),
        (
            "core, a 640x480 frame: median / p95 (ms)",
            f"{core['median_ms']:.1f} / {core['p95_ms']:.1f}",
        ),
        ("core (frames/s)", f"{core['frames_per_s']:.1f}"),
        ("node: depth images out (Hz)", f"{node['out_hz']:.1f} of {node['offered_hz']:g} offered"),
        ("node: latency median / p95 (ms)", node["latency"]),
        ("node: forward median / p95 (ms)", node["inference"]),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {what} | {value} |" for what, value in rows)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="depthclip-speed",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--params", help="parameter YAML (default: the installed config)")
    parser.add_argument("--rate", type=float, default=15.0, help="camera Hz offered the node")
    parser.add_argument("--seconds", type=float, default=10.0, help="the node's measured run")
    parser.add_argument("--frames", type=int, default=20, help="frames timed through the core")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.frames < 1:
        parser.error("--rate and --seconds must be > 0, --frames >= 1")
    from ..config.params_files import default_params_file
    from ..estimator.cpu_features import cpu_description

    params_file = args.params or str(default_params_file())
    try:
        core = measure_core(params_file, args.frames)
        node = measure_node(params_file, args.rate, args.seconds)
    except DepthClipError as exc:
        print(f"depthclip-speed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the node process is stopped on the way out
        print("depthclip-speed: interrupted", file=sys.stderr)
        return 130
    print(table(cpu_description(), core, node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
