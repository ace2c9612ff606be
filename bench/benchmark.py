"""Speed and memory of the core, the node and the eval; prints Markdown tables.

Real RN50 shapes with random weights (speed does not depend on weight values).
  make bench (python -m bench) [BENCH_ARGS='--quick | --only SECTION[,SECTION...]
              | --only temporal --temporal-picture docs/images/temporal_filter.png
              | --only metric-scale --metric-scale-picture docs/images/metric_scale.png
              | --skip-node | --rates 5,15,30 | --node-seconds 20 | --camera-rate 5
              | --only sharing --sharing-rate 60']
"""

from __future__ import annotations

import argparse
import collections
import functools
import io
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.config.params_files import load_config, resolve_scene_presets
from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.cpu_features import cpu_model_and_flags, usable_cores
from depthclip_ros.estimator.preprocessing import preprocess
from depthclip_ros.export.graph import export
from depthclip_ros.messages import decoding, outputs
from depthclip_ros.model_loading import load_estimator
from depthclip_ros.synthetic_scenes import SCENES, render_scene, scene_camera_info_fields
from depthclip_ros.tools.camera_driver import INFO_PATTERNS
from depthclip_ros.tools.random_clip import save_random_checkpoint

from .bag_bench import bench_bag_outputs, bench_bag_tool, bench_fleet
from .measure import machine, scratch_folder, table, timed
from .metric_scale_bench import (
    MODEL_WORDS,
    RATE,
    before_after_picture,
    bench_metric_scale,
    bench_metric_scale_over_time,
    bench_range_reading,
    bench_still_view_clearing,
    nyu_samples,
    parallax_sample,
    scene_samples,
)
from .moving_robot import SCAN_RATE, TF_RATE, bench_metric_scale_moving
from .node_bench import (
    EXECUTOR_SETUPS,
    FAIRNESS_INPUTS,
    bench_backends,
    bench_camera_info,
    bench_cameras,
    bench_compressed_depth_node,
    bench_cuda_node,
    bench_every_output,
    bench_executors,
    bench_fairness,
    bench_node,
)
from .precision_bench import bench_cpu_variants
from .sharing_bench import bench_sharing

ROOT = Path(__file__).resolve().parent.parent
# The shared NYU samples (BTS layout) beside the checkout, where this workplace keeps them.
NYU_SAMPLES = ROOT.parent / "shared" / "data" / "nyu_samples"


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
                            if quick or (batch == 8 and device == "cpu")
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


def batched_and_sequential(model, frames, reps):
    """Median seconds of one forward of all `frames` and of one forward per frame."""
    sync = torch.cuda.synchronize if model.device.type == "cuda" else None
    batch = np.stack(frames)
    batched, sequential = timed(
        [lambda: model.predict(batch), lambda: [model.predict(f) for f in frames]], reps, sync=sync
    )
    return statistics.median(batched), statistics.median(sequential)


def bench_batching(ckpt, devices, reps):
    """max_batch: N cameras' 640x480 frames (the node's shipped config) in one batched forward
    against N forwards of one, timed interleaved on each device."""
    rows = []
    frames = [render_scene(name)[0] for name in ("corridor", "room", "near_wall")]
    for device in devices:
        cfg = load_config(
            overrides={"model": ckpt, "device": device, "cache_dir": tempfile.mkdtemp()}
        )
        model = DepthClip(cfg)
        for n in (2, 3):
            b, q = batched_and_sequential(model, frames[:n], reps)
            rows.append(
                [device, n, f"{q * 1e3:.0f}", f"{b * 1e3:.0f}", f"{b / q:.2f}", f"{n / b:.2f}"]
            )
            print("batching", rows[-1], file=sys.stderr)
    head = [
        "device",
        "cameras",
        "sequential forwards (ms)",
        "one batched forward (ms)",
        "batched / sequential",
        "frames/s batched",
    ]
    return head, rows


def bench_backend_core(ckpt, onnx_models, reps):
    """DepthClip.predict on each backend, one 640x480 frame (the node's shipped config),
    timed interleaved in this process; `onnx_models`: {row name: exported graph}."""
    cache = tempfile.mkdtemp()
    models = {
        name: load_estimator(
            load_config(overrides={"model": model, "device": "cpu", "cache_dir": cache})
        )
        for name, model in {"torch": ckpt, **onnx_models}.items()
    }
    frame = render_scene("corridor")[0]
    times = timed([lambda m=m: m.predict(frame) for m in models.values()], reps, warmup=2)
    torch_median = statistics.median(times[0])
    rows = [
        [
            name,
            models[name].runtime,
            str(models[name].dtype).removeprefix("torch."),
            f"{statistics.median(t) * 1e3:.0f}",
            f"{np.percentile(t, 95) * 1e3:.0f}",
            f"{statistics.median(t) / torch_median:.2f}",
        ]
        for name, t in zip(models, times)
    ]
    return ["backend", "runtime", "precision", "median (ms)", "p95 (ms)", "/ torch"], rows


