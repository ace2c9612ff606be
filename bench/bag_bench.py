"""Benchmark of the recorded-bag tools: `depthclip-bag process` against the core's own predict
rate, and `depthclip-fleet` against one depthclip-bag process per bag. Each tool runs as its own
process, as users run it; bags are written here with rosbags (the shipped synthetic scenes)."""

import functools
import io
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from depthclip_ros.bag.pipeline import decode_threads
from depthclip_ros.bag.plan import plan_bag
from depthclip_ros.bag.processing import process_bag
from depthclip_ros.config.params_files import load_config, load_params
from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.messages.outputs import DEFAULT_OUTPUTS, MessageBuilder, rgb8_image_fields
from depthclip_ros.model_loading import load_estimator
from depthclip_ros.synthetic_scenes import SCENES, render_scene, scene_camera_info_fields

from .measure import timed

BIN = Path(sys.executable).parent
T0_NS = 1_700_000_000 * 10**9
PERIOD_NS = 33_333_333  # 30 Hz
IMAGE_TOPIC, JPEG_TOPIC = "/cam/image_raw", "/cam/image_raw/compressed"


def jpeg_bytes(image, quality: int = 90) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality)
    return out.getvalue()


@functools.cache
def scene_image(name: str):
    """A shipped scene's 640x480 image, rendered once (ray-cast: not free)."""
    return render_scene(name)[0]


def write_camera_bag(path: Path, frames: int, storage: str = "mcap", jpeg: bool = False) -> None:
    """A 640x480 rgb8 camera at 30 Hz with its camera_info, as a driver's recording has it;
    `jpeg`: its images JPEG-compressed instead, on JPEG_TOPIC (image_transport's)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    builder = MessageBuilder.from_typestore(ts)
    types = ts.types
    images = [scene_image(name) for name in SCENES]
    compressed = [jpeg_bytes(image) for image in images] if jpeg else None
    fields = scene_camera_info_fields()
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        info_conn = writer.add_connection(
            "/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts
        )
        image_conn = writer.add_connection(
            JPEG_TOPIC if jpeg else IMAGE_TOPIC,
            "sensor_msgs/msg/CompressedImage" if jpeg else "sensor_msgs/msg/Image",
            typestore=ts,
        )
        for i in range(frames):
            t = T0_NS + i * PERIOD_NS
            stamp = types["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9)
            header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="camera_optical_frame")
            if jpeg:
                image = builder.compressed_image(
                    header, {"format": "jpeg", "data": compressed[i % len(images)]}
                )
            else:
                image = builder.image(header, rgb8_image_fields(images[i % len(images)]))
            info = types["sensor_msgs/msg/CameraInfo"](
                header=header,
                **{k: np.asarray(v, np.float64) if k in "dkrp" else v for k, v in fields.items()},
                binning_x=0,
                binning_y=0,
                roi=roi,
            )
            writer.write(image_conn, t, ts.serialize_cdr(image, image_conn.msgtype))
            writer.write(info_conn, t, ts.serialize_cdr(info, info_conn.msgtype))


def params_file(folder: Path, ckpt) -> Path:
    path = folder / "params.yaml"
    params = {"model": str(ckpt), "device": "cpu", "cache_dir": str(folder / "cache")}
    path.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": params}}))
    return path


def predict_rate(model, reps: int = 30) -> float:
    """The core's own predicts/s on one 640x480 frame (batch 1)."""
    frame = scene_image("room")[None]
    (times,) = timed([lambda: model.predict(frame)], reps, warmup=3)
    return 1.0 / statistics.median(times)


def run_tool(tool: str, *argv, params: Path) -> tuple:
    """Run a console script of the package on the bench camera as its own process: (wall
    seconds of the whole process, its stdout). RuntimeError with its stderr when it fails."""
    command = [str(BIN / tool), *map(str, argv), "--image-topic", IMAGE_TOPIC]
    command += ["--params", str(params), "--quiet"]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed: {proc.stderr.strip()[-800:]}")
    return wall, proc.stdout


def run_bag_tool(bag: Path, out: Path, params: Path) -> tuple:
    """(wall seconds of the whole process, the processing seconds it reports)."""
    shutil.rmtree(out, ignore_errors=True)
    wall, stdout = run_tool("depthclip-bag", "process", bag, out, params=params)
    return wall, float(re.search(r"copied, ([0-9.]+) s", stdout).group(1))


