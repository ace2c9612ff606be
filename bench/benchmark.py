"""Speed and memory of the core, the node and the eval; prints Markdown tables.

Real RN50 shapes with random weights (speed does not depend on weight values).
  make bench [BENCH_ARGS='--quick | --only-node | --skip-node | --rates 5,15,30
              | --node-seconds 20']
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from depthclip_ros import frame_messages, image_decoding  # noqa: E402
from depthclip_ros.config import DepthClipConfig  # noqa: E402
from depthclip_ros.core import DepthClip, DepthResult, preprocess  # noqa: E402
from depthclip_ros.node_process import local_dds_env, start_node_process  # noqa: E402
from depthclip_ros.params_files import default_params_file, load_config  # noqa: E402
from depthclip_ros.random_clip import save_random_checkpoint  # noqa: E402
from depthclip_ros.synthetic_scenes import render_scene, scene_camera_info_fields  # noqa: E402


def machine() -> str:
    cpu, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    # The vector units that decide CPU speed here (machines of this project differ in them).
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags] or ["no AVX2"]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores ({' '.join(simd)}), {gpu}; torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def timed(fns, reps, warmup=1, sync=None):
    """Seconds per call of each function, calls interleaved (a, b, a, b, ...) so that the
    machine's drift over the run weighs on every function alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    out = [[] for _ in fns]
    for _ in range(reps):
        for fn, times in zip(fns, out):
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            times.append(time.perf_counter() - t0)
    return out


