"""DepthCLIP on OpenVINO: runs the same graphs as ONNX Runtime (fp32, fp16, int8 from
depthclip-export) on Intel CPUs, integrated graphics and NPUs, without torch (what it shares with
ONNX Runtime: exported_graph). An optional install: pip install openvino.

One compiled model per (batch, height, width) of the images, at most COMPILED_SHAPES kept: a
static shape compiles to faster kernels than a dynamic one (measured: docs/performance.md), and
a camera's size never changes. OpenVINO's own compiled-model cache (openvino_cache_dir) keeps the
compilation across starts. Inference precision: the CPU plugin would pick bf16 by itself on a CPU
with native bf16; this backend sets it, f32 unless `precision: bf16` asks.
"""

from __future__ import annotations

import collections
import logging
import os
from pathlib import Path

from ..errors import ConfigError, ModelLoadError
from .cpu_features import cpu_description, int8_saturates, is_arm
from .exported_graph import ExportedGraph, int8_weight_bits
from .text_cache import default_cache_dir

log = logging.getLogger("depthclip_ros")

COMPILED_SHAPES = 8  # compiled models kept (image shapes); the least recently used goes first
# The package's device names -> OpenVINO's (gpu.N -> GPU.N).
OPENVINO_DEVICE = {"auto": "AUTO", "cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}


def openvino_device(device: str) -> str:
    """The OpenVINO device name of a `device` parameter value (the config checked it)."""
    if device.startswith("gpu."):
        return "GPU." + device[4:]
    return OPENVINO_DEVICE[device]


class OpenVinoDepthClip(ExportedGraph):
    """An exported graph on OpenVINO (ExportedGraph's interface)."""

    def _import(self):
        try:
            import openvino
        except ImportError as exc:
            raise ModelLoadError(
                f"backend openvino needs the openvino package ({exc}); pip install openvino "
                f"(or pip install .[openvino]), or use backend onnxruntime"
            ) from None
        return openvino

    def _read_graph(self) -> tuple:
        ov = self._import()
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # not an ONNX file, or one OpenVINO cannot read
            raise ModelLoadError(
                f"openvino cannot read {self.path}: {type(exc).__name__}: {exc}"
            ) from None
        # ONNX metadata_props arrive as the model's rt_info under "framework".
        info = self.model.get_rt_info()
        framework = info["framework"] if "framework" in info else {}
        meta = {key: value.astype(str) for key, value in dict(framework).items()}
        return (
            meta,
            [name for port in self.model.inputs for name in port.get_names()],
            [name for port in self.model.outputs for name in port.get_names()],
        )

    def _inference_precision(self, requested: str) -> str:
        """bf16 runs an fp32 graph in OpenVINO's bf16 inference precision; else as the base."""
        if requested == "bf16" and self.graph_precision == "fp32":
            return "bf16"
        if requested == "bf16":
            raise ConfigError(
                "precision",
                "bf16",
                f"the exported graph {self.path.name} is {self.graph_precision}; bf16 "
                f"inference takes an fp32 graph (depthclip-export --precision fp32)",
            )
        return super()._inference_precision(requested)

    def _open(self, config) -> None:
        ov = self._import()
        self.device = openvino_device(config.device)
        available = self.core.available_devices
        wanted = self.device.split(".")[0]
        if self.device != "AUTO" and not any(d.split(".")[0] == wanted for d in available):
            raise ModelLoadError(
                f"device '{config.device}': OpenVINO finds no {wanted} here (available: "
                f"{', '.join(available) or 'none'}); use device "
                f"{' or '.join(d.lower() for d in available) or 'cpu'}"
            )
        if self.precision == "bf16" and "BF16" not in self._capabilities("CPU"):
            raise ModelLoadError(
                "precision bf16: OpenVINO finds no native bf16 on this CPU (avx512_bf16 or AMX), "
                "so bf16 would run slower than fp32; use precision fp32, or an int8 graph"
            )
        cache = Path(config.openvino_cache_dir or default_cache_dir() / "openvino").expanduser()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(cache)})
        except OSError as exc:  # no cache: every start compiles again, nothing else changes
            log.warning("openvino_cache_dir %s cannot be used (%s): not caching", cache, exc)
        self._warn_about_int8()
        hint = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision]}
        if config.inference_threads and self.device in ("CPU", "AUTO"):  # cores left to others
            hint.update(INFERENCE_NUM_THREADS=config.inference_threads, ENABLE_CPU_PINNING=False)
        # AUTO passes the hint on to the device it picks, as a device property.
        auto = self.device == "AUTO"
        self.compile_config = {"DEVICE_PROPERTIES": {"CPU": hint}} if auto else hint
        self.compiled = collections.OrderedDict()  # (B, H, W) -> infer request, LRU
        self.runtime = f"openvino {ov.get_version().split('-')[0]} {self.device}"
        self.cpu_threads = config.inference_threads or self._cpu_threads()

    def _warn_about_int8(self) -> None:
        """One warning where OpenVINO's CPU plugin cannot run this int8 graph as exported: on
        Arm it simulates int8 in floating point (its CPU device documentation); on x86 without
        VNNI its u8s8 kernels saturate 8-bit weights (graphs exported before 7-bit weights)."""
        if self.graph_precision != "int8" or self.device.split(".")[0] not in ("CPU", "AUTO"):
            return
        if is_arm():
            log.warning(
                "OpenVINO runs int8 graphs on Arm CPUs (%s) in floating point, simulating "
                "int8: neither int8's speed nor ONNX Runtime's int8 depth; backend "
                "onnxruntime is the int8 runtime on Arm",
                cpu_description(),
            )
        elif int8_weight_bits(self.metadata) > 7 and int8_saturates():
            log.warning(
                "%s has 8-bit int8 weights, which OpenVINO's kernels on this CPU (%s: no VNNI) "
                "add in saturating 16-bit sums: its depth differs from exact int8 (the depth "
                "figure below says by how much); export it again with this version, or use "
                "backend onnxruntime, which runs it exactly",
                self.path.name,
                cpu_description(),
            )

    def _capabilities(self, device: str) -> list:
        try:
            return list(self.core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        except RuntimeError:
            return []

    def _cpu_threads(self) -> int:
        try:
            return int(self.core.get_property("CPU", "INFERENCE_NUM_THREADS")) or os.cpu_count()
        except (RuntimeError, ValueError, TypeError):
            return os.cpu_count() or 1

    def _request(self, shape: tuple):
        """The infer request of a model compiled for images of `shape` (B, H, W)."""
        request = self.compiled.get(shape)
        if request is not None:
            self.compiled.move_to_end(shape)
            return request
        model = self.model.clone()
        model.reshape({"images": [*shape, 3]})  # text features and bins keep any bin count
        try:
            compiled = self.core.compile_model(model, self.device, self.compile_config)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"openvino cannot compile {self.path.name} for {shape[2]}x{shape[1]} images "
                f"(batch {shape[0]}) on {self.device}: {str(exc).strip().splitlines()[-1]}"
            ) from None
        if len(self.compiled) >= COMPILED_SHAPES:
            self.compiled.popitem(last=False)
        request = self.compiled[shape] = compiled.create_infer_request()
        return request

    def _run(self, fields: tuple, feeds: dict) -> list:
        request = self._request(tuple(feeds["images"].shape[:3]))
        request.infer(feeds)
        # Copies: the request's output tensors are overwritten by its next inference.
        return [request.get_tensor(name).data.copy() for name in fields]