class CostlessModel:
    """Stands in for a model that leaves the CPU free, as a GPU's forward does (the GIL released
    while it waits): one frame's real results, returned after 0.1 ms a frame. With it the bag
    tool's rate is what its reading, building and writing sustain: a GPU's ceiling here."""

    device = "stand-in"  # not "cpu": the tool overlaps the steps, as on a GPU
    cpu_threads = 0
    model_identity = "stand-in"

    def __init__(self, model, batch_size: int):
        frame = scene_image("room")
        self.results = {b: model.predict(np.stack([frame] * b)) for b in range(1, batch_size + 1)}

    def begin_predict(self, frames, scenes=None, arrays=None):
        time.sleep(1e-4 * len(frames))
        result = self.results[len(frames)]
        return lambda: result


def ceiling_runs(
    costless,
    params,
    bag,
    frames,
    batch_size=8,
    repeats=3,
    image_topic=IMAGE_TOPIC,
    decode_threads=None,
    **plan_options,
):
    """[(frames/s, bytes of OUT)] of `repeats` runs of the tool with a CostlessModel, in this
    process; `decode_threads`: process_bag's; `plan_options`: plan_bag's (outputs,
    outputs_only)."""
    settings = OutputSettings.from_params(load_params(params, (), {}))
    runs = []
    for _ in range(repeats):
        out = bag.parent / "ceiling_out"
        with plan_bag(bag, out, [image_topic], **plan_options) as plan:
            stats = process_bag(
                plan, costless, settings, batch_size=batch_size, decode_threads=decode_threads
            )
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        runs.append((frames / stats["seconds"], size))
        shutil.rmtree(out)
    return runs


def bench_bag_outputs(ckpt, frames=300, repeats=5):
    """The bag tool's reading, building and writing alone (a model stand-in) writing a full
    copy, the outputs only, and the outputs only with compressedDepth for depth: frames/s and
    bytes a frame, the three interleaved in each repeat. The best repeat is the tool's own cost;
    the median adds what the machine charges for fresh page-cache memory, which on a VM varies
    several-fold from run to run and grows with the bytes written (results/performance.md)."""
    folder = Path(tempfile.mkdtemp())
    params = params_file(folder, ckpt)
    bag = folder / "bag"
    write_camera_bag(bag, frames)
    costless = CostlessModel(load_estimator(load_config(params)), 8)
    variants = {
        "full copy (default)": {},
        "--outputs-only": dict(outputs_only=True),
        "--outputs-only --compressed-depth": dict(
            outputs_only=True,
            outputs=tuple("compressed_depth" if k == "depth" else k for k in DEFAULT_OUTPUTS),
        ),
    }
    results = {name: [] for name in variants}
    for _ in range(repeats):
        for name, options in variants.items():
            results[name] += ceiling_runs(costless, params, bag, frames, repeats=1, **options)
    shutil.rmtree(folder, ignore_errors=True)
    rates = {name: [rate for rate, _ in runs] for name, runs in results.items()}
    full = rates["full copy (default)"]
    rows = []
    for name, runs in results.items():
        best, median = max(rates[name]), statistics.median(rates[name])
        rows.append(
            [
                name,
                f"{best:.0f}",
                f"{median:.0f} ({', '.join(f'{r:.0f}' for r in rates[name])})",
                f"{best / max(full):.2f}; {median / statistics.median(full):.2f}",
                f"{statistics.median(size for _, size in runs) / frames / 1e6:.2f}",
            ]
        )
    head = [
        "OUT holds",
        "frames/s, best",
        "frames/s, median (each repeat)",
        "/ full copy (best; median)",
        "MB a frame",
    ]
    return head, rows


