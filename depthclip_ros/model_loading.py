"""Which estimator runs a model: the torch core (estimator/, a CLIP name or checkpoint), or a
file written by depthclip-export on ONNX Runtime or OpenVINO (graph_runtimes/). All take uint8
RGB images and give a DepthResult from `predict`; the node, the bag tool, the fleet, the eval
and the benchmark load any of them through `load_estimator`. It sits above both packages (each
of which it may load), so neither imports the other's loader. No torch import here: the ONNX
install has none.
"""

from __future__ import annotations

import gc
import os
import sys

from .config.parameters import ONNX_SUFFIX
from .errors import ModelLoadError

EXPORTED_GRAPH_BACKENDS = ("onnxruntime", "openvino")


def backend_of(config) -> str:
    """torch, onnxruntime or openvino; auto picks onnxruntime for an exported .onnx file."""
    if config.backend != "auto":
        return config.backend
    return "onnxruntime" if str(config.model).endswith(ONNX_SUFFIX) else "torch"


def load_estimator(config, max_batch: int = 1):
    """The estimator of `config.model` on the backend `config.backend` asks for; `max_batch`:
    the most images it will be given at once (TensorRT builds its engine for that at load, not
    one for a single image first; warm_up may raise it later)."""
    quiet_jit_profiling()
    backend = backend_of(config)
    is_onnx = str(config.model).endswith(ONNX_SUFFIX)
    if backend in EXPORTED_GRAPH_BACKENDS:
        if not is_onnx:
            raise ModelLoadError(
                f"backend '{backend}' runs a model exported by depthclip-export (a .onnx "
                f"file), got model '{config.model}'; export it first, or use backend torch"
            )
        if backend == "openvino":
            from .graph_runtimes.openvino_runtime import OpenVinoDepthClip

            return OpenVinoDepthClip(config, max_batch)
        from .graph_runtimes.onnx_runtime import OnnxDepthClip

        return OnnxDepthClip(config, max_batch)
    if is_onnx:
        raise ModelLoadError(
            f"backend 'torch' cannot run the exported graph '{config.model}'; use backend "
            f"auto, onnxruntime or openvino, or give the CLIP name or checkpoint it was "
            f"exported from"
        )
    try:
        from .estimator.core import DepthClip
    except ImportError as exc:  # the torch-free install
        raise ModelLoadError(
            f"model '{config.model}' needs the torch backend, which is not installed here "
            f"({exc}); run a model exported by depthclip-export (backend onnxruntime)"
        ) from None
    return DepthClip(config)


def quiet_jit_profiling() -> None:
    """oneDNN (torch's CPU kernels, OpenVINO's CPU plugin) tells Linux perf about its kernels by
    default on AArch64: every process that runs a model there leaves /tmp/perf-<pid>.map,
    never removed, one more at each start of the node. Off unless the user set it (oneDNN reads
    it at its first kernel, after this)."""
    if "ONEDNN_JIT_PROFILE" not in os.environ and "DNNL_JIT_PROFILE" not in os.environ:
        os.environ["ONEDNN_JIT_PROFILE"] = "0"


def return_freed_memory(device) -> None:
    """Give the memory of a dropped model back: CUDA's cached blocks to the driver and, on
    glibc, freed heap pages to the OS (without malloc_trim the process RSS would not drop)."""
    gc.collect()
    if str(device).startswith("cuda") and "torch" in sys.modules:
        sys.modules["torch"].cuda.empty_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps the pages
        pass