def bench_conversions(ckpt, reps: int = 200):
    """The node's and the bag tool's per-frame host work, without the model: decoding a camera's
    image (three encodings), and the default outputs' fields made from a DepthResult of the
    tiny random CLIP (its bin probabilities: the clearing cloud's quantile)."""
    from PIL import Image

    rgb, _ = render_scene("corridor")
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, "JPEG", quality=90)
    images = {  # attribute access like a message
        "rgb8": types.SimpleNamespace(**outputs.rgb8_image_fields(rgb)),
        "bgr8": types.SimpleNamespace(
            **outputs.rgb8_image_fields(np.ascontiguousarray(rgb[..., ::-1]), "bgr8")
        ),
        "JPEG (quality 90)": types.SimpleNamespace(format="jpeg", data=jpeg.getvalue()),
    }
    model = load_estimator(load_config(overrides={"model": str(ckpt), "device": "cpu"}))
    result = model.predict(rgb)
    roi = types.SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    info = types.SimpleNamespace(**scene_camera_info_fields(), binning_x=0, binning_y=0, roi=roi)
    steps = {
        f"decode {name}, 640x480": functools.partial(decoding.decode_image, msg)
        for name, msg in images.items()
    }
    settings = OutputSettings()
    steps[
        f"the default outputs' fields ({', '.join(outputs.DEFAULT_OUTPUTS)}; cloud stride "
        f"{settings.cloud_stride}), 640x480"
    ] = functools.partial(outputs.frame_outputs, rgb, result, 0, info, settings)
    times = timed(list(steps.values()), reps, warmup=5)
    return [
        [name, f"{statistics.median(t) * 1e3:.2f}", f"{np.percentile(t, 95) * 1e3:.2f}"]
        for name, t in zip(steps, times)
    ]


def bench_compressed_depth(quick: bool):
    """depth/image as compressedDepth (the shipped parameters) against 32FC1 on the demo's
    scenes: bytes and the encoding's time per frame, as the node's encoding thread runs it."""
    tiny = save_random_checkpoint(Path(tempfile.mkdtemp()) / "tiny_random.pt", "tiny")
    model = load_estimator(load_config(overrides={"model": tiny, "device": "cpu"}))
    settings = OutputSettings()
    rows = []
    for name in SCENES:
        depth = model.predict(render_scene(name)[0]).depth[0]
        encoding = functools.partial(outputs.compressed_depth_fields, depth, settings)
        (encode,) = timed([encoding], 3 if quick else 20)
        size = len(outputs.compressed_depth_fields(depth, settings)["data"])
        rows.append(
            [
                name,
                f"{depth.nbytes / 1e3:.0f}",
                f"{size / 1e3:.1f}",
                f"{depth.nbytes / size:.0f}",
                f"{statistics.median(encode) * 1e3:.2f}",
            ]
        )
    head = ["scene", "32FC1 (kB)", "compressedDepth (kB)", "smaller by", "encode median (ms)"]
    return head, rows


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


def frame_pair(text: str) -> tuple:
    try:
        short, long = (int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SHORT,LONG frame counts, got '{text}'"
        ) from None
    if not 0 < short < long:
        raise argparse.ArgumentTypeError(f"expected 0 < SHORT < LONG, got '{text}'")
    return short, long


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


def rate_hz(text: str) -> float:
    if "," in text:
        raise argparse.ArgumentTypeError(f"expected one rate in Hz, got '{text}'")
    return rates_hz(text)[0]


def bench_options(ckpt, reps=12):
    """Beyond the paper, per 544x416 frame on CPU: each option's own work against the forward
    (layer4 features) it is added to, timed interleaved in one run."""
    from depthclip_ros.estimator.depth_head import position_embeddings

    cfg = resolve_scene_presets(
        DepthClipConfig(model=ckpt, device="cpu", scene_bins="auto", cache_dir=tempfile.mkdtemp())
    )
    model = DepthClip(cfg)
    head = model.head
    x = preprocess(model.to_device(np.zeros((416, 544, 3), np.uint8)), cfg)
    with torch.inference_mode():
        feats = model.dense_features(x)

        def project(mode):
            return lambda: position_embeddings(
                feats, mode, model.channel_index, model.attnpool, torch.float32
            )

        forward, classify, subsampled, projected = timed(
            [
                lambda: model.dense_features(x),
                lambda: head.classifier.probabilities(feats),
                project("subsampled"),
                project("projected"),
            ],
            reps,
            warmup=2,
        )
    f = statistics.median(forward)
    rows = []
    for name, t in (
        ("scene classification (scene_bins auto)", classify),
        ("dense features 'subsampled' (paper)", subsampled),
        ("dense features 'projected' (MaskCLIP)", projected),
    ):
        rows.append([name, f"{statistics.median(t) * 1e3:.1f}", f"{statistics.median(t) / f:.3g}"])
    rows.append(["forward (stem..layer4), for reference", f"{f * 1e3:.1f}", "1.000"])
    return ["work per frame", "median (ms)", "/ forward"], rows


