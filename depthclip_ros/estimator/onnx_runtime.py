"""DepthCLIP on ONNX Runtime: runs a graph written by depthclip-export, without torch.

The graph is the core's image path (uint8 images -> depth); text features, bins and temperature
are its inputs, so those change without re-export; it takes images of any size unless exported
for one. What the graph fixed at export (preprocessing, network input, normalisation, dense
features, flip, precision) is in its metadata and a config asking for something else is refused
with the reason. Text features come from the cache (the folder depthclip-export filled beside
the model, then cache_dir): prompts never exported need the torch text encoder and are refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..config.parameters import IMAGE_PATH_FIELDS, DepthClipConfig
from ..errors import ConfigError, ImageSizeError, ModelLoadError
from .file_identity import sha256_file
from .head import Head
from .result import (
    OUTPUT_FIELDS,
    DepthResult,
    as_image_batch,
    fetched_fields,
    input_region,
    network_image_size,
)
from .text_cache import (
    FLOAT16,
    FLOAT32,
    cache_path,
    default_cache_dir,
    exported_text_dir,
    load_cached,
)

log = logging.getLogger("depthclip_ros")

EXPORT_FORMAT = "1"
GRAPH_INPUTS = ("images", "text_features", "bins", "temperature")
GRAPH_OUTPUTS = OUTPUT_FIELDS
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


ANY_SIZE = "any"  # image_height / image_width of a graph that takes every size
GRAPH_PRECISIONS = ("fp32", "fp16")  # of the image path; inputs and outputs stay float32


def graph_metadata(
    cfg: DepthClipConfig, precision, identity, image_size, embed_dim, opset, exporter
):
    """The metadata depthclip-export writes into the file (ONNX metadata holds strings);
    `image_size` None: a graph for every image size."""
    meta = {name: str(getattr(cfg, name)) for name in IMAGE_PATH_FIELDS}
    meta.update(
        depthclip_export_format=EXPORT_FORMAT,
        precision=precision,
        model_identity=identity,
        checkpoint_sha256=identity.rsplit("@sha256:", 1)[-1],
        image_height=ANY_SIZE if image_size is None else str(image_size[0]),
        image_width=ANY_SIZE if image_size is None else str(image_size[1]),
        embed_dim=str(embed_dim),
        opset=str(opset),
        exporter=exporter,
    )
    return meta


def graph_precision(meta: dict) -> str:
    """fp32 or fp16; files exported before fp16 graphs existed say nothing and are fp32."""
    return meta.get("precision", "fp32")


def text_dtype(precision: str, head_precision: str) -> str:
    """The cache key's precision of the text features a graph's head takes: fp16 only for the
    official fp16 head (as DepthClip.head_dtype)."""
    return FLOAT16 if precision == "fp16" and head_precision == "model" else FLOAT32


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


class OnnxDepthClip:
    """The DepthClip interface (predict, update_config, warm_up, config, device) on ONNX
    Runtime. Thread-safe for one predicting thread plus config updates."""

    def __init__(self, config: DepthClipConfig):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelLoadError(
                f"backend onnxruntime needs the onnxruntime package ({exc}); "
                f"pip install onnxruntime (or onnxruntime-gpu)"
            ) from None
        self.path = Path(config.model).expanduser()
        if not self.path.is_file():
            raise ModelLoadError(f"exported model {self.path.resolve()} does not exist")
        # The metadata first (a session without optimisations, on CPU): the graph's precision
        # chooses the GPU providers' options, and a file that is not ours fails before that.
        self.metadata = self._read_metadata(ort)
        self.precision = self._check_precision(config.precision)
        meta = self.metadata
        # None: any size (the resize is in the graph); else the one size the graph takes.
        self.image_size = (
            None
            if meta["image_height"] == ANY_SIZE
            else (int(meta["image_height"]), int(meta["image_width"]))
        )
        self.embed_dim = int(meta["embed_dim"])
        self.session = self._session(ort, config)
        self.model_identity = meta["model_identity"]
        self.dtype = "float16" if self.precision == "fp16" else "float32"
        self.runtime = f"onnxruntime {ort.__version__} {self.provider}"
        self.cache_dirs = [
            exported_text_dir(self.path),
            Path(config.cache_dir or default_cache_dir()).expanduser(),
        ]
        self._checked = None  # (config, its Head) of the last config check_config accepted
        self._head = self._make_head(config)

    def _open(self, ort, options, chain):
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

    def _read_metadata(self, ort) -> dict:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = self._open(ort, options, [(CPU, {})])
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("depthclip_export_format") != EXPORT_FORMAT:
            raise ModelLoadError(
                f"{self.path} was not written by depthclip-export (format "
                f"{EXPORT_FORMAT}): its metadata has no depthclip_export_format "
                f"'{EXPORT_FORMAT}'; export the model with depthclip-export"
            )
        missing = [n for n in GRAPH_INPUTS if n not in {i.name for i in session.get_inputs()}]
        if missing:
            raise ModelLoadError(f"{self.path} lacks the graph inputs {', '.join(missing)}")
        outputs = {o.name for o in session.get_outputs()}
        if "depth_std" not in outputs:
            raise ModelLoadError(
                f"{self.path} was exported before depth/std existed (no depth_std output); "
                f"export it again with depthclip-export"
            )
        return meta

    def _check_precision(self, requested: str) -> str:
        """The graph's precision; `precision` auto takes it, fp32 / fp16 must match it."""
        precision = graph_precision(self.metadata)
        if requested not in ("auto", precision):
            raise ConfigError(
                "precision",
                requested,
                f"the exported graph {self.path.name} is {precision}; export it with "
                f"depthclip-export --precision {requested}, or set precision auto",
            )
        return precision

    def _session(self, ort, config):
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
        session = self._open(ort, options, chain)
        self.provider = session.get_providers()[0]
        self.device = "cpu" if self.provider == CPU else device
        # What the CPU provider uses: the set number, else (0) one thread per core.
        self.cpu_threads = options.intra_op_num_threads or (os.cpu_count() or 1)
        if device != "cpu" and self.provider == CPU:
            log.warning(
                "device '%s' asked for, but onnxruntime has no GPU provider here (available: "
                "%s): running on CPU",
                device,
                ", ".join(available),
            )
        return session

    @property
    def head(self) -> Head:
        """The config in use and its text features and bins (replaced whole by update_config)."""
        return self._head

    @property
    def config(self) -> DepthClipConfig:
        return self._head.config

    def _make_head(self, cfg: DepthClipConfig) -> Head:
        """The Head of `cfg`, or ConfigError saying why the exported graph cannot run it."""
        if cfg.scene_bins != "off":
            raise ConfigError(
                "scene_bins", cfg.scene_bins, "needs the torch backend (not in the exported graph)"
            )
        for name in IMAGE_PATH_FIELDS:
            if str(getattr(cfg, name)) != self.metadata[name]:
                raise ConfigError(
                    name,
                    getattr(cfg, name),
                    f"the exported graph {self.path.name} was built with {name} "
                    f"{self.metadata[name]}; export again with this value, or use the torch "
                    f"backend",
                )
        tokens = len(cfg.prompt_sets[0])
        dtype = text_dtype(self.precision, cfg.head_precision)
        for folder in self.cache_dirs:
            path = cache_path(folder, self.model_identity, cfg.prompt_sets, self.embed_dim, dtype)
            text = load_cached(path, self.embed_dim, tokens)
            if text is not None:
                break
        else:
            raise ConfigError(
                "depth_tokens",
                list(cfg.depth_tokens),
                "these prompts' text features were not exported with the model (they need the "
                "torch text encoder): run depthclip-export with these parameters, or use the "
                "torch backend",
            )
        return Head(cfg, text, np.asarray(cfg.depth_bins, np.float32))

    def check_config(self, cfg: DepthClipConfig) -> None:
        """ConfigError when the exported graph cannot run `cfg` (its text features loaded: what
        update_config then uses)."""
        self.config.check_read_only(cfg)
        self._checked = (cfg, self._make_head(cfg))

    def update_config(self, cfg: DepthClipConfig) -> None:
        """Apply a new config from the next `predict` on, if the exported graph can run it."""
        checked = self._checked
        if checked is None or checked[0] is not cfg:
            self.check_config(cfg)
            checked = self._checked
        self._head = checked[1]

    def warm_up(self, image_size=None) -> None:
        """Predict once on a blank frame of `image_size` (a fixed-size graph: its size)."""
        size = self.image_size or image_size or network_image_size(self.config)
        self.predict(np.zeros((*size, 3), np.uint8), arrays=())

    def predict(self, images, scenes=None, arrays=None) -> DepthResult:
        """Depth of uint8 RGB images (H, W, 3) or (B, H, W, 3): any size, or the one size a
        graph exported with --image-size takes. `arrays`: the DepthResult arrays to fetch
        (None: all; the depth always)."""
        head = self._head  # one frame, one config
        cfg, bins = head.config, head.bins
        imgs = as_image_batch(images)
        height, width = imgs.shape[1:3]
        if self.image_size is not None and (height, width) != self.image_size:
            raise ImageSizeError(
                f"the exported graph {self.path.name} takes {self.image_size[1]}x"
                f"{self.image_size[0]} images, got {width}x{height}; export it again without "
                f"--image-size (a graph for every size)"
            )
        fields = fetched_fields(arrays)
        outputs = self.session.run(
            list(fields),
            {
                "images": imgs,
                "text_features": head.text,
                "bins": bins,
                "temperature": np.asarray(cfg.temperature, np.float32),
            },
        )
        return DepthResult.from_outputs(
            outputs, bins=bins, region=input_region(height, width, cfg), fields=fields
        )