def bench_bag_tool(ckpt, frames=(60, 300), repeats=3):
    """depthclip-bag on a short and a long bag: throughput with start-up cancelled out
    ((long - short) frames over the difference of the walls) against the core's predict rate.
    The machine's speed drifts within minutes, so each repeat is a pair measured back to back
    (the core's rate before and after the tool's two runs) and the pairs' ratios are compared,
    not the medians of rates taken at different times."""
    folder = Path(tempfile.mkdtemp())
    params = params_file(folder, ckpt)
    short, long = frames
    for n in frames:
        write_camera_bag(folder / f"bag{n}", n)
    model = load_estimator(load_config(params))  # the tool's config
    rates, tools, walls = [], [], {n: [] for n in frames}
    rate_before = predict_rate(model)
    for _ in range(repeats):
        wall = {}
        for n in frames:
            wall[n] = run_bag_tool(folder / f"bag{n}", folder / f"out{n}", params)[0]
            walls[n].append(wall[n])
            shutil.rmtree(folder / f"out{n}", ignore_errors=True)
        rate_after = predict_rate(model)
        rates.append((rate_before + rate_after) / 2)
        extra = wall[long] - wall[short]
        tools.append((long - short) / extra if extra > 0 else None)
        rate_before = rate_after
    costless = CostlessModel(model, 8)
    runs = ceiling_runs(costless, params, folder / f"bag{long}", long, repeats=repeats)
    ceiling = statistics.median(rate for rate, _ in runs)
    write_camera_bag(folder / "jpeg", long, jpeg=True)
    threads = decode_threads(costless.device, costless.cpu_threads)
    jpeg = {0: [], None: []}  # decode threads -> frames/s, the two interleaved
    for _ in range(repeats):
        for n, jpeg_rates in jpeg.items():
            options = dict(repeats=1, image_topic=JPEG_TOPIC, decode_threads=n)
            jpeg_rates += [
                rate
                for rate, _ in ceiling_runs(costless, params, folder / "jpeg", long, **options)
            ]
    shutil.rmtree(folder, ignore_errors=True)
    measured = [(tool, tool / rate) for tool, rate in zip(tools, rates) if tool is not None]
    if measured:
        ratios = sorted(ratio for _, ratio in measured)
        tool = [
            f"{statistics.median(t for t, _ in measured):.1f}",
            f"{statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})",
        ]
    else:  # the runs' start-up noise exceeds what the extra frames cost: too few frames
        tool = ["n/a (too few frames)", "n/a"]
    wall = {n: statistics.median(w) for n, w in walls.items()}
    rows = [
        ["core predict (batch 1)", f"{statistics.median(rates):.1f}", "1.00", ""],
        [
            f"depthclip-bag, start-up cancelled ({long} against {short} frames)",
            *tool,
            f"{wall[short]:.1f} s / {wall[long]:.1f} s",
        ],
        [
            f"depthclip-bag's reading, building and writing alone ({long} frames, batch 8, a "
            "model stand-in costing 0.1 ms a frame, steps overlapped as on a GPU; in-process)",
            f"{ceiling:.1f}",
            f"{ceiling / statistics.median(rates):.2f}",
            "",
        ],
        *(
            [
                f"the same, a JPEG camera (quality 90), decoded {how}",
                f"{statistics.median(jpeg[n]):.1f}",
                f"{statistics.median(jpeg[n]) / statistics.median(rates):.2f}",
                "",
            ]
            for n, how in ((0, "on the reading thread"), (None, f"on {threads} thread(s) ahead"))
        ),
    ]
    head = ["what", "frames/s", "/ core predict (median; each repeat)", "wall (short / long bag)"]
    return head, rows


def bench_fleet(ckpt, bags=8, frames=30, worker_setups=((2, 1.0), (1, 2.0))):
    """`depthclip-fleet` over `bags` bags against one depthclip-bag process per bag, in turn."""
    folder = Path(tempfile.mkdtemp())
    params = params_file(folder, ckpt)
    archive = folder / "archive"
    for i in range(bags):
        write_camera_bag(archive / f"run{i}", frames, "mcap" if i % 2 == 0 else "sqlite3")
    total = bags * frames
    started = time.perf_counter()
    reported = 0.0
    for i in range(bags):
        reported += run_bag_tool(archive / f"run{i}", folder / "seq" / f"run{i}", params)[1]
    sequential = time.perf_counter() - started
    shutil.rmtree(folder / "seq", ignore_errors=True)
    rows = [
        [
            f"{bags} depthclip-bag processes, one after another",
            f"{total / reported:.3g}",  # a short run's rates are well below one frame/s
            f"{total / sequential:.3g}",
            f"{sequential:.1f}",
            "1.00",
        ]
    ]
    for workers, cpus in worker_setups:
        out = folder / f"fleet{workers}"
        argv = [archive, "--out", out, "--workers", workers, "--cpus-per-worker", f"{cpus:g}"]
        wall, stdout = run_tool("depthclip-fleet", *argv, params=params)
        excluded = float(re.search(r"start-up excluded\) \| ([0-9.]+)", stdout).group(1))
        rows.append(
            [
                f"depthclip-fleet, {workers} worker(s) x {cpus:g} CPU, local Ray",
                f"{excluded:.3g}",
                f"{total / wall:.3g}",
                f"{wall:.1f}",
                f"{sequential / wall:.2f}",
            ]
        )
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    head = [
        "how",
        "frames/s, start-up excluded",
        "frames/s, start-up included",
        "wall (s)",
        "speed-up (wall)",
    ]
    return head, rows
