"""DepthCLIP on ONNX Runtime: runs a graph written by depthclip-export, without torch, on CPU,
CUDA or TensorRT (what it shares with OpenVINO: exported_graph).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ModelLoadError
from .exported_graph import ExportedGraph
from .file_identity import sha256_file
from .result import network_image_size
from .text_cache import default_cache_dir

log = logging.getLogger("depthclip_ros")

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


# TensorRT's optimisation profile: the shapes one engine takes, so that neither a camera's size
# nor a batch up to the node's largest builds another engine.
TENSORRT_MAX_BATCH = 64  # the node's max_batch at most
TENSORRT_MAX_IMAGE = (2160, 3840)  # (height, width): 4K
TENSORRT_MIN_IMAGE = (32, 32)
TENSORRT_MAX_BINS = 64


def tensorrt_profile(embed_dim: int, bins: int, image_size: tuple, fixed_size: bool) -> dict:
    """trt_profile_{min,opt,max}_shapes: images (B, H, W, 3) from one small image to
    TENSORRT_MAX_BATCH 4K images (or the one size a fixed-size graph takes), optimised for one
    image of `image_size`; text features and bins for 2 to TENSORRT_MAX_BINS bins."""
    height, width = image_size
    low = image_size if fixed_size else TENSORRT_MIN_IMAGE
    high = image_size if fixed_size else TENSORRT_MAX_IMAGE
    shapes = {
        "min": (1, *low, 2),
        "opt": (1, height, width, bins),
        "max": (TENSORRT_MAX_BATCH, *high, TENSORRT_MAX_BINS),
    }
    return {
        f"trt_profile_{name}_shapes": (
            f"images:{b}x{h}x{w}x3,text_features:{embed_dim}x{k},bins:{k}"
        )
        for name, (b, h, w, k) in shapes.items()
    }


def tensorrt_cache_folder(cache_root: Path, model_sha256: str, precision: str) -> Path:
    """The engine cache of one exported file and precision: a re-export with other weights (at
    the same path) never finds another file's engines."""
    return Path(cache_root) / f"{model_sha256[:16]}-{precision}"


def providers_for(
    device: str, precision: str, tensorrt_cache: Path, available, profile: dict | None = None
) -> list:
    """The providers tried, best first: cpu -> CPU; cuda[:N] -> TensorRT (when installed), CUDA,
    then CPU as the last fallback. An fp16 graph lets TensorRT build fp16 engines; `profile`:
    tensorrt_profile's shapes; `tensorrt_cache`: the file's own tensorrt_cache_folder."""
    if device == "cpu":
        return [(CPU, {})]
    index = device.split(":", 1)[1] if ":" in device else "0"
    chain = []
    if TENSORRT in available:
        chain.append(
            (
                TENSORRT,
                {
                    "device_id": index,
                    "trt_fp16_enable": str(precision == "fp16"),
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(tensorrt_cache),
                    **(profile or {}),
                },
            )
        )
    if CUDA in available:
        chain.append((CUDA, {"device_id": index}))
    return chain + [(CPU, {})]


class OnnxDepthClip(ExportedGraph):
    """An exported graph on ONNX Runtime (ExportedGraph's interface)."""

    def _import(self):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelLoadError(
                f"backend onnxruntime needs the onnxruntime package ({exc}); "
                f"pip install onnxruntime (or onnxruntime-gpu)"
            ) from None
        return ort

    def _session(self, ort, options, chain):
        try:
            return ort.InferenceSession(
                str(self.path),
                sess_options=options,
                providers=[name for name, _ in chain],
                provider_options=[opts for _, opts in chain],
            )
        except Exception as exc:  # not an ONNX file, or one onnxruntime cannot load
            raise ModelLoadError(
                f"onnxruntime cannot load {self.path}: {type(exc).__name__}: {exc}"
            ) from None

    def _read_graph(self) -> tuple:
        # A session without optimisations, on CPU: the graph's precision chooses the GPU
        # providers' options, and a file that is not ours fails before that.
        ort = self._import()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = self._session(ort, options, [(CPU, {})])
        return (
            dict(session.get_modelmeta().custom_metadata_map),
            [i.name for i in session.get_inputs()],
            [o.name for o in session.get_outputs()],
        )

    def _open(self, config) -> None:
        ort = self._import()
        available = ort.get_available_providers()
        device = config.device
        if device == "auto":
            device = "cuda" if CUDA in available else "cpu"
            if device == "cpu":  # a GPU robot with the CPU-only onnxruntime installed
                log.warning(
                    "device 'auto': onnxruntime has no GPU provider here (available: %s): "
                    "running on CPU; install onnxruntime-gpu for CUDA or TensorRT",
                    ", ".join(available),
                )
        cache, profile = None, None
        if device != "cpu" and TENSORRT in available:
            root = Path(config.tensorrt_cache_dir or default_cache_dir() / "tensorrt")
            cache = tensorrt_cache_folder(
                root.expanduser(), sha256_file(self.path), self.precision
            )
            cache.mkdir(parents=True, exist_ok=True)
            fixed = self.image_size is not None
            size = self.image_size or network_image_size(config)
            profile = tensorrt_profile(self.embed_dim, len(config.depth_bins), size, fixed)
        chain = providers_for(device, self.precision, cache, available, profile)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: fallbacks are reported by us, in one line
        self.session = self._session(ort, options, chain)
        self.provider = self.session.get_providers()[0]
        self.device = "cpu" if self.provider == CPU else device
        self.runtime = f"onnxruntime {ort.__version__} {self.provider}"
        # What the CPU provider uses: the set number, else (0) one thread per core.
        self.cpu_threads = options.intra_op_num_threads or (os.cpu_count() or 1)
        if device != "cpu" and self.provider == CPU:
            log.warning(
                "device '%s' asked for, but onnxruntime has no GPU provider here (available: "
                "%s): running on CPU",
                device,
                ", ".join(available),
            )

    def _run(self, fields: tuple, feeds: dict) -> list:
        return self.session.run(list(fields), feeds)
