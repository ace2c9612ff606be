"""onnxruntime-gpu as it behaves on a GPU host, on this CPU. ONNX Runtime's own Python wrapper
(onnxruntime_inference_collection: InferenceSession's provider checks, its creation-time and
run-time fallbacks, its TensorRT plugin registration) runs unchanged; only what needs a GPU in
its binding module (`C`) is replaced, deciding as the real libraries decide:

- `get_available_providers`: what onnxruntime-gpu lists, TensorRT included whether or not
  TensorRT's libraries are installed (microsoft/onnxruntime#13501).
- `register_tensorrt_plugins_as_custom_ops`: without libnvinfer (`tensorrt_libraries=False`)
  raises the RuntimeError of onnxruntime_pybind_state.cc (TENSORRT_LIBRARIES_MISSING).
- `InferenceSession.initialize_session`: TensorRT first takes a graph only as ORT's TensorRT
  provider would. onnx-tensorrt refuses an antialiased Resize (onnxOpCheckers.cpp:
  "Antialiasing is not supported currently"), so ORT splits the graph and the TensorRT part's
  input is a tensor no explicit profile names: ORT's EP_FAIL (MISSING_PROFILE, from
  tensorrt_execution_provider.cc); a dynamic graph input without a profile gives the same. An
  engine file in trt_engine_cache_path that this "TensorRT" did not write fails to deserialize
  (STALE_ENGINE). The CUDA provider without its libraries (`cuda_libraries=False`) is left out
  (ORT logs "Failed to create CUDAExecutionProvider" and goes on). Otherwise the real CPU
  session runs the graph and reports the providers registered, as ORT does.
- A GPU provider's device beyond the host's `gpus` raises the RuntimeError of the provider's
  constructor (CUDA_CALL_THROW(cudaSetDevice(device_id)): cuda_call.cc's words), which
  ONNX Runtime's wrapper may catch for its own fallback.
- `session.disable_cpu_ep_fallback` set: a session that would leave nodes on the CPU provider
  (its first provider the CPU, or `resize_on_cpu`) raises ORT's Fail (inference_session.cc).
- `get_provider_options`: each registered provider's options as strings, device_id "0" where
  none was given (ORT fills in its defaults).
- Graph assignment (`get_provider_graph_assignment_info`): every node on the session's first
  provider; `resize_on_cpu` puts Resize on CPU, as onnxruntime-gpu before 1.18 did (#19595).

`wrapper`: the release whose Python wrapper runs (None: the installed one's; "1.22.0": that
release's onnxruntime_inference_collection.py, taken from its wheel by `make ort-wrappers` into
.ort-wrappers/, over this binding): before 1.23 the wrapper ignores enable_fallback=0, and its
sessions have no graph-assignment reading. `onnxruntime.__version__` reads as that release.

Records each session's providers with their options, and each run's provider and input shape.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

WRAPPERS = Path(__file__).resolve().parents[2] / ".ort-wrappers"

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
ENGINE = b"engine of this TensorRT"  # what an engine file this stand-in wrote starts with

# onnxruntime_pybind_state.cc, RegisterTensorRTPluginsAsCustomOps, as onnxruntime-gpu 1.2x prints
# it on a host without libnvinfer (its ORT_THROW: a RuntimeError in Python).
TENSORRT_LIBRARIES_MISSING = (
    "/onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:539 void "
    "onnxruntime::python::RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, const "
    "onnxruntime::ProviderOptions&) Please install TensorRT libraries as mentioned in the GPU "
    "requirements page, make sure they're in the PATH or LD_LIBRARY_PATH, and that your GPU is "
    "supported."
)
# tensorrt_execution_provider.cc (CreateNodeComputeInfoFromGraph), an EP_FAIL status: Python's
# EPFail reads "[ONNXRuntimeError] : 11 : EP_FAIL : " and the message.
MISSING_PROFILE = (
    "User needs to provide all the dynamic shape inputs with associated profiles if they want "
    "to explicitly set profiles through provider options.\nPlease note that main graph could be "
    "partitioned into TRT/CUDA/CPU subgraphs, in this case, user also needs to provide shape "
    "profiles for the TRT subgraph's input if it's dynamic shape input.\nFollowing input(s) has "
    "no associated shape profiles provided: "
)
STALE_ENGINE = "TensorRT EP could not deserialize engine from cache: "
NO_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
# inference_session.cc (InferenceSession::Initialize) with NO_CPU_FALLBACK "1", a FAIL status.
CPU_FALLBACK_DISABLED = (
    "This session contains graph nodes that are assigned to the default CPU EP, but fallback "
    "to CPU EP has been explicitly disabled by the user."
)
# cuda_call.cc (CudaCall's message, ORT_THROW with its source location) from the CUDA and
# TensorRT providers' constructors, CUDA_CALL_THROW(cudaSetDevice(device_id)).
INVALID_DEVICE = (
    "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:129 std::conditional_t<"
    "THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, "
    "const char*, SUCCTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW "
    "= true; SUCCTYPE = cudaError; std::conditional_t<THRW, void, common::Status> = void] CUDA "
    "failure 101: invalid device ordinal ; GPU={device} ; hostname=gpu-host ; file=/onnxruntime_"
    "src/onnxruntime/core/providers/cuda/cuda_execution_provider.cc ; line=282 ; "
    "expr=cudaSetDevice(info_.device_id); "
)


def load_wrapper(version: str):
    """ONNX Runtime `version`'s onnxruntime_inference_collection module (.ort-wrappers/), or a
    visible skip where `make ort-wrappers` could not fetch it."""
    path = WRAPPERS / version / "onnxruntime_inference_collection.py"
    if not path.is_file():
        import pytest  # (gpu-check imports this module on hosts without pytest)

        pytest.skip(f"no {path}: make ort-wrappers (PyPI's onnxruntime=={version} wheel)")
    spec = importlib.util.spec_from_file_location(f"ort_wrapper_{version.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ep_fail(binding, message: str):
    """The EPFail ONNX Runtime raises for an EP_FAIL status (its own exception class)."""
    return binding.EPFail(f"[ONNXRuntimeError] : 11 : EP_FAIL : {message}")


def tensorrt_refusal(model_path: str, options: dict) -> str:
    """What ORT's TensorRT provider says of this graph with these options ('' where it builds
    the engine)."""
    import onnx

    graph = onnx.load(model_path, load_external_data=False).graph
    profiled = {
        entry.split(":", 1)[0]
        for entry in options.get("trt_profile_min_shapes", "").split(",")
        if entry
    }
    if not profiled:  # implicit profiles: ORT builds engines per shape as frames come
        return ""
    # onnx-tensorrt refuses the antialiased Resize: what follows it is a TensorRT part whose
    # input is the Resize's output, of a dynamic shape no profile names.
    unprofiled = [
        node.output[0]
        for node in graph.node
        if node.op_type == "Resize"
        and any(a.name == "antialias" and a.i == 1 for a in node.attribute)
    ]
    initializers = {i.name for i in graph.initializer}
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        dynamic = any(not d.HasField("dim_value") for d in dims)
        if value.name not in initializers and dynamic and value.name not in profiled:
            unprofiled.append(value.name)
    return MISSING_PROFILE + ",".join(unprofiled) if unprofiled else ""


class GpuOnnxRuntime:
    """Install with `install(monkeypatch)`; then `import onnxruntime` is onnxruntime-gpu on a
    GPU host with TensorRT (or without its libraries, or without CUDA's)."""

    def __init__(
        self,
        tensorrt_libraries=True,
        cuda_libraries=True,
        resize_on_cpu=False,
        gpus=2,
        wrapper=None,
    ):
        import onnxruntime
        from onnxruntime.capi import onnxruntime_inference_collection as installed

        self.onnxruntime, self.real = onnxruntime, installed.C
        self.wrapper = installed if wrapper is None else load_wrapper(wrapper)
        self.tensorrt_libraries, self.cuda_libraries = tensorrt_libraries, cuda_libraries
        self.resize_on_cpu, self.gpus = resize_on_cpu, gpus
        self.sessions = []  # per session: [(provider, options)] as asked for
        self.runs = []  # per run: (first provider, shape of the first input)
        self.no_cpu_fallback = []  # per session opened: whether it set NO_CPU_FALLBACK
        self.__version__ = wrapper or onnxruntime.__version__

    def install(self, monkeypatch) -> GpuOnnxRuntime:
        binding = types.SimpleNamespace(
            get_available_providers=self.get_available_providers,
            register_tensorrt_plugins_as_custom_ops=self.register_tensorrt_plugins,
            InferenceSession=self.c_session,
        )
        proxy = _Binding(binding, self.real)
        monkeypatch.setattr(self.wrapper, "C", proxy)
        monkeypatch.setattr(
            self.onnxruntime, "get_available_providers", self.get_available_providers
        )
        monkeypatch.setattr(self.onnxruntime, "InferenceSession", self.wrapper.InferenceSession)
        monkeypatch.setattr(self.onnxruntime, "__version__", self.__version__)
        return self

    @property
    def EPFail(self):  # noqa: N802 (ONNX Runtime's name)
        return self.real.EPFail

    def get_available_providers(self):
        return [TENSORRT, CUDA, CPU]

    def register_tensorrt_plugins(self, session_options, provider_options):
        if not self.tensorrt_libraries:
            raise RuntimeError(TENSORRT_LIBRARIES_MISSING)

    def c_session(self, options, model, is_path, read_config):
        try:
            no_cpu = options.get_session_config_entry(NO_CPU_FALLBACK) == "1"
        except Exception:  # not set
            no_cpu = False
        strict = options
        if no_cpu:  # the CPU session standing in for the GPU's must not refuse the CPU
            options = self._without_entries(options)
        real = self.real.InferenceSession(options, model, is_path, read_config)
        session = _Session(self, real, model, no_cpu)
        session.strict = (strict, model, is_path, read_config)
        return session

    def _without_entries(self, options):
        fresh = self.real.SessionOptions()
        for name in (
            "log_severity_level",
            "intra_op_num_threads",
            "inter_op_num_threads",
            "graph_optimization_level",
        ):
            setattr(fresh, name, getattr(options, name))
        return fresh

    def providers_of(self, index: int) -> list:
        return [name for name, _ in self.sessions[index]]


class _Binding:
    """ONNX Runtime's binding module with some names replaced."""

    def __init__(self, replaced, real):
        self._replaced, self._real = replaced, real

    def __getattr__(self, name):
        if hasattr(self._replaced, name):
            return getattr(self._replaced, name)
        return getattr(self._real, name)


class _Assigned:
    """OrtEpAssignedSubgraph's reading: a provider and its nodes."""

    def __init__(self, ep_name, nodes):
        self.ep_name, self._nodes = ep_name, nodes

    def get_nodes(self):
        return self._nodes


class _Session:
    """ONNX Runtime's C session, deciding its providers as a GPU host's would."""

    def __init__(self, runtime: GpuOnnxRuntime, real, model, no_cpu_fallback=False):
        self._runtime, self._real, self._model = runtime, real, model
        self.no_cpu_fallback = no_cpu_fallback
        self._providers = [CPU]
        self._options = {CPU: {}}

    def initialize_session(self, providers, provider_options, disabled_optimizers):
        runtime = self._runtime
        runtime.sessions.append(list(zip(providers, provider_options)))
        registered = list(providers)
        for name, options in zip(providers, provider_options):
            device = int(options.get("device_id", 0))
            if name in (TENSORRT, CUDA) and device >= runtime.gpus:
                raise RuntimeError(INVALID_DEVICE.format(device=device))
        if registered and registered[0] == TENSORRT:
            options = provider_options[0]
            refusal = tensorrt_refusal(self._model, options)
            if refusal:
                raise ep_fail(runtime.real, refusal)
            if "trt_engine_cache_path" in options:
                self._build_engine(Path(options["trt_engine_cache_path"]))
        if CUDA in registered and not runtime.cuda_libraries:
            registered.remove(CUDA)  # ORT: "Failed to create CUDAExecutionProvider", no error
        if CPU not in registered:
            registered.append(CPU)
        if self.no_cpu_fallback and CPU in providers:  # ORT's own refusal of the conflict
            runtime.real.InferenceSession(*self.strict).initialize_session(
                [CPU], [{}], disabled_optimizers
            )
        on_cpu = registered[0] == CPU or (runtime.resize_on_cpu and registered[0] == CUDA)
        if self.no_cpu_fallback and on_cpu:
            raise runtime.real.Fail(f"[ONNXRuntimeError] : 1 : FAIL : {CPU_FALLBACK_DISABLED}")
        runtime.no_cpu_fallback.append(self.no_cpu_fallback)
        self._real.initialize_session([CPU], [{}], disabled_optimizers)
        self._providers = registered
        given = dict(zip(providers, provider_options))
        self._options = {
            name: {} if name == CPU else {"device_id": "0", **given.get(name, {})}
            for name in registered
        }

    def get_provider_options(self):
        return {name: {k: str(v) for k, v in opts.items()} for name, opts in self._options.items()}

    def _build_engine(self, folder: Path):
        engines = sorted(folder.glob("*.engine"))
        for path in engines:
            if not path.read_bytes().startswith(ENGINE):
                raise ep_fail(self._runtime.real, STALE_ENGINE + str(path))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "TensorrtExecutionProvider_TRTKernel_graph_0_sm90.engine").write_bytes(ENGINE)

    def get_providers(self):
        return list(self._providers)

    def get_provider_graph_assignment_info(self):
        try:  # recorded where the session's options asked ONNX Runtime to
            subgraphs = self._real.get_provider_graph_assignment_info()
        except Exception:
            return []
        nodes = [n for subgraph in subgraphs for n in subgraph.get_nodes()]
        first = self._providers[0]
        if self._runtime.resize_on_cpu and first == CUDA:
            return [
                _Assigned(first, [n for n in nodes if n.op_type != "Resize"]),
                _Assigned(CPU, [n for n in nodes if n.op_type == "Resize"]),
            ]
        return [_Assigned(first, nodes)]

    def run(self, output_names, feeds, run_options):
        self._runtime.runs.append((self._providers[0], next(iter(feeds.values())).shape[:3]))
        return self._real.run(output_names, feeds, run_options)

    def run_with_ort_values(self, feeds, output_names, run_options):
        first = next(iter(feeds.values()))
        self._runtime.runs.append((self._providers[0], tuple(first.shape())[:3]))
        return self._real.run_with_ort_values(feeds, output_names, run_options)

    def __getattr__(self, name):
        return getattr(self._real, name)