def bench_cuda_core(ckpt, reps=50):
    """CUDA, RN50 shapes, fp16, the shipped config: the raw encoder (eager, and replayed as a
    CUDA graph: the limit) and the core host to host, eager against the captured frame."""
    cfg = DepthClipConfig(model=ckpt, device="cuda", cache_dir=tempfile.mkdtemp())
    model = DepthClip(cfg)
    frame = render_scene("corridor")[0]
    batch8 = np.stack([frame] * 8)
    rows = []
    with torch.inference_mode():
        for batch in (1, 8):
            x = preprocess(model.to_device(np.stack([frame] * batch)), cfg)
            for _ in range(3):
                model.dense_features(x)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model.dense_features(x)
            sync = torch.cuda.synchronize
            eager_t, graph_t = timed(
                [lambda x=x: model.dense_features(x), graph.replay], reps, warmup=5, sync=sync
            )
            for name, t in (("encoder, eager", eager_t), ("encoder, CUDA graph", graph_t)):
                rows.append([name, str(batch), *_stats(t, batch)])
    for batch, images in ((1, frame), (8, batch8)):
        eager_t, graph_t, depth_t = timed(
            [
                lambda i=images: model.predict_eager(i),
                lambda i=images: model.predict(i),
                lambda i=images: model.predict(i, arrays=("depth",)),  # a depth-only subscriber
            ],
            reps,
            warmup=5,
        )
        for name, t in (
            ("core predict, eager (host to host)", eager_t),
            ("core predict, captured frame (host to host)", graph_t),
            ("core predict, captured frame, depth alone to the host", depth_t),
        ):
            rows.append([name, str(batch), *_stats(t, batch)])
        in_flight = [frames_in_flight_seconds(model, images, 20) for _ in range(reps // 10)]
        rows.append([IN_FLIGHT_ROW, str(batch), *_stats(in_flight, batch)])
    head = [
        "what (640x480 frames; encoder at 544x416)",
        "batch",
        "p50 (ms)",
        "p95 (ms)",
        "frames/s",
    ]
    return head, rows


IN_FLIGHT_ROW = "core begin_predict, captured frames in flight (each frame's time, every array)"


def frames_in_flight_seconds(model, images, count: int) -> float:
    """Seconds a frame of `count` begun as a node or the bag tool begins them: the next one
    started before the earliest is taken, up to the model's frames in flight."""
    begun = collections.deque()
    started = time.perf_counter()
    for _ in range(count):
        begun.append(model.begin_predict(images))
        if len(begun) >= model.frames_in_flight:
            begun.popleft()()
    while begun:
        begun.popleft()()
    return (time.perf_counter() - started) / count


def _stats(times, batch):
    p50 = statistics.median(times)
    return [f"{p50 * 1e3:.2f}", f"{np.percentile(times, 95) * 1e3:.2f}", f"{batch / p50:.0f}"]


def bench_folding(ckpt, reps=10):
    """The encoder with its BatchNorms folded into the convolutions (as the core runs it)
    against the unfolded one, cpu, 544x416, batch 1, timed interleaved."""
    from depthclip_ros.estimator.clip_loading import load_clip
    from depthclip_ros.estimator.core import dense_encoder

    cfg = DepthClipConfig(model=ckpt, device="cpu", cache_dir=tempfile.mkdtemp())
    loaded = load_clip(ckpt, "cpu", "fp32", "")
    folded = DepthClip(cfg, loaded)
    unfolded = dense_encoder(loaded.clip_model.visual).to(memory_format=torch.channels_last)
    x = preprocess(folded.to_device(np.zeros((416, 544, 3), np.uint8)), cfg)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with_fold, without = timed(
            [lambda: folded.encoder(x), lambda: unfolded(x)], reps, warmup=2
        )
    a, b = statistics.median(with_fold), statistics.median(without)
    return ["encoder (stem..layer4), cpu, 544x416", "median (ms)", "/ unfolded"], [
        ["BatchNorms folded (shipped)", f"{a * 1e3:.1f}", f"{a / b:.3f}"],
        ["unfolded", f"{b * 1e3:.1f}", "1.000"],
    ]


def _corridor_frame(ckpt):
    """(config, model, frame, network input, DepthResult, camera_info) of one 640x480 frame of
    the demo's corridor on CPU."""
    cfg = DepthClipConfig(model=ckpt, device="cpu", cache_dir=tempfile.mkdtemp())
    model = DepthClip(cfg)
    frame = render_scene("corridor")[0]
    x = preprocess(model.to_device(frame), cfg)
    result = model.predict(frame)
    roi = types.SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    info = types.SimpleNamespace(**scene_camera_info_fields(), binning_x=0, binning_y=0, roi=roi)
    return cfg, model, frame, x, result, info


def bench_clearing(ckpt, reps=12):
    """points/clearing per 640x480 frame on CPU against the forward: the clouds with and without
    it (without: what the node computes while nobody subscribes to it), at the shipped stride
    and at the Nav2 example's, timed interleaved in one run."""
    from depthclip_ros.messages.outputs import cloud_outputs

    _, model, frame, x, result, info = _corridor_frame(ckpt)
    strides = (8, 16)
    fns = [lambda: model.dense_features(x)]
    for stride in strides:
        settings = OutputSettings(cloud_stride=stride)
        for clearing in (False, True):
            cloud = functools.partial(cloud_outputs, frame, result, 0, info, settings, clearing)
            fns.append(cloud)
    with torch.inference_mode():
        times = [statistics.median(t) for t in timed(fns, reps, warmup=2)]
    forward, rows = times[0], []
    for i, stride in enumerate(strides):
        without, with_clearing = times[1 + 2 * i : 3 + 2 * i]
        for name, t in (
            (f"points, stride {stride} (points/clearing not subscribed)", without),
            (f"points and points/clearing, stride {stride}", with_clearing),
            (f"points/clearing's cost, stride {stride} (difference)", with_clearing - without),
        ):
            rows.append([name, f"{t * 1e3:.2f}", f"{t / forward:.4f}"])
    rows.append(["forward (stem..layer4), for reference", f"{forward * 1e3:.2f}", "1.0000"])
    return ["work per frame", "median (ms)", "/ forward"], rows


def bench_uncertainty(ckpt, reps=12):
    """depth/std and the cloud filters per 640x480 frame on CPU, against the forward: the
    shipped depth step (depth and std) beside the depth alone, and the cloud with and without
    its filters, timed interleaved in one run."""
    import torch.nn.functional as F

    from depthclip_ros.messages.outputs import cloud_outputs

    cfg, model, frame, x, result, info = _corridor_frame(ckpt)
    probs = torch.from_numpy(result.bin_probs)
    bins = torch.from_numpy(result.bins).float()[None]
    plain = OutputSettings()
    filtered = OutputSettings(cloud_max_std=0.3, cloud_min_range=0.5, cloud_max_range=2.8)

    def depth_alone():  # the depth step without the std: the mean, one channel upsampled
        coarse = (probs * bins[:, :, None, None]).sum(dim=1, keepdim=True)
        F.interpolate(coarse, size=(480, 640), mode="bilinear", align_corners=True)

    with torch.inference_mode():
        forward, with_std, alone, cloud, cloud_filtered = timed(
            [
                lambda: model.dense_features(x),
                lambda: model.depth_from_probabilities(probs, bins, cfg, (480, 640)),
                depth_alone,
                lambda: cloud_outputs(frame, result, 0, info, plain),
                lambda: cloud_outputs(frame, result, 0, info, filtered),
            ],
            reps,
            warmup=2,
        )
    f = statistics.median(forward)
    rows = []
    for name, t in (
        ("depth step with depth/std (shipped)", statistics.median(with_std)),
        ("depth step, depth alone", statistics.median(alone)),
        ("depth/std's cost (difference)", statistics.median(with_std) - statistics.median(alone)),
        ("cloud, stride 8, no filter", statistics.median(cloud)),
        ("cloud, stride 8, std and range filters", statistics.median(cloud_filtered)),
        (
            "the filters' cost (difference)",
            statistics.median(cloud_filtered) - statistics.median(cloud),
        ),
        ("forward (stem..layer4), for reference", f),
    ):
        rows.append([name, f"{t * 1e3:.2f}", f"{t / f:.4f}"])
    return ["work per frame", "median (ms)", "/ forward"], rows


# --quick's camera_info patterns: one paired frame by frame, one at 1 Hz (the other patterns'
# pairing is test_ros_graph's).
QUICK_INFO_PATTERNS = ("after", "1hz")
# The benchmark's sections, in the order a whole run prints them (--only picks some).
SECTIONS = (
    "cpu-variants",
    "sharing",
    "bags",
    "core",
    "node",
    "fairness",
    "cuda",
    "temporal",
    "metric-scale",
    "eval",
)


def sections(text: str) -> tuple:
    """--only's comma-separated sections, each one of SECTIONS."""
    chosen = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"expected some of {', '.join(SECTIONS)}, got {', '.join(unknown) or 'none'}"
        )
    return chosen


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        type=sections,
        metavar="SECTIONS",
        default=SECTIONS,
        help="just these sections, comma-separated: cpu-variants (torch, ONNX Runtime, "
        "OpenVINO; fp32, bf16, int8), sharing (the node on the int8 graph with another "
        "CPU-bound process beside it, each runtime's thread options), bags (depthclip-bag "
        "and depthclip-fleet), core (the core's and the conversions' costs), node (the "
        "node, backends, several cameras, camera_info timing), fairness (three cameras "
        "served under overload), cuda (needs CUDA), temporal (temporal_filter: still, pan, "
        "moving and slow object), metric-scale (metric_scale on synthetic model outputs of "
        "known truth), eval (default: all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short run: core batch 1 without flip only, 3 repetitions of each timing, one "
        "run of the node around the model, fairness at the shipped network input only (two "
        "of its four runs), the bag tool's pair and its outputs once, one fleet set-up, the "
        "CPU variants' node run for one variant of each runtime, sharing's ONNX Runtime "
        "spinning row with the process beside only",
    )
    p.add_argument(
        "--shapes",
        choices=("RN50", "tiny"),
        default="RN50",
        help="the random CLIP's shapes (default RN50: the real model's cost); tiny: every "
        "table's code run at little cost (the benchmark's own test)",
    )
    p.add_argument(
        "--node-seconds", type=float, default=20.0, help="measured window per rate (default 20)"
    )
    p.add_argument(
        "--rates",
        type=rates_hz,
        default=rates_hz("5,15,30"),
        help="camera rates in Hz, comma-separated (default 5,15,30)",
    )
    p.add_argument(
        "--camera-rate",
        type=float,
        default=5.0,
        help="several cameras: each camera's rate in Hz (default 5)",
    )
    p.add_argument(
        "--sharing-rate",
        type=rate_hz,
        help="sharing: the camera's rate in Hz (default 15, 30 where the CPU has AMX: issue "
        "62's rates; faster than the model's forward puts the node behind the camera)",
    )
    p.add_argument(
        "--skip-node",
        action="store_true",
        help="no node process: the node and fairness tables left out, CPU variants and CUDA "
        "without their node columns",
    )
    p.add_argument(
        "--temporal-picture",
        help="temporal_filter: write the still sequence's frame-to-frame change, off above "
        "mixture, to this PNG",
    )
    p.add_argument(
        "--metric-scale-picture",
        help="metric_scale: write the first NYU sample's truth, depth before and after the fit "
        "to a simulated 2D lidar 0.25 m below the camera (anchors drawn), to this PNG",
    )
    p.add_argument(
        "--bag-frames",
        type=frame_pair,
        default=(60, 300),
        help="depthclip-bag table: frames of the short and the long bag (default 60,300)",
    )
    p.add_argument(
        "--fleet-bags",
        type=int,
        default=8,
        help="depthclip-fleet table: bags (default 8) ...",
    )
    p.add_argument(
        "--fleet-frames", type=int, default=30, help="... of this many frames each (default 30)"
    )
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
    return p