def flops_of(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def core_and_raw_forward(model, cfg, imgs, reps):
    """Per-call times of `predict` and of the raw forward (the same layers on the same tensor,
    already preprocessed, flipped, cast and laid out as the encoder takes it), timed
    interleaved, and `predict`'s FLOPs per frame."""
    sync = torch.cuda.synchronize if model.device.type == "cuda" else None
    with torch.inference_mode():
        x = preprocess(model.to_device(imgs), cfg)
        if cfg.flip:
            x = torch.cat([x, x.flip(-1)])
        x = x.to(model.dtype).contiguous(memory_format=torch.channels_last)
        core_t, raw_t = timed(
            [lambda: model.predict(imgs), lambda: model.encoder(x)], reps, sync=sync
        )
        flops = flops_of(lambda: model.predict(imgs)) / len(imgs)
    return core_t, raw_t, flops


def bench_core(ckpt, devices, quick):
    rows = []
    for device in devices:
        precisions = ["fp32"] if device == "cpu" else ["fp16", "fp32"]
        for precision in precisions:
            for label, size in (("544x416", (416, 544)), ("640x480 resize", (480, 640))):
                for flip in (False, True):
                    for batch in (1, 8):
                        if quick and (batch == 8 or flip):
                            continue
                        cfg = DepthClipConfig(
                            model=ckpt,
                            device=device,
                            precision=precision,
                            flip=flip,
                            preprocessing="resize",
                            temperature=0.1,
                            cache_dir=tempfile.mkdtemp(),
                        )
                        model = DepthClip(cfg)
                        imgs = np.random.default_rng(0).integers(
                            0, 256, (batch, *size, 3), dtype=np.uint8
                        )
                        reps = (
                            3
                            if batch == 8 and device == "cpu"
                            else (10 if device == "cpu" else 50)
                        )
                        core_t, raw_t, flops = core_and_raw_forward(model, cfg, imgs, reps)
                        med, raw = statistics.median(core_t), statistics.median(raw_t)
                        rows.append(
                            [
                                device,
                                precision,
                                label,
                                "on" if flip else "off",
                                batch,
                                f"{med / batch * 1e3:.1f}",
                                f"{np.percentile(core_t, 95) / batch * 1e3:.1f}",
                                f"{batch / med:.2f}",
                                f"{flops / 1e9:.1f}",
                                f"{flops * batch / med / 1e9:.1f}",
                                f"{raw / batch * 1e3:.1f}",
                                f"{med / raw:.3f}",
                            ]
                        )
                        print("core", rows[-1], file=sys.stderr)
                        del model
    head = [
        "device",
        "precision",
        "input",
        "flip",
        "batch",
        "latency/frame median (ms)",
        "p95 (ms)",
        "frames/s",
        "GFLOP/frame",
        "GFLOP/s",
        "raw forward/frame (ms)",
        "core / raw",
    ]
    return head, rows


def bench_conversions():
    """The node's per-frame message work, without the model: decode, depth image, camera_info,
    cloud."""
    rgb, _ = render_scene("corridor")
    msg = types.SimpleNamespace(
        **frame_messages.rgb8_image_fields(rgb)
    )  # attribute access like a message
    depth = np.random.default_rng(0).uniform(1, 3, (1, 480, 640)).astype(np.float32)
    result = DepthResult(
        depth=depth,
        coarse_depth=depth[:, ::32, ::32],
        bin_probs=None,
        bins=np.arange(1.0, 8.0),
        region=(0, 0, 480, 640),
    )
    roi = types.SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    info = types.SimpleNamespace(**scene_camera_info_fields(), binning_x=0, binning_y=0, roi=roi)

    def once():
        frame_messages.frame_outputs(image_decoding.decode_image(msg), result, 0, info, 8)

    (t,) = timed([once], 200, warmup=5)
    return [
        [
            "rgb8 decode + 32FC1 depth + camera_info + cloud (stride 8), 640x480",
            f"{statistics.median(t) * 1e3:.2f}",
            f"{np.percentile(t, 95) * 1e3:.2f}",
        ]
    ]


NODE_RUNNER = r"""
import sys, time, threading, json
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, CameraInfo
from diagnostic_msgs.msg import DiagnosticArray
from depthclip_ros import frame_messages
from depthclip_ros.synthetic_scenes import render_scene, scene_camera_info_fields
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
rclpy.init(); n = rclpy.create_node("bench_camera")
lat = []; recv = []; diag = {}
def on_depth(m):
    now = time.time()
    lat.append(now - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)); recv.append(now)
def on_diag(m):
    for st in m.status:
        diag.update({kv.key: kv.value for kv in st.values})
reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
n.create_subscription(Image, "depth/image", on_depth, reliable)
n.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
# A camera driver's QoS (REP 2003: reliable, system default depth); the node adapts to it.
pub = n.create_publisher(Image, "image", 10)
ipub = n.create_publisher(CameraInfo, "camera_info", 10)
threading.Thread(target=rclpy.spin, args=(n,), daemon=True).start()
while pub.get_subscription_count() == 0: time.sleep(0.1)
rgb, _ = render_scene("corridor")
fields = frame_messages.rgb8_image_fields(rgb)
info = CameraInfo(**scene_camera_info_fields())
msg = Image(**fields)  # built once: a camera driver does not pay Python's message construction
msg.header.frame_id = "cam"
def stream(duration):
    sent = 0; t0 = time.time()
    while time.time() - t0 < duration:
        now = time.time()
        msg.header.stamp.sec = int(now); msg.header.stamp.nanosec = int((now % 1) * 1e9)
        info.header = msg.header
        # A driver's order: image, then camera_info.
        pub.publish(msg); ipub.publish(info); sent += 1
        time.sleep(max(0.0, t0 + sent / rate - time.time()))
    return sent
stream(3.0)  # steady state first: the measured window starts warm
time.sleep(1.0); lat.clear(); recv.clear(); diag.clear()
start = time.time(); sent = stream(seconds); end = time.time()
time.sleep(2.0)
print(json.dumps({"sent": sent, "received": len(recv), "lat": lat, "start": start, "end": end,
                  "node_inference_ms": diag.get("inference median (ms)")}))
rclpy.shutdown()
"""


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


def bench_node(ckpt, rates, seconds, dds_profile=None):
    import json
    import threading

    env = {**os.environ, **local_dds_env(), "PYTHONWARNINGS": "ignore"}
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)  # the middleware's defaults, as on a robot ...
    if dds_profile:  # ... unless a profile is asked for (optional tuning, measured against them)
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(Path(dds_profile).resolve())
    rows = []
    root = str(Path(__file__).resolve().parent.parent)
    core_ms = node_core_reference(ckpt)
    for rate in rates:
        core = core_ms()
        log = Path(tempfile.mkdtemp()) / "node.log"
        node = start_node_process(
            default_params_file(),
            {"model": ckpt, "device": "cpu", "cache_dir": tempfile.mkdtemp()},
            env,
            log,
        )
        deadline = time.time() + 120
        while "warm-up" not in log.read_text() and time.time() < deadline and node.poll() is None:
            time.sleep(0.2)
        samples = []  # (wall time, RSS MB, CPU s) of the node, sampled through the run
        stop = threading.Event()
        sampler = threading.Thread(
            target=sample_process, args=(node.pid, samples, stop), daemon=True
        )
        sampler.start()
        out = subprocess.run(
            [sys.executable, "-c", NODE_RUNNER, str(rate), str(seconds)],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
        stop.set()
        sampler.join()
        node.terminate()
        node.wait(timeout=20)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        window = [s for s in samples if r["start"] <= s[0] <= r["end"]]
        (t0, rss0, cpu0), (t1, rss1, cpu1) = window[0], window[-1]
        lat = np.array(r["lat"]) * 1e3
        in_node = float(r["node_inference_ms"])
        # A frame waits on average half a camera period for the forward in progress to end
        # (when the camera is faster than the model), then takes one forward.
        floor = core + 0.5 * 1e3 / rate if 1e3 / rate < core else core
        rows.append(
            [
                f"{rate:g}",
                f"{r['sent'] / seconds:.1f}",
                f"{r['received'] / seconds:.2f}",
                f"{1e3 / core:.2f}",
                str(r["sent"] - r["received"]),
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
                f"{(cpu1 - cpu0) / (t1 - t0) * 100:.0f}%",
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
        "node CPU (of 1 core)",
    ]
    return head, rows


def sample_process(pid, samples, stop):
    """Append (wall time, RSS MB, CPU s) of process `pid` every 0.25 s until `stop` is set."""
    while not stop.is_set():
        samples.append((time.time(), _rss_mb(pid), _cpu_s(pid)))
        stop.wait(0.25)


def _rss_mb(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_eval(ckpt, n_images):
    from PIL import Image

    from offline_eval.data import open_dataset
    from offline_eval.evaluation import EvalRun, evaluate

    root = Path(tempfile.mkdtemp())
    scene = root / "official_splits" / "test" / "corridor"
    scene.mkdir(parents=True)
    rgb, depth = render_scene("corridor")
    for i in range(n_images):
        Image.fromarray(rgb).save(scene / f"rgb_{i:05d}.jpg")
        Image.fromarray((depth * 1000).astype(np.uint16)).save(scene / f"sync_depth_{i:05d}.png")
    params = root / "p.yaml"
    params.write_text(f"/**/depthclip:\n  ros__parameters:\n    model: {ckpt}\n    device: cpu\n")
    t0 = time.perf_counter()
    evaluate(open_dataset(root), EvalRun(params_file=str(params), workers=2), quiet=True)
    dt = time.perf_counter() - t0
    return [
        [
            f"{n_images} synthetic 640x480 images, paper protocol (crop + flip), cpu",
            f"{n_images / dt:.2f}",
        ]
    ]


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def rates_hz(text: str) -> list:
    try:
        rates = [float(r) for r in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected rates in Hz like 5,15,30, got '{text}'"
        ) from None
    if any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be > 0 Hz, got '{text}'")
    return rates


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="core: batch 1, no flip only")
    p.add_argument(
        "--node-seconds", type=float, default=20.0, help="measured window per rate (default 20)"
    )
    p.add_argument(
        "--rates",
        type=rates_hz,
        default=rates_hz("5,15,30"),
        help="camera rates in Hz, comma-separated (default 5,15,30)",
    )
    p.add_argument("--skip-node", action="store_true", help="no node table")
    p.add_argument("--only-node", action="store_true", help="just the node table")
    p.add_argument(
        "--eval-images",
        type=int,
        default=6,
        help="synthetic images for the eval table (default 6)",
    )
    p.add_argument(
        "--dds-profile",
        help="Fast DDS XML profile for the node table (default: none, the middleware's defaults)",
    )
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    ckpt = save_random_checkpoint(Path(tempfile.mkdtemp()) / "rn50_random.pt", "RN50")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"# depthclip_ros benchmark\n\nMachine: {machine()}\n")
    if not args.only_node:
        print("## Core (DepthClip.predict, RN50 shapes, random weights)\n")
        print(table(*bench_core(ckpt, devices, args.quick)) + "\n")
        print("## Conversions and cloud building per frame\n")
        print(table(["step", "median (ms)", "p95 (ms)"], bench_conversions()) + "\n")
    if not args.skip_node:
        transport = (
            f"Fast DDS profile {Path(args.dds_profile).name}"
            if args.dds_profile
            else "default middleware"
        )
        print(
            f"## Node (640x480 rgb8 stream from a reliable publisher, {transport}, "
            f"{args.node_seconds:g} s per rate, cpu)\n"
        )
        print(table(*bench_node(ckpt, args.rates, args.node_seconds, args.dds_profile)) + "\n")
    if args.only_node:
        return
    print("## Offline evaluation\n")
    print(table(["data", "images/s"], bench_eval(ckpt, args.eval_images)))


if __name__ == "__main__":
    main()
