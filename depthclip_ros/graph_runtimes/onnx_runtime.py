"""DepthCLIP on ONNX Runtime: runs a graph written by depthclip-export, without torch, on CPU,
CUDA or TensorRT (what it shares with OpenVINO: exported_graph).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..estimator.cpu_features import cpu_description
from ..estimator.file_identity import sha256_remembered
from ..estimator.result import network_image_size
from ..estimator.text_cache import default_cache_dir
from .exported_graph import ExportedGraph

log = logging.getLogger("depthclip_ros")

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


# TensorRT's engines: one per image size in use (a camera's, known from its camera_info, or a
# bag's frames), for batches up to the node's max_batch; each optimisation profile spans those
# batches only, so an engine is built in the memory and time its frames need (not 64 4K images).
TENSORRT_MAX_BATCH = 64  # the node's max_batch at most; larger batches run in parts
TENSORRT_MAX_BINS = 64
TENSORRT_SIZES_KEPT = 4  # image sizes whose engines stay loaded (least recently used dropped)


def tensorrt_profile(embed_dim: int, bins: int, image_size: tuple, max_batch: int) -> dict:
    """trt_profile_{min,opt,max}_shapes of one engine: images (B, H, W, 3) of one size, B from 1
    to `max_batch`, optimised for one image; text features and bins for 2 to TENSORRT_MAX_BINS
    bins (a run-time change of bins needs no other engine)."""
    height, width = image_size
    shapes = {
        "min": (1, 2),
        "opt": (1, bins),
        "max": (max_batch, TENSORRT_MAX_BINS),
    }
    return {
        f"trt_profile_{name}_shapes": (
            f"images:{b}x{height}x{width}x3,text_features:{embed_dim}x{k},bins:{k}"
        )
        for name, (b, k) in shapes.items()
    }


def tensorrt_engine_folder(cache: Path, image_size: tuple, max_batch: int) -> Path:
    """Where the engine of one profile is cached, inside the file's tensorrt_cache_folder: ONNX
    Runtime names engines by the graph alone, so engines of two profiles must not share one."""
    height, width = image_size
    return Path(cache) / f"{width}x{height}-batch{max_batch}"


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
    device: str, precision: str, tensorrt_cache: Path, available, choice: str = "auto"
) -> list:
    """The providers tried, best first: cpu -> CPU; cuda[:N] -> TensorRT (when installed and
    `choice` is not cuda), CUDA, then CPU as the last fallback. An fp16 graph lets TensorRT build
    fp16 engines; `tensorrt_cache`: the file's own tensorrt_cache_folder (its engines' folders
    and their shared timing cache: with_profile adds an engine's). ModelLoadError for `choice`
    tensorrt without TensorRT."""
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
                },
            )
        )
    if CUDA in available:
        chain.append((CUDA, {"device_id": index}))
    return chain + [(CPU, {})]


def with_profile(chain: list, profile: dict, engine_folder: Path) -> list:
    """`chain` with its TensorRT provider building the engine of `profile` in `engine_folder`."""
    (name, options), rest = chain[0], chain[1:]
    return [(name, {**options, **profile, "trt_engine_cache_path": str(engine_folder)}), *rest]


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
        cache = None
        if device != "cpu" and TENSORRT in available:
            root = Path(config.tensorrt_cache_dir or default_cache_dir() / "tensorrt")
            root = root.expanduser()
            digest = sha256_remembered(self.path, root)  # not the whole file at every start
            cache = tensorrt_cache_folder(root, digest, self.precision, tensorrt_runtime(ort))
            cache.mkdir(parents=True, exist_ok=True)
        choice = config.onnxruntime_providers
        chain = providers_for(device, self.precision, cache, available, choice)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: fallbacks are reported by us, in one line
        if config.inference_threads:  # leave the other cores to the driver and middleware
            options.intra_op_num_threads = config.inference_threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        exact = self._needs_exact_int8_kernels()
        if exact:  # ONNX Runtime's U8U8 kernels: exact, slower (its session option's words)
            options.add_session_config_entry("session.x64quantprecision", "1")
        self._build = (ort, options, chain, cache, choice, len(config.depth_bins))
        # TensorRT: the engines by image size, (session, largest batch) each, the least
        # recently used first; the first, for the graph's size or the network's, tells whether
        # TensorRT can take the graph at all.
        self._engines: collections.OrderedDict = collections.OrderedDict()
        self._batch_wanted = 1  # the largest batch warm_up asked for: later sizes' engines too
        self._cuda_session = None  # the sizes TensorRT could not build, when it could others
        size = self.image_size or network_image_size(config)
        self.session = self._gpu_session(chain, size, 1)
        self.provider = self.session.get_providers()[0]
        if self.provider == TENSORRT:
            self._engines[size] = (self.session, 1)
        self.device = "cpu" if self.provider == CPU else device
        self.runtime = f"onnxruntime {ort.__version__} {self.provider}"
        if exact and self.provider == CPU:
            self.runtime += " (exact U8U8 int8 kernels)"
        # What the CPU provider uses: the set number, else (0) one thread per core.
        self.cpu_threads = options.intra_op_num_threads or (os.cpu_count() or 1)
        if device != "cpu" and self.provider == CPU:
            log.warning(
                "device '%s' asked for, but onnxruntime has no GPU provider here (available: "
                "%s): running on CPU",
                device,
                ", ".join(available),
            )

    def _needs_exact_int8_kernels(self) -> bool:
        """True where the default u8s8 kernels would saturate the graph (saturates_here): said
        in one warning."""
        if not self.saturates_here:
            return False
        log.warning(
            "%s has 8-bit int8 weights, which this CPU (%s: no VNNI) multiplies in saturating "
            "16-bit sums: running ONNX Runtime's exact U8U8 kernels instead (slower); export "
            "it again with this version for exact and fast int8",
            self.path.name,
            cpu_description(),
        )
        return True

    def _opened(self, chain):
        ort, options = self._build[:2]
        session = self._session(ort, options, chain)
        if session.get_providers()[0] != CPU:
            # ONNX Runtime would otherwise, on a provider failure at run time, re-create the
            # session on CPU without its options and say so only on its own log.
            session.disable_fallback()
        return session

    def _gpu_session(self, chain, image_size, max_batch):
        """The session of `chain`, its TensorRT engine for `image_size` and batches up to
        `max_batch`. Where TensorRT cannot take the graph: a stale engine cache is cleared and
        rebuilt once, then (choice auto) the chain without TensorRT, with one warning. ONNX
        Runtime raises EPFail there, not a RuntimeError, so its own fallback does not apply."""
        if chain[0][0] != TENSORRT:
            return self._opened(chain)
        cache, choice, bins = self._build[3:]
        folder = tensorrt_engine_folder(cache, image_size, max_batch)
        profile = tensorrt_profile(self.embed_dim, bins, image_size, max_batch)
        tensorrt = with_profile(chain, profile, folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return self._opened(tensorrt)
        except ModelLoadError as exc:
            failure = exc
        if STALE_ENGINE in str(failure):
            log.warning(
                "TensorRT's cached engine in %s cannot be read (built by another TensorRT, "
                "ONNX Runtime or GPU): building it again",
                folder,
            )
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
            try:
                return self._opened(tensorrt)
            except ModelLoadError as exc:
                failure = exc
        if choice == "tensorrt":
            raise failure
        reason = str(failure).split(": ", 1)[-1].strip().splitlines()[0][:200]
        height, width = image_size
        log.warning(
            "TensorRT cannot take %s for %dx%d images (%s): running on CUDA, device_id %s; "
            "onnxruntime_providers: cuda skips TensorRT and this warning",
            self.path.name,
            width,
            height,
            reason,
            chain[0][1]["device_id"],
        )
        return self._opened(chain[1:])

    @property
    def prepares_image_sizes(self) -> bool:
        return self.provider == TENSORRT

    @property
    def _builds_per_image_size(self) -> bool:
        return self.provider == TENSORRT

    def _prepare(self, image_size: tuple, max_batch: int) -> None:
        if self.provider == TENSORRT:
            self._batch_wanted = max(self._batch_wanted, min(max_batch, TENSORRT_MAX_BATCH))
            engine = self._engines.get(tuple(image_size))
            if engine is None or (engine[1] or TENSORRT_MAX_BATCH) < self._batch_wanted:
                self._build_engine(tuple(image_size), self._batch_wanted)

    def _engine(self, image_size: tuple, batch: int) -> tuple:
        """(session, its largest batch; None: any) for `image_size`: the kept engine (a larger
        batch runs in parts: no build mid-stream), or one built now for batches up to the
        largest of `batch` and those warm_up asked for."""
        engine = self._engines.get(image_size)
        if engine is None:
            return self._build_engine(image_size, max(batch, self._batch_wanted))
        self._engines.move_to_end(image_size)
        return engine

    def _build_engine(self, image_size: tuple, max_batch: int) -> tuple:
        max_batch = min(max_batch, TENSORRT_MAX_BATCH)
        session = self._gpu_session(self._build[2], image_size, max_batch)
        if session.get_providers()[0] == TENSORRT:
            engine = (session, max_batch)
        else:  # this size on CUDA (said once), one session for every such size
            self._cuda_session = self._cuda_session or session
            engine = (self._cuda_session, None)
        self._engines[image_size] = engine
        self._engines.move_to_end(image_size)
        while len(self._engines) > TENSORRT_SIZES_KEPT:
            self._engines.popitem(last=False)
        return engine

    def _run(self, fields: tuple, feeds: dict) -> list:
        images = feeds["images"]
        if self.provider != TENSORRT:
            return self.session.run(list(fields), feeds)
        batch, height, width = images.shape[:3]
        session, largest = self._engine((height, width), batch)
        if largest is None or batch <= largest:
            return session.run(list(fields), feeds)
        parts = [  # within the engine's profile: its largest batch at a time
            session.run(list(fields), {**feeds, "images": images[i : i + largest]})
            for i in range(0, batch, largest)
        ]
        return [np.concatenate(arrays) for arrays in zip(*parts)]
