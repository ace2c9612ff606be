"""int8 graphs (depthclip-export --precision int8): the fp32 graph with its image trunk quantised
by ONNX Runtime's static quantisation, calibrated on camera frames, and its depth measured
against the fp32 graph's on frames held out of the calibration.

The choices, each measured (docs/onnx.md, "int8 graphs"): QDQ format (ONNX Runtime and OpenVINO
both run it as int8 kernels); activations uint8 with a zero point, weights int8 symmetric per
output channel (x86's u8s8 kernels: with int8 activations ONNX Runtime left 16 of RN50's 55
convolutions in float and ran no faster than fp32) in 7 bits (-64..64: ONNX Runtime's
reduce_range), so that x86 CPUs without VNNI, which add pairs of u8 x s8 products in saturating
16 bits, compute them exactly (with 8-bit weights their depth differed from the same graph's on
VNNI, Arm or exact kernels); MinMax calibration (Percentile and Entropy, and NNCF's quantiser,
gave the same layer4 error); only the trunk's nodes (the first convolution to layer4's last
ReLU: convolutions, residual adds, average pools) quantised, so preprocessing, the head (text
features, softmax over the bins, depth sum, std) and the upsampling stay float.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from ..config.parameters import DepthClipConfig
from ..errors import ConfigError, ModelLoadError
from ..estimator.cpu_features import cpu_description
from ..estimator.text_cache import exported_text_dir
from ..files import atomic_write
from ..graph_runtimes.exported_graph import (
    INT8_AGREEMENT,
    INT8_FIGURES,
    INT8_HELD_OUT,
    INT8_MEASURED_WITH,
    INT8_WEIGHT_BITS,
    graph_image_size,
)
from ..graph_runtimes.onnx_runtime import OnnxDepthClip
from ..metrics import depth_agreement
from .reference import fit_frames, graph_depth, store_reference

HELD_OUT_SHARE = 4  # the last quarter of the frames measures the difference instead
WEIGHT_BITS = 7  # |weight| <= 64: 2 x 255 x 64 fits a 16-bit sum (x86 without VNNI)
QUANTISATION = "onnxruntime static QDQ: trunk u8 activations (MinMax), s8 per-channel weights"


def split_frames(frames: list) -> tuple:
    """(calibration frames, held-out frames): the last quarter held out (at least one), and
    from four frames on the frame before it dropped, so that no held-out frame is the neighbour
    of a calibration frame (a bag's or a burst's next frame is nearly the same picture);
    ConfigError with fewer than two frames."""
    if len(frames) < 2:
        raise ConfigError(
            "calibration",
            f"{len(frames)} frame(s)",
            "int8 needs at least 2 frames: some to calibrate, one held out to measure the "
            "depth difference (more frames, a steadier calibration)",
        )
    held = max(1, len(frames) // HELD_OUT_SHARE)
    gap = 1 if len(frames) >= 4 else 0
    return list(frames[: len(frames) - held - gap]), list(frames[len(frames) - held :])


def trunk_nodes(model) -> list:
    """The names of the nodes on a path from the graph's first convolution to its last ReLU
    (CLIP ResNet's stem to layer4's output): what int8 quantises."""
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    consumers = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    first = next(n for n in nodes if n.op_type == "Conv")
    last = [n for n in nodes if n.op_type == "Relu"][-1]

    def reach(start, step):
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node.name not in seen:
                seen.add(node.name)
                stack.extend(step(node))
        return seen

    after = reach(first, lambda n: [c for out in n.output for c in consumers.get(out, [])])
    before = reach(last, lambda n: [producer[i] for i in n.input if i in producer])
    return sorted(after & before)


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over frames: one frame a run."""

    def __init__(self, frames, text, bins, temperature):
        self._feeds = iter(
            {
                "images": frame[None],
                "text_features": text,
                "bins": bins,
                "temperature": np.asarray(temperature, np.float32),
            }
            for frame in frames
        )

    def get_next(self):
        return next(self._feeds, None)


