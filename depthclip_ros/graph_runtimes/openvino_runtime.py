"""DepthCLIP on OpenVINO: runs the same graphs as ONNX Runtime (fp32, fp16, int8 from
depthclip-export) on Intel CPUs, integrated graphics and NPUs, without torch (what it shares with
ONNX Runtime: exported_graph). An optional install: pip install openvino.

One compiled model per (batch, height, width, bins): every shape static, as NPUs compile only
static shapes and a static shape compiles to faster CPU kernels than a dynamic one (measured:
bench/results/performance.md); a camera's size is compiled at its camera_info, a bin count at its
first frame; at most COMPILED_SHAPES kept, and a shape that failed to compile is not compiled
again. OpenVINO's own compiled-model cache (openvino_cache_dir) keeps the compilation across
starts. Inference precision set per device, never left to the plugin: CPU f32 (bf16 where asked),
GPU f16 unless fp32 is asked, NPU f16 (it computes in fp16). Where it is below f32 (CPU bf16, GPU
f16), the head is compiled apart in f32 (split_at_features), as the torch backend keeps its head
float32: OpenVINO's CPU plugin enforces bf16 on every node before the graph's last MatMul or
Interpolate, and runtime info asking otherwise changed nothing in 2026.4 (tried). OpenVINO is
imported without its usage telemetry unless the user opted in (import_openvino).
"""

from __future__ import annotations

import collections
import logging
import sys
from pathlib import Path

from ..config.parameters import runtime_entries
from ..errors import ConfigError, ModelLoadError
from ..estimator.cpu_features import cpu_description, is_arm, usable_cores
from ..estimator.result import ForwardEnd, Started
from ..estimator.text_cache import default_cache_dir
from .exported_graph import GRAPH_INPUTS, GRAPH_PARTS, PARTS_KEY, ExportedGraph

log = logging.getLogger("depthclip_ros")

COMPILED_SHAPES = 8  # compiled models kept (shapes); the least recently used goes first
# The package's device names -> OpenVINO's (gpu.N -> GPU.N).
OPENVINO_DEVICE = {"auto": "AUTO", "cpu": "CPU", "gpu": "GPU", "npu": "NPU"}


def telemetry_opted_in() -> bool:
    """Whether the user gave OpenVINO's telemetry consent (`opt_in_out --opt_in` writes 1 in
    ~/intel/openvino_telemetry; --opt_out 0; no file: never asked)."""
    try:
        return (Path.home() / "intel" / "openvino_telemetry").read_text().strip() == "1"
    except (OSError, RuntimeError):  # no file, or no home
        return False


def import_openvino():
    """openvino, imported without its telemetry unless the user opted in. Since 2024.1 every
    `import openvino` sends a usage event to Google Analytics, by default (no consent file),
    from a process it forks off this one's threads, and keeps a client id in ~/intel: not what
    a robot's perception node should do. openvino-telemetry blocked (None in sys.modules: its
    import raises ImportError), OpenVINO takes its own stub, as where that package is absent."""
    if "openvino" not in sys.modules and not telemetry_opted_in():
        sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def compile_properties(
    device: str, precision: str, requested: str, threads: int, cpu_properties=None, streams=1
) -> dict:
    """OpenVINO's compile properties for the OpenVINO `device` name: the inference precision
    of each device (CPU: f32, bf16 where `precision` is; GPU: f16 unless `requested` is fp32;
    NPU: none, it computes in f16), the CPU's threads unpinned and, `threads` set, that many,
    `streams` > 1 that many streams (NUM_STREAMS), then the user's `cpu_properties`
    (openvino_properties). AUTO gets each device's as device properties."""
    # Unpinned: a thread pinned to a core another process is busy on waits for that core
    # (measured: bench/results/performance.md, "Sharing the CPU").
    cpu = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "ENABLE_CPU_PINNING": False,
    }
    if threads:  # cores left to the camera driver and the middleware
        cpu["INFERENCE_NUM_THREADS"] = threads
    if streams > 1:  # inference_streams: forwards side by side, the threads shared out
        cpu["NUM_STREAMS"] = streams
    cpu.update(cpu_properties or {})
    gpu = {"INFERENCE_PRECISION_HINT": "f32" if requested == "fp32" else "f16"}
    kind = device.split(".")[0]
    if kind == "AUTO":
        return {"DEVICE_PROPERTIES": {"CPU": cpu, "GPU": gpu}}
    return {"CPU": cpu, "GPU": gpu, "NPU": {}}[kind]


