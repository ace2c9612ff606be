"""What ONNX Runtime's providers need, apart from running frames (onnx_runtime): the provider
chain and its options, TensorRT's profiles, engine cache folders and their lock, the graph's
parts that TensorRT takes, and the readings of what loaded (node placement, ONNX Runtime's
errors in one line).
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

from ..errors import ModelLoadError
from ..files import atomic_write
from .exported_graph import GRAPH_INPUTS, GRAPH_OUTPUTS, GRAPH_PARTS

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


# TensorRT runs the graph's trunk alone (CLIP's ResNet at its fixed input size; GRAPH_PARTS):
# one engine serves every camera size and every bins, built at load for batches up to the
# node's max_batch, so it takes the memory and time its frames need (not 64 images at start).
TENSORRT_MAX_BATCH = 64  # the node's max_batch at most; larger batches run in parts
# What each part of the graph takes and gives (export.graph joins them; TensorRT needs them
# apart: onnx-tensorrt refuses the preprocessing's antialiased Resize).
GRAPH_PART_IO = {
    "preprocessing": (["images"], [GRAPH_PARTS[0]]),
    "trunk": ([GRAPH_PARTS[0]], [GRAPH_PARTS[1]]),
    "head": ([GRAPH_PARTS[1], *GRAPH_INPUTS], list(GRAPH_OUTPUTS)),
}
# What ONNX Runtime raises where onnxruntime-gpu lists TensorRT but TensorRT's libraries
# (libnvinfer) cannot load (onnxruntime_pybind_state.cc, RegisterTensorRTPluginsAsCustomOps).
TENSORRT_LIBRARIES_MISSING = "Please install TensorRT libraries"
# The CUDA provider runs the opset-18 Resize from this version on; before it, on the CPU
# (microsoft/onnxruntime#19595).
GPU_ONNXRUNTIME_MINIMUM = (1, 18)
# Nodes that compute on images or features: on a GPU device, one placed on the CPU costs a
# copy to the host and back per frame (ONNX Runtime puts shape arithmetic there by design).
HEAVY_OPS = {"Resize", "Conv", "MatMul", "Gemm", "Softmax", "ReduceL2", "ReduceSum"}
ASSIGNMENT_KEY = "session.record_ep_graph_assignment_info"
NO_CPU_FALLBACK = "session.disable_cpu_ep_fallback"  # a node left on the CPU fails the session


def tensorrt_profile(input_shape: tuple, max_batch: int) -> dict:
    """trt_profile_{min,opt,max}_shapes of the trunk's engine: its network input (B, 3, h, w)
    at the network's fixed size, B from 1 to `max_batch`, its kernels chosen for `max_batch`:
    the batch that several cameras' frames make when the model is busiest (one camera:
    max_batch 1)."""
    _, channels, height, width = input_shape
    return {
        f"trt_profile_{name}_shapes": f"{GRAPH_PARTS[0]}:{batch}x{channels}x{height}x{width}"
        for name, batch in (("min", 1), ("opt", max_batch), ("max", max_batch))
    }


def tensorrt_engine_folder(cache: Path, max_batch: int) -> Path:
    """Where the trunk's engine for batches up to `max_batch` is cached, inside the file's
    tensorrt_cache_folder: ONNX Runtime names engines by the graph alone, so engines of two
    profiles must not share one."""
    return Path(cache) / f"trunk-batch{max_batch}"


# What ONNX Runtime's TensorRT provider says when a cached engine was built by another
# TensorRT, ONNX Runtime or GPU: it does not rebuild by itself.
STALE_ENGINE = "deserialize engine"
# Held while a session builds, reads or clears a file's engines: ORT writes an engine file in
# place (not renamed into it), so a second process could read it half written, take it for a
# stale engine and delete the folder the first is building in.
ENGINE_LOCK = "engines.lock"
ENGINE_LOCK_REPORT_SECONDS = 60.0  # a process waiting for it names the holder this often


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
    choice: str = "auto",
    cudnn_search: str = "heuristic",
) -> list:
    """The providers tried, best first: cpu -> CPU; cuda[:N] -> TensorRT (when installed and
    `choice` is not cuda), CUDA, then CPU as the last fallback, each on device N. An fp16 graph
    lets TensorRT build fp16 engines; `tensorrt_cache`: the file's own tensorrt_cache_folder
    (its engines' folders and their shared timing cache); `cudnn_search`: the CUDA provider's
    cudnn_conv_algo_search. ModelLoadError for `choice` tensorrt without TensorRT."""
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
        chain.append((CUDA, {"device_id": index, "cudnn_conv_algo_search": cudnn_search.upper()}))
    return chain + [(CPU, {})]


def with_profile(chain: list, profile: dict, engine_folder: Path) -> list:
    """`chain` with its TensorRT provider building the engine of `profile` in `engine_folder`."""
    (name, options), rest = chain[0], chain[1:]
    return [(name, {**options, **profile, "trt_engine_cache_path": str(engine_folder)}), *rest]


def graph_parts(path: Path, folder: Path) -> dict:
    """{part: its ONNX file} of the graph at `path` (GRAPH_PART_IO), taken out once into
    `folder` (the file's own TensorRT cache: its content's). Needs the onnx package."""
    try:
        import onnx
        import onnx.utils
    except ImportError as exc:
        raise ModelLoadError(
            f"TensorRT runs the graph's trunk alone, which needs the onnx package to take it "
            f"out ({exc}); pip install onnx, or set onnxruntime_providers: cuda"
        ) from None
    files = {name: Path(folder) / f"{name}.onnx" for name in GRAPH_PART_IO}
    if not all(file.is_file() for file in files.values()):
        extractor = onnx.utils.Extractor(onnx.load(str(path)))
        for name, (inputs, outputs) in GRAPH_PART_IO.items():
            part = extractor.extract_model(inputs, outputs)
            atomic_write(files[name], lambda f, part=part: f.write(part.SerializeToString()))
    return files


def heavy_nodes_on_cpu(session) -> dict | None:
    """{op type: count} of HEAVY_OPS nodes ONNX Runtime assigned to its CPU provider (a session
    opened with ASSIGNMENT_KEY); None where this onnxruntime cannot say (before 1.24: no
    graph-assignment reading)."""
    if not hasattr(session, "get_provider_graph_assignment_info"):
        return None
    counts = collections.Counter(
        node.op_type
        for subgraph in session.get_provider_graph_assignment_info()
        if subgraph.ep_name == CPU
        for node in subgraph.get_nodes()
        if node.op_type in HEAVY_OPS
    )
    return dict(sorted(counts.items()))


# What ONNX Runtime's wrapper prints when it re-creates a session that failed on its fallback
# providers (onnxruntime_inference_collection.py, InferenceSession.__init__: before 1.23 it
# does so whatever enable_fallback says).
FALLBACK_BANNER = "*************** EP Error ***************"
FALLBACK_END = "****************************************"


def fallback_error(printed: str) -> str:
    """The error ONNX Runtime's wrapper fell back from, in one line, where `printed` (its
    stdout during a session's creation) says it did; '' otherwise."""
    if FALLBACK_BANNER not in printed:
        return ""
    block = printed.split(FALLBACK_BANNER, 1)[1]
    error = next((line for line in block.splitlines() if line.startswith("EP Error ")), "")
    words = error.removeprefix("EP Error ").rsplit(" when using ", 1)[0]
    return f"{one_line(words)} (onnxruntime {ort_version()}'s own fallback, refused)"


def without_fallback(printed: str) -> str:
    """`printed` without the wrapper's fallback block (what else was printed stays)."""
    if FALLBACK_BANNER not in printed:
        return printed
    before, rest = printed.split(FALLBACK_BANNER, 1)
    return before + (rest.split(FALLBACK_END, 1)[1].lstrip("\n") if FALLBACK_END in rest else "")


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def wrong_device(session, chain) -> str:
    """'on device N, not M' where the session's first provider is the chain's first and runs on
    another device than it asked for; '' otherwise (or where onnxruntime does not say)."""
    name, asked = chain[0]
    if session.get_providers()[0] != name or "device_id" not in asked:
        return ""
    try:
        got = session.get_provider_options().get(name, {}).get("device_id")
    except Exception:  # an onnxruntime without the reading
        return ""
    if got is None or str(got) == str(asked["device_id"]):
        return ""
    return f"on {name} device {got}, not device {asked['device_id']}"


# ONNX Runtime's ORT_THROW prefix: "<source file>:<line> <function signature> "
# (a template's signature adds "[with T = ...] ").
_SOURCE_PREFIX = re.compile(r"\S+\.(?:cc|cpp|h):\d+ .*?\)(?: \[with [^\]]*\])? ")


def one_line(text: str) -> str:
    """An error's first line without this module's prefix and ONNX Runtime's source location,
    at most 200 characters."""
    if text.startswith("onnxruntime cannot load "):
        text = text.split(": ", 1)[-1]
    text = _SOURCE_PREFIX.sub("", text, count=1)
    return (text.strip().splitlines() or [""])[0][:200]