def export_int8(
    config: DepthClipConfig,
    out: Path,
    frames: list,
    source: str,
    image_size=None,
    prompt_configs=(),
    weight_bits: int = WEIGHT_BITS,
    fp32_graph=None,
) -> dict:
    """Write the int8 graph of `config` to `out` (text features and reference frames beside it,
    as `export`), calibrated on `frames` (uint8 RGB, from `source`, its description); returns
    its metadata, with the depth difference from the fp32 graph on the held-out frames.
    `weight_bits` 8: the full int8 range, as before 7 bits (exact only with VNNI, AMX or Arm;
    the benchmark's and the tests' comparison). `fp32_graph`: quantise that fp32 graph (written
    by depthclip-export, its text features beside it) instead of tracing `config`'s model: no
    torch needed, so a robot calibrates on its own camera and measures on its own CPU."""
    if weight_bits not in (7, 8):
        raise ConfigError("weight_bits", weight_bits, "must be 7 or 8")
    try:
        import onnx
        from onnxruntime.quantization import quantize_static  # noqa: F401 (what it needs)
    except ImportError as exc:
        raise ModelLoadError(
            f"int8 export needs onnx and onnxruntime's quantisation tools ({exc}); "
            f"pip install onnx onnxruntime"
        ) from None
    calibration, held_out = split_frames(frames)
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = _fp32_graph(config, Path(tmp) / out.name, image_size, prompt_configs, fp32_graph)
        meta = dict(fp32.metadata)
        size = graph_image_size(meta)
        calibration, held_out = fit_frames(calibration, size), fit_frames(held_out, size)
        text_dir = exported_text_dir(fp32.path)
        int8_path = Path(tmp) / f"int8_{out.name}"
        _quantize(fp32, int8_path, calibration, config.temperature, weight_bits)
        int8 = OnnxDepthClip(
            config.replace(
                model=str(int8_path),
                backend="onnxruntime",
                device="cpu",
                precision="auto",
                cache_dir=str(text_dir),
            )
        )
        agreement = depth_agreement(
            np.concatenate([d.ravel() for d in graph_depth(fp32, held_out)]),
            np.concatenate([d.ravel() for d in graph_depth(int8, held_out)]),
        )
        meta = {
            **meta,
            "precision": "int8",
            "quantization": f"{QUANTISATION} in {weight_bits} bits",
            INT8_WEIGHT_BITS: str(weight_bits),
            INT8_MEASURED_WITH: f"{int8.runtime}, {cpu_description()}",
            "int8_calibration": f"{source}: {len(calibration)} frames",
            INT8_HELD_OUT: str(len(held_out)),
            INT8_AGREEMENT: f"{agreement['delta']:.6f}",
            **{key: f"{agreement[words]:.6g}" for key, words in INT8_FIGURES.items()},
        }
        model = onnx.load(str(int8_path))
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, meta)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda f: f.write(model.SerializeToString()))
        target = exported_text_dir(out)
        target.mkdir(parents=True, exist_ok=True)
        for item in text_dir.iterdir():
            (target / item.name).write_bytes(item.read_bytes())
        store_reference(out, fp32, held_out, size)
    return meta


def _fp32_graph(config, traced: Path, image_size, prompt_configs, fp32_graph) -> OnnxDepthClip:
    """The fp32 graph to quantise, on ONNX Runtime: `fp32_graph` where given, else `config`'s
    model traced to `traced` (needs torch). ConfigError for a graph that is not fp32."""
    if fp32_graph is None:
        from .graph import export  # torch: the model traced into its fp32 graph first

        fp32_path = traced
        export(config.replace(precision="fp32"), fp32_path, image_size, prompt_configs, False)
    else:
        fp32_path = Path(fp32_graph).expanduser()
    run_config = config.replace(
        model=str(fp32_path), backend="onnxruntime", device="cpu", precision="auto"
    )
    fp32 = OnnxDepthClip(run_config)
    if fp32.graph_precision != "fp32":
        raise ConfigError(
            "from_onnx",
            str(fp32_path),
            f"is a {fp32.graph_precision} graph; int8 quantises an fp32 graph "
            f"(depthclip-export --precision fp32)",
        )
    return fp32


def _quantize(fp32: OnnxDepthClip, int8_path: Path, calibration, temperature, weight_bits):
    """ONNX Runtime's static QDQ quantisation of the fp32 graph's trunk to `int8_path`,
    calibrated (MinMax) on `calibration`'s frames."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    head = fp32.head
    root = logging.getLogger()
    level = root.level  # the quantiser advises pre-processing on the root logger, every run
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(fp32.path),
            str(int8_path),
            _Feeds(calibration, head.text, head.bins, temperature),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=weight_bits == 7,  # ONNX Runtime's 7-bit weights
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_quantize=trunk_nodes(onnx.load(str(fp32.path), load_external_data=False)),
        )
    finally:
        root.setLevel(level)
