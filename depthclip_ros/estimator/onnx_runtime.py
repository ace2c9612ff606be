"""DepthCLIP on ONNX Runtime: runs a graph written by depthclip-export, without torch, on CPU,
CUDA or TensorRT (what it shares with OpenVINO: exported_graph).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import ImageSizeError, ModelLoadError
from .exported_graph import ExportedGraph
from .file_identity import sha256_remembered
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


# What ONNX Runtime's TensorRT provider says when a cached engine was built by another
# TensorRT, ONNX Runtime or GPU: it does not rebuild by itself.
STALE_ENGINE = "deserialize engine"


def tensorrt_cache_folder(
    cache_root: Path, model_sha256: str, precision: str, runtime: str = ""
) -> Path:
    """The engine cache of one exported file, precision and runtime (ONNX Runtime and TensorRT
    versions): a re-export with other weights (at the same path), or an upgrade, never finds
    another's engines."""
    return Path(cache_root) / "-".join(filter(None, (model_sha256[:16], precision, runtime)))


def tensorrt_runtime(ort) -> str:
    """'ort<version>-trt<version>' (the TensorRT version where its Python package says it)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        trt = version("tensorrt")
    except (ImportError, PackageNotFoundError, ValueError):
        trt = "unknown"
    return f"ort{ort.__version__}-trt{trt}"


def providers_for(
    device: str,
    precision: str,
    tensorrt_cache: Path,
    available,
    profile: dict | None = None,
    choice: str = "auto",
) -> list:
    """The providers tried, best first: cpu -> CPU; cuda[:N] -> TensorRT (when installed and
    `choice` is not cuda), CUDA, then CPU as the last fallback. An fp16 graph lets TensorRT build
    fp16 engines; `profile`: tensorrt_profile's shapes; `tensorrt_cache`: the file's own
    tensorrt_cache_folder (its timing cache too). ModelLoadError for `choice` tensorrt without
    TensorRT."""
    if device == "cpu":
        return [(CPU, {})]
    if choice == "tensorrt" and TENSORRT not in available:
        raise ModelLoadError(
            f"onnxruntime_providers tensorrt: this onnxruntime has no TensorRT provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu with TensorRT, or "
            f"set onnxruntime_providers auto or cuda"
        )
    index = device.split(":", 1)[1] if ":" in device else "0"
    chain = []
    if TENSORRT in available and choice != "cuda":
        chain.append(
            (
                TENSORRT,
                {
                    "device_id": index,
                    "trt_fp16_enable": str(precision == "fp16"),
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(tensorrt_cache),
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": str(tensorrt_cache),
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
            root = root.expanduser()
            digest = sha256_remembered(self.path, root)  # not the whole file at every start
            cache = tensorrt_cache_folder(root, digest, self.precision, tensorrt_runtime(ort))
            cache.mkdir(parents=True, exist_ok=True)
            fixed = self.image_size is not None
            size = self.image_size or network_image_size(config)
            profile = tensorrt_profile(self.embed_dim, len(config.depth_bins), size, fixed)
        choice = config.onnxruntime_providers
        chain = providers_for(device, self.precision, cache, available, profile, choice)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: fallbacks are reported by us, in one line
        self.session = self._gpu_session(ort, options, chain, cache, choice)
        self.provider = self.session.get_providers()[0]
        if self.provider != CPU:
            # ONNX Runtime would otherwise, on a provider failure at run time, re-create the
            # session on CPU without its options and say so only on its own log.
            self.session.disable_fallback()
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

    def _gpu_session(self, ort, options, chain, cache, choice):
        """The session of `chain`; where TensorRT cannot take the graph: a stale engine cache is
        cleared and rebuilt once, then (choice auto) the chain without TensorRT, with one
        warning. ONNX Runtime raises EPFail there, not a RuntimeError, so its own fallback
        does not apply."""
        try:
            return self._session(ort, options, chain)
        except ModelLoadError as exc:
            if chain[0][0] != TENSORRT:
                raise
            failure = exc
        if STALE_ENGINE in str(failure) and cache is not None:
            log.warning(
                "TensorRT's cached engine in %s cannot be read (built by another TensorRT, "
                "ONNX Runtime or GPU): building it again",
                cache,
            )
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True, exist_ok=True)
            try:
                return self._session(ort, options, chain)
            except ModelLoadError as exc:
                failure = exc
        if choice == "tensorrt":
            raise failure
        reason = str(failure).split(": ", 1)[-1].strip().splitlines()[0][:200]
        log.warning(
            "TensorRT cannot take %s (%s): running on CUDA, device_id %s; "
            "onnxruntime_providers: cuda skips TensorRT and this warning",
            self.path.name,
            reason,
            chain[0][1]["device_id"],
        )
        return self._session(ort, options, chain[1:])

    def _run(self, fields: tuple, feeds: dict) -> list:
        images = feeds["images"]
        if self.provider == TENSORRT:  # within the engine's profile, or one line
            batch, height, width = images.shape[:3]
            if height > TENSORRT_MAX_IMAGE[0] or width > TENSORRT_MAX_IMAGE[1]:
                raise ImageSizeError(
                    f"a {width}x{height} image is larger than TensorRT's profile "
                    f"({TENSORRT_MAX_IMAGE[1]}x{TENSORRT_MAX_IMAGE[0]}); use "
                    f"onnxruntime_providers cuda for such images"
                )
            if batch > TENSORRT_MAX_BATCH:  # split: the profile's largest batch at a time
                parts = [
                    self.session.run(
                        list(fields), {**feeds, "images": images[i : i + TENSORRT_MAX_BATCH]}
                    )
                    for i in range(0, batch, TENSORRT_MAX_BATCH)
                ]
                return [np.concatenate(arrays) for arrays in zip(*parts)]
        return self.session.run(list(fields), feeds)
