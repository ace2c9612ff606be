"""onnxruntime as a GPU build (onnxruntime-gpu with TensorRT) behaves, on a CPU machine: the
providers it reports, the EPFail its TensorRT provider raises, the engine files it caches; the
graph itself runs on the installed CPU onnxruntime."""

from pathlib import Path


class EPFail(Exception):
    """Stand-in for onnxruntime.capi.onnxruntime_pybind11_state.EPFail: what ONNX Runtime raises
    when a provider fails to build a session; not a RuntimeError (so ONNX Runtime's own fallback
    does not apply to it)."""


# ONNX Runtime 1.32's words, quoted from the failures the issue found (any-size graph; an engine
# cached by another TensorRT).
ANY_SIZE_FAILURE = (
    "[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP failed to create engine from network: "
    "the explicit profile has no shape for the dynamic shape inputs of a subgraph"
)
STALE_ENGINE_FAILURE = (
    "[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP could not deserialize engine from cache: "
    "/cache/engine.engine"
)
TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
ENGINE = b"engine of this TensorRT"  # what an engine file this stand-in wrote starts with


class GpuOnnxRuntime:
    """onnxruntime as a GPU build reports itself (TensorRT, CUDA, CPU), delegating the real work
    to the installed CPU onnxruntime; `tensorrt_failures`: what its TensorRT sessions raise, in
    turn (then they build). A TensorRT session writes its engine into trt_engine_cache_path as
    ONNX Runtime does, and one that finds an engine it did not write there (another TensorRT's)
    raises STALE_ENGINE_FAILURE. Records each session's providers and options, and each run's
    provider and images' (B, H, W)."""

    def __init__(self, tensorrt_failures=()):
        import onnxruntime

        self.real, self.failures = onnxruntime, list(tensorrt_failures)
        self.__version__ = onnxruntime.__version__
        self.SessionOptions = onnxruntime.SessionOptions
        self.GraphOptimizationLevel = onnxruntime.GraphOptimizationLevel
        self.sessions, self.fallbacks_disabled, self.runs = [], [], []

    def get_available_providers(self):
        return [TENSORRT, CUDA, CPU]

    def _build_engine(self, options: dict):
        folder = Path(options["trt_engine_cache_path"])
        engines = sorted(folder.glob("*.engine"))
        if any(not path.read_bytes().startswith(ENGINE) for path in engines):
            raise EPFail(STALE_ENGINE_FAILURE)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "TensorrtExecutionProvider_TRTKernel_graph_0_sm90.engine").write_bytes(ENGINE)

    def InferenceSession(self, path, sess_options=None, providers=(), provider_options=()):  # noqa: N802
        self.sessions.append(list(zip(providers, provider_options)))
        if providers[0] == TENSORRT:
            if self.failures:
                raise EPFail(self.failures.pop(0))
            if "trt_engine_cache_path" in provider_options[0]:
                self._build_engine(provider_options[0])
        session = self.real.InferenceSession(path, sess_options, providers=[CPU])
        outer = self

        class Session:  # reports the providers it was given, runs on CPU
            def get_providers(self):
                return list(providers)

            def disable_fallback(self):
                outer.fallbacks_disabled.append(providers[0])

            def run(self, names, feeds):
                outer.runs.append((providers[0], feeds["images"].shape[:3]))
                return session.run(names, feeds)

            def __getattr__(self, name):
                return getattr(session, name)

        return Session()