def main():
    args = argument_parser().parse_args()
    disk = tempfile.gettempdir()
    with scratch_folder("depthclip-bench-"):
        run(args, disk)


def run(args, disk: str) -> None:
    torch.set_num_threads(usable_cores())  # the package's default: the cores it may use
    ckpt = save_random_checkpoint(
        Path(tempfile.mkdtemp()) / f"{args.shapes.lower()}_random.pt", args.shapes
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"# depthclip_ros benchmark\n\nMachine: {machine()}\n")
    only, nodes = args.only, not args.skip_node
    if "cpu-variants" in only:
        print_cpu_variants(ckpt, args)
    if "sharing" in only and nodes:
        print_sharing(ckpt, args)
    if "bags" in only:
        print_bag_tables(args, disk)
    if "core" in only:
        print_core_tables(ckpt, devices, args)
    if "node" in only and nodes:
        print_node_tables(ckpt, devices, args)
    if "fairness" in only and nodes:
        print_fairness(args)
    if "cuda" in only:
        print_cuda_tables(ckpt, args)
    if "temporal" in only:
        print_temporal(ckpt, args)
    if "metric-scale" in only:
        print_metric_scale(args)
    if "eval" in only:
        print("## Offline evaluation\n")
        print(table(["data", "images/s"], bench_eval(ckpt, args.eval_images)))