def _number(text) -> int:
    """An integer property given as text; 0 where there is none (OpenVINO says why at compile)."""
    try:
        return int(text or 0)
    except ValueError:
        return 0


def lowers_float_precision(properties: dict, available: list) -> bool:
    """True where compile `properties` run float operations below f32: on their device, or,
    AUTO's, on one of the `available` devices it may choose."""
    if "DEVICE_PROPERTIES" in properties:
        kinds = {device.split(".")[0] for device in available}
        return any(
            lowers_float_precision(device_properties, available)
            for device, device_properties in properties["DEVICE_PROPERTIES"].items()
            if device in kinds
        )
    return properties.get("INFERENCE_PRECISION_HINT", "f32") != "f32"


def split_at_features(model) -> tuple:
    """A static-shaped model as two: its image part (images -> features: the preprocessing and
    the trunk) and its head (features, text features, bins, temperature -> every output), the
    head's use of the images' size folded into constants. The image part shares `model`'s
    nodes (it changes none of them); the head is cut from a clone."""
    ov = import_openvino()
    from openvino.passes import ConstantFolding, Manager

    image_part = ov.Model(
        [tensor_named(model, GRAPH_PARTS[1])],
        [p for p in model.get_parameters() if "images" in p.output(0).get_names()],
        "image_part",
    )
    head = model.clone()
    features = tensor_named(head, GRAPH_PARTS[1])
    source = ov.op.Parameter(features.get_element_type(), features.get_partial_shape())
    source.output(0).set_names({GRAPH_PARTS[1]})
    for target in list(features.get_target_inputs()):
        target.replace_source_output(source.output(0))
    head = ov.Model(head.get_results(), [source, *head.get_parameters()], "head")
    folding = Manager()
    folding.register_pass(ConstantFolding())
    folding.run_passes(head)  # the images' static shape becomes constants: images not needed
    others = set(GRAPH_INPUTS) - {"images"}
    inputs = [p for p in head.get_parameters() if p.output(0).get_names() & others]
    return image_part, ov.Model(head.get_results(), [source, *inputs], "head")


def tensor_named(model, name: str):
    """The output of `model`'s nodes that carries the tensor `name`."""
    return next(
        output
        for node in model.get_ordered_ops()
        for output in node.outputs()
        if name in output.get_names()
    )


def package_device(openvino_name: str) -> str:
    """An OpenVINO device name as the package's `device` names it (GPU.1 -> gpu.1)."""
    return openvino_name.lower()


def openvino_device(device: str) -> str:
    """The OpenVINO device name of a `device` parameter value (the config checked it)."""
    if device.startswith("gpu."):
        return "GPU." + device[4:]
    return OPENVINO_DEVICE[device]