def print_cpu_variants(ckpt, args) -> None:
    rates = [r for r in args.rates if r in (15.0, 30.0)] or args.rates[-2:]
    print(
        f"## CPU variants ({args.shapes} shapes, random weights, 640x480, batch 1; node: one "
        f"camera at {', '.join(f'{r:g}' for r in rates)} Hz, {args.node_seconds:g} s each, "
        f"default middleware)\n"
    )
    rows = bench_cpu_variants(
        ckpt,
        rates,
        args.node_seconds,
        3 if args.quick else 20,
        args.dds_profile,
        node=not args.skip_node,
        quick=args.quick,
    )
    print(table(*rows) + "\n")


def print_sharing(ckpt, args) -> None:
    # A camera faster than the int8 model: 15 Hz, 30 where AMX runs int8 (issue 62's rates).
    rate = args.sharing_rate or (30.0 if "amx_int8" in cpu_model_and_flags()[1] else 15.0)
    print(
        f"## Sharing the CPU ({args.shapes} shapes, random weights, the int8 graph; one 640x480 "
        f"camera offered {rate:g} Hz, {args.node_seconds:g} s each, default middleware; beside: "
        f"one Python process that never sleeps)\n"
    )
    rows = bench_sharing(
        ckpt, rate, args.node_seconds, 3 if args.quick else 10, args.quick, args.dds_profile
    )
    print(table(*rows) + "\n")


def print_metric_scale(args) -> None:
    """metric_scale's fit on model outputs made from known truth (no CLIP runs)."""
    samples = scene_samples() + [parallax_sample()]
    found = NYU_SAMPLES.is_dir()
    if found:
        samples = nyu_samples(NYU_SAMPLES, 2 if args.quick else 4) + samples
    print(f"## Metric scale ({MODEL_WORDS}; scale_shift, one frame, cpu)\n")
    if not found:
        print(f"NYU samples not found at {NYU_SAMPLES}: the built-in scenes only.\n")
    print(table(*bench_metric_scale(samples, args.quick)) + "\n")
    print(
        f"## Metric scale over time ({MODEL_WORDS}; scale_shift, a camera's sequence at "
        f"{RATE:g} Hz, the shipped half-life, cpu)\n"
    )
    print(table(*bench_metric_scale_over_time(samples, args.quick)) + "\n")
    print(f"## Metric scale: a still view's clearing ({MODEL_WORDS}; the tracker)\n")
    print(table(*bench_still_view_clearing(samples[:-1])) + "\n")
    print(
        f"## Metric scale on a robot that moves ({MODEL_WORDS}; the built-in room closed "
        f"behind, a 360-degree scan at {SCAN_RATE:g} Hz with its time_increment, odom -> "
        f"base_link at {TF_RATE:g} Hz, scale_shift, one frame each)\n"
    )
    print(table(*bench_metric_scale_moving(args.quick)) + "\n")
    print(
        "## Metric scale: a frame's range data read (each source as sensors send it; "
        "its cost before the fit, on arrival and at the frame)\n"
    )
    print(table(*bench_range_reading()) + "\n")
    if args.metric_scale_picture and found:
        from PIL import Image

        _, truth, k, sets = samples[0]
        picture, scale = before_after_picture(truth, sets["lidar plane 0.25 m below"], k)
        height, width = picture.shape[:2]  # half: enough to see, small in git
        Image.fromarray(picture).resize((width // 2, height // 2)).save(args.metric_scale_picture)
        print(
            f"Picture: {args.metric_scale_picture} (truth | before | after; colour scale 0 to "
            f"{scale:.1f} m; white: the lidar's returns)\n"
        )


def print_temporal(ckpt, args) -> None:
    """temporal_filter on offline_eval.temporal's sequences of the room demo scene and of the
    first NYU sample, where the shared data is here."""
    from depthclip_ros.metrics import gt_from_png
    from offline_eval import temporal
    from offline_eval.data import load_bts, open_dataset

    frames = 8 if args.quick else 20
    config = DepthClipConfig(model=str(ckpt), device="cpu", temperature=1.0)
    model = DepthClip(config)
    images = {"room (demo scene)": render_scene("room")}
    nyu = NYU_SAMPLES
    if nyu.is_dir():
        sample = open_dataset(nyu).samples[0]
        rgb, depth_mm = load_bts(sample)
        images[f"NYU {sample.name}"] = (rgb, gt_from_png(depth_mm))
    print(
        f"## Temporal filter ({args.shapes} shapes, random weights, T 1.0, 640x480 at "
        f"{temporal.FRAME_RATE:g} Hz (slow object: {temporal.SLOW_RATE:g} Hz), {frames} frames, "
        f"half-life 0.5 s, cpu)\n"
    )
    if not nyu.is_dir():
        print(f"NYU samples not found at {nyu}: the demo scene only.\n")
    rows, costs = [], []
    for name, (rgb, truth) in images.items():
        found, depths, seconds = temporal.measure(model, rgb, truth, frames)
        rows += [[name, *row] for row in found]
        costs += seconds["mixture"]
        if args.temporal_picture and name.startswith("room"):
            from PIL import Image

            picture, scale = temporal.side_by_side(depths)
            height, width = picture.shape[:2]  # a quarter: enough to see, small in git
            Image.fromarray(picture).resize((width // 4, height // 4)).save(args.temporal_picture)
            print(f"Picture: {args.temporal_picture} (colour scale 0 to {scale * 1e6:.1f} um)\n")
    print(table(["image", *temporal.HEAD], rows) + "\n")
    costs_ms = np.array(costs) * 1e3
    print(
        f"temporal_filter mixture, every fused frame of the table ({len(costs_ms)}): median "
        f"{np.median(costs_ms):.2f} ms, p95 {np.percentile(costs_ms, 95):.2f} ms, max "
        f"{costs_ms.max():.2f} ms a frame\n"
    )


def print_bag_tables(args, disk: str) -> None:
    tiny = save_random_checkpoint(Path(tempfile.mkdtemp()) / "tiny_random.pt", "tiny")
    short, long = args.bag_frames
    print(
        "## Bag tool (tiny random CLIP, 640x480 rgb8 at 30 Hz with camera_info, MCAP, "
        f"the shipped config, output in {disk}, cpu)\n"
    )
    print(table(*bench_bag_tool(tiny, (short, long), 1 if args.quick else 3)) + "\n")
    print(
        f"## Bag outputs ({long} frames, tiny random CLIP's results from a model stand-in, "
        f"640x480, MCAP, output in {disk}, cpu)\n"
    )
    print(table(*bench_bag_outputs(tiny, long, 1 if args.quick else 5)) + "\n")
    print(
        f"## Fleet ({args.fleet_bags} bags of {args.fleet_frames} frames, tiny random CLIP, "
        "640x480, MCAP and sqlite3, cpu)\n"
    )
    setups = ((2, 1.0),) if args.quick else ((2, 1.0), (1, 2.0))  # workers x CPUs each
    print(table(*bench_fleet(tiny, args.fleet_bags, args.fleet_frames, setups)) + "\n")


def print_core_tables(ckpt, devices, args) -> None:
    print(f"## Core (DepthClip.predict, {args.shapes} shapes, random weights)\n")
    print(table(*bench_core(ckpt, devices, args.quick)) + "\n")
    print(f"## Options beyond the paper (cpu, 544x416, {args.shapes} shapes)\n")
    print(table(*bench_options(ckpt, 3 if args.quick else 12)) + "\n")
    print(f"## BatchNorm folding (cpu, {args.shapes} shapes)\n")
    print(table(*bench_folding(ckpt, 3 if args.quick else 10)) + "\n")
    print(
        f"## depth/std and cloud filters (cpu, 640x480 resized to 544x416, {args.shapes} shapes)\n"
    )
    print(table(*bench_uncertainty(ckpt, 3 if args.quick else 12)) + "\n")
    print(f"## Clearing cloud (cpu, 640x480 resized to 544x416, {args.shapes} shapes)\n")
    print(table(*bench_clearing(ckpt, 3 if args.quick else 12)) + "\n")
    print("## compressedDepth (the demo's scenes, tiny random CLIP's depth, 640x480)\n")
    print(table(*bench_compressed_depth(args.quick)) + "\n")
    print("## Conversions and cloud building per frame\n")
    rows = bench_conversions(ckpt, 20 if args.quick else 200)
    print(table(["step", "median (ms)", "p95 (ms)"], rows) + "\n")


def print_node_tables(ckpt, devices, args) -> None:
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
    onnx_dir = Path(tempfile.mkdtemp())
    onnx_model, onnx_fp16 = str(onnx_dir / "rn50.onnx"), str(onnx_dir / "rn50_fp16.onnx")
    exported = load_config(overrides={"model": ckpt, "device": "cpu"})
    export(exported, onnx_model)
    # Timed only: no reference frames (an fp16 graph's are a second, fp32 export's depth).
    export(exported.replace(precision="fp16"), onnx_fp16, reference=False)
    graphs = {"onnxruntime": onnx_model, "onnxruntime, fp16 graph": onnx_fp16}
    print("## Backends, core (640x480 rgb8, the shipped config, batch 1, cpu)\n")
    print(table(*bench_backend_core(ckpt, graphs, 3 if args.quick else 12)) + "\n")
    onnx_python = ROOT / ".venv-onnx" / "bin" / "python"
    print(
        f"## Backends, node (one camera at {args.rates[-1]:g} Hz, {args.node_seconds:g} s, "
        f"default middleware, cpu)\n"
    )
    rows = bench_backends(
        ckpt,
        onnx_model,
        onnx_python if onnx_python.exists() else None,
        args.rates[-1],
        args.node_seconds,
        args.dds_profile,
    )
    print(table(*rows) + "\n")
    print("## Batched forwards (max_batch; 640x480 frames, the shipped config)\n")
    print(table(*bench_batching(ckpt, devices, 3 if args.quick else 10)) + "\n")
    cameras = ["front", "left", "rear"]
    print(
        f"## Several cameras ({len(cameras)} cameras at {args.camera_rate:g} Hz each, "
        f"{args.node_seconds:g} s, cpu)\n"
    )
    print(
        table(*bench_cameras(ckpt, cameras, args.camera_rate, args.node_seconds, args.dds_profile))
        + "\n"
    )
    # The ROS graph's own costs show with a model that is not the bottleneck.
    tiny = save_random_checkpoint(Path(tempfile.mkdtemp()) / "tiny_random.pt", "tiny")
    print(
        f"## camera_info timing (tiny random CLIP, one 640x480 camera at 30 Hz, "
        f"{args.node_seconds:g} s each, default camera_info_wait, cpu)\n"
    )
    patterns = QUICK_INFO_PATTERNS if args.quick else INFO_PATTERNS
    rows = bench_camera_info(tiny, 30.0, args.node_seconds, args.dds_profile, patterns)
    print(table(*rows) + "\n")
    runs = 1 if args.quick else 3
    print(
        f"## Node around the model (tiny random CLIP, one 640x480 camera offered 100 Hz, "
        f"{runs} run(s) of {args.node_seconds:g} s, default middleware, cpu)\n"
    )
    print(table(*bench_node(tiny, [100.0] * runs, args.node_seconds, args.dds_profile)) + "\n")
    setups = EXECUTOR_SETUPS[:1] if args.quick else EXECUTOR_SETUPS
    print(
        f"## Executors (tiny random CLIP, 640x480 cameras, {runs} run(s) of "
        f"{args.node_seconds:g} s each, the two executors interleaved, default middleware, cpu)\n"
    )
    rows = bench_executors(tiny, args.node_seconds, runs, setups, args.dds_profile)
    print(table(*rows) + "\n")
    print(
        f"## Every output (tiny random CLIP, one 640x480 camera at 15 Hz, every output "
        f"subscribed, {runs} run(s) of {args.node_seconds:g} s, default middleware, cpu)\n"
    )
    print(table(*bench_every_output(tiny, 15.0, args.node_seconds, runs, args.dds_profile)))
    print()
    print(
        f"## compressedDepth in the node (tiny random CLIP, one 640x480 camera at 30 Hz, "
        f"{args.node_seconds:g} s each, default middleware, cpu)\n"
    )
    rows = bench_compressed_depth_node(tiny, 30.0, args.node_seconds, args.dds_profile)
    print(table(*rows) + "\n")


def print_fairness(args) -> None:
    tiny = save_random_checkpoint(Path(tempfile.mkdtemp()) / "tiny_random.pt", "tiny")
    cameras = ["front", "left", "rear"]
    print(
        f"## Fair service under overload (tiny random CLIP, {len(cameras)} 640x480 cameras at "
        f"30 Hz, {args.node_seconds:g} s each, cpu)\n"
    )
    sizes = FAIRNESS_INPUTS[:1] if args.quick else FAIRNESS_INPUTS
    rows = bench_fairness(
        tiny, cameras, 30.0, args.node_seconds, sizes, args.dds_profile, quick=args.quick
    )
    print(table(*rows) + "\n")


def print_cuda_tables(ckpt, args) -> None:
    if not torch.cuda.is_available():
        print("No CUDA device here: the CUDA tables are left out.\n")
        return
    gpu = torch.cuda.get_device_name(0)
    print(f"## CUDA core ({gpu}, RN50 shapes, fp16)\n")
    print(table(*bench_cuda_core(ckpt)) + "\n")
    if not args.skip_node:
        print(f"## CUDA node ({gpu}, {args.node_seconds:g} s each, default middleware)\n")
        print(table(*bench_cuda_node(ckpt, args.node_seconds, args.dds_profile)) + "\n")


if __name__ == "__main__":
    main()