class OpenVinoDepthClip(ExportedGraph):
    """An exported graph on OpenVINO (ExportedGraph's interface)."""

    def _import(self):
        try:
            openvino = import_openvino()
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
        self.openvino_device = openvino_device(config.device)
        self.device = config.device  # the package's name; auto: where AUTO runs, once compiled
        available = self.core.available_devices
        wanted = self.openvino_device.split(".")[0]
        if wanted != "AUTO" and not any(d.split(".")[0] == wanted for d in available):
            raise ModelLoadError(
                f"device '{config.device}': OpenVINO finds no {wanted} here (available: "
                f"{', '.join(available) or 'none'}); use device "
                f"{' or '.join(d.lower() for d in available) or 'cpu'}"
            )
        if wanted in ("GPU", "NPU") and self.precision == "fp32":  # their float precision
            if wanted == "NPU" or config.precision != "fp32":
                self.precision = "fp16"
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
        self.cpu_properties = runtime_entries(config, "openvino_properties")
        self.compile_config = compile_properties(
            self.openvino_device,
            self.precision,
            config.precision,
            config.inference_threads,
            self.cpu_properties,
            config.inference_streams,
        )
        self.head_config = self._head_config(
            available, config.inference_threads, config.inference_streams
        )
        self.compiled = collections.OrderedDict()  # (B, H, W, bins) -> CompiledShape, LRU
        self.streams = 1  # of the model compiled last (frames_in_flight)
        self.failed = {}  # shape -> the ModelLoadError of its compilation, said again
        self.version = ov.get_version().split("-")[0]
        self.runtime = f"openvino {self.version} {self.openvino_device}"
        self.cpu_threads = (
            _number(self.cpu_properties.get("INFERENCE_NUM_THREADS"))
            or config.inference_threads
            or self._cpu_threads()
        )

    def _head_config(self, available: list, threads: int, streams: int):
        """The head's compile properties (f32) where the device computes below f32, the head
        then compiled apart; None where the head runs in the whole graph."""
        if not lowers_float_precision(self.compile_config, available):
            return None
        if PARTS_KEY not in self.metadata:
            log.warning(
                "%s was exported before its head could be compiled apart: OpenVINO runs its "
                "head below f32 too (bf16 on a CPU, f16 on a GPU); export it again with this "
                "version for a float32 head",
                self.path.name,
            )
            return None
        return compile_properties(
            self.openvino_device, "fp32", "fp32", threads, self.cpu_properties, streams
        )

    def _warn_about_int8(self) -> None:
        """One warning where OpenVINO's CPU plugin cannot run this int8 graph as exported: on
        Arm it simulates int8 in floating point (its CPU device documentation); on x86 without
        VNNI its u8s8 kernels saturate 8-bit weights (graphs exported before 7-bit weights)."""
        if self.graph_precision != "int8" or self.openvino_device not in ("CPU", "AUTO"):
            return
        if is_arm():
            log.warning(
                "OpenVINO runs int8 graphs on Arm CPUs (%s) in floating point, simulating "
                "int8: neither int8's speed nor ONNX Runtime's int8 depth; backend "
                "onnxruntime is the int8 runtime on Arm",
                cpu_description(),
            )
        elif self.saturates_here:
            log.warning(
                "%s has 8-bit int8 weights, which OpenVINO's kernels on this CPU (%s: no VNNI) "
                "add in saturating 16-bit sums: its depth differs from exact int8 (the depth "
                "figure below says by how much); export it again with this version, or use "
                "backend onnxruntime, which runs it exactly",
                self.path.name,
                cpu_description(),
            )

    @property
    def precision_detail(self) -> str:
        detail = super().precision_detail
        return detail if self.head_config is None else f"{detail}, its head in f32"

    def _capabilities(self, device: str) -> list:
        try:
            return list(self.core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        except RuntimeError:
            return []

    def _cpu_threads(self) -> int:
        try:
            return int(self.core.get_property("CPU", "INFERENCE_NUM_THREADS")) or usable_cores()
        except (RuntimeError, ValueError, TypeError):
            return usable_cores()

    @property
    def prepares_image_sizes(self) -> bool:
        return True  # a camera's size compiled at its camera_info, not on its first frame

    def _prepare(self, image_size: tuple, max_batch: int) -> None:
        bins = len(self.head.bins)
        for batch in sorted({1, max_batch}):
            self._compiled((batch, *image_size, bins))

    @property
    def frames_in_flight(self) -> int:
        """The streams of the model compiled last (inference_streams, NUM_STREAMS, or what a
        THROUGHPUT hint chose): 1 by default, where one forward takes every thread."""
        return self.streams

    def _compiled(self, shape: tuple) -> CompiledShape:
        """The models compiled for images (B, H, W) and K bins, `shape` (B, H, W, K), every
        input static: the whole graph's, or its image part's and its head's (head_config)."""
        compiled = self.compiled.get(shape)
        if compiled is not None:
            self.compiled.move_to_end(shape)
            return compiled
        if shape in self.failed:  # not compiled again every frame
            raise self.failed[shape]
        batch, height, width, bins = shape
        model = self.model.clone()
        model.reshape(
            {
                "images": [batch, height, width, 3],
                "text_features": [self.embed_dim, bins],
                "bins": [bins],
            }
        )
        try:
            if self.head_config is None:
                parts = [(model, self.compile_config)]
            else:
                image_part, head = split_at_features(model)
                parts = [(image_part, self.compile_config), (head, self.head_config)]
            compiled = CompiledShape(
                [
                    self.core.compile_model(part, self.openvino_device, properties)
                    for part, properties in parts
                ]
            )
        except RuntimeError as exc:
            self.failed[shape] = ModelLoadError(
                f"openvino cannot compile {self.path.name} for {width}x{height} images (batch "
                f"{batch}, {bins} bins) on {self.openvino_device}: "
                f"{str(exc).strip().splitlines()[-1]}"
            )
            raise self.failed[shape] from None
        self._executed_on(compiled.parts[0])
        self.streams = compiled.streams
        if len(self.compiled) >= COMPILED_SHAPES:
            self.compiled.popitem(last=False)
        self.compiled[shape] = compiled
        return compiled

    def _executed_on(self, compiled) -> None:
        """AUTO: the device(s) it runs on, as `device` and in `runtime`."""
        if self.openvino_device != "AUTO":
            return
        try:
            devices = [str(d) for d in compiled.get_property("EXECUTION_DEVICES")]
        except RuntimeError:
            return
        self.device = ",".join(package_device(d) for d in devices) or self.device
        self.runtime = f"openvino {self.version} AUTO (executes on {', '.join(devices)})"

    def _run(self, fields: tuple, feeds: dict) -> list:
        return self._start(fields, feeds)()

    def _start_one(self, fields: tuple, feeds: dict) -> Started:
        """The forward started on an idle infer request (the image part's where the head is
        compiled apart); the Started waits for it and gives the outputs `fields`."""
        images = feeds["images"]
        compiled = self._compiled((*images.shape[:3], len(feeds["bins"])))
        requests = compiled.idle_requests()
        ended = ForwardEnd()
        requests[0].set_callback(ended.set, None)
        if len(requests) == 2:  # the image part, then the head in f32
            requests[0].start_async({"images": images})
            feeds = {name: value for name, value in feeds.items() if name != "images"}
        else:
            requests[0].start_async(feeds)

        def outputs() -> list:
            try:
                requests[0].wait()
                if len(requests) == 2:
                    requests[1].infer({**feeds, GRAPH_PARTS[1]: requests[0].get_output_tensor(0)})
                # Copies: the request's output tensors are overwritten by its next inference.
                return [requests[-1].get_tensor(name).data.copy() for name in fields]
            finally:
                compiled.idle.append(requests)

        return Started(outputs, ended.is_set, ended.when_set)


class CompiledShape:
    """One shape's compiled model(s) and their idle infer requests: one per forward in flight,
    made as they are needed (a request runs one forward at a time)."""

    def __init__(self, parts: list):
        self.parts = parts
        self.idle = []
        try:
            self.streams = max(int(parts[0].get_property("NUM_STREAMS")), 1)
        except (RuntimeError, TypeError, ValueError):  # a device without streams
            self.streams = 1

    def idle_requests(self) -> tuple:
        if self.idle:
            return self.idle.pop()
        return tuple(part.create_infer_request() for part in self.parts)
