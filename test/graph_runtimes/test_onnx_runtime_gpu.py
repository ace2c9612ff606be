"""The onnxruntime backend on onnxruntime-gpu's TensorRT and CUDA providers, as a GPU host's
ONNX Runtime decides: ONNX Runtime's own Python wrapper runs, with only what needs a GPU replaced
(onnx_runtime_stand_in, which quotes each library's words with their source)."""

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from helpers import built_once, exported_before_the_parts, structured_image
from onnx_runtime_stand_in import (
    MISSING_PROFILE,
    TENSORRT_LIBRARIES_MISSING,
    GpuOnnxRuntime,
    tensorrt_refusal,
)

from depthclip_ros.errors import ModelLoadError
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.file_identity import sha256_file
from depthclip_ros.export import graph as export
from depthclip_ros.graph_runtimes.onnx_providers import (
    CPU,
    CUDA,
    ENGINE_LOCK,
    GRAPH_PART_IO,
    TENSORRT,
    graph_parts,
    providers_for,
    tensorrt_cache_folder,
    tensorrt_engine_folder,
    tensorrt_profile,
    with_profile,
)
from depthclip_ros.graph_runtimes.onnx_runtime import OnnxDepthClip

NETWORK = (96, 128)  # the test configs' network input (height, width)
# ONNX Runtime's Python wrappers the stand-in runs: the installed one's (1.32) and those of the
# releases GPU hosts and Jetsons have (1.18 to 1.22 ignore enable_fallback=0; before 1.24 no
# graph-assignment reading).
WRAPPERS = [None, "1.18.0", "1.22.0", "1.23.2"]


@pytest.fixture(scope="module")
def any_size_graph(tiny_checkpoint, tmp_path_factory):
    """A tiny any-size graph (its preprocessing resizes with antialiasing) and its config."""
    from depthclip_ros.config.parameters import DepthClipConfig

    def config_in(folder):
        return DepthClipConfig(
            model=tiny_checkpoint,
            device="cpu",
            cache_dir=str(folder / "cache"),
            temperature=1.0,
            input_width=NETWORK[1],
            input_height=NETWORK[0],
        )

    def build(folder):
        export.export(config_in(folder), folder / "m.onnx")

    folder = built_once(tmp_path_factory, "onnx-runtime-gpu", build)
    return config_in(folder), folder / "m.onnx"


@pytest.fixture
def on_gpu(any_size_graph, tmp_path, monkeypatch):
    """open(runtime, max_batch=1, **config changes) -> the model on cuda:1 of a GPU host's
    onnxruntime (`runtime`), loaded as the node loads it, its TensorRT cache in this test's
    folder."""
    from depthclip_ros.model_loading import load_estimator

    config, path = any_size_graph

    def open_model(runtime, max_batch=1, **changes):
        runtime.install(monkeypatch)
        settings = dict(
            model=str(path),
            backend="onnxruntime",
            device="cuda:1",
            tensorrt_cache_dir=str(tmp_path / "t"),
        )
        model = load_estimator(config.replace(**{**settings, **changes}), max_batch)
        assert isinstance(model, OnnxDepthClip)
        return model

    return open_model


@pytest.fixture
def cpu_model(any_size_graph):
    config, path = any_size_graph
    return OnnxDepthClip(config.replace(model=str(path)))


def warnings_of(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.name == "depthclip_ros"]


def test_provider_chain_and_its_fallback_order(tmp_path):
    every = [TENSORRT, CUDA, CPU]
    assert providers_for("cpu", "fp16", tmp_path, every) == [(CPU, {})]
    chain = providers_for("cuda:1", "fp16", tmp_path, every, cudnn_search="exhaustive")
    assert [name for name, _ in chain] == [TENSORRT, CUDA, CPU]
    tensorrt = chain[0][1]
    assert (tensorrt["device_id"], tensorrt["trt_fp16_enable"]) == ("1", "True")
    assert tensorrt["trt_engine_cache_path"] == str(tmp_path)
    assert chain[1][1] == {"device_id": "1", "cudnn_conv_algo_search": "EXHAUSTIVE"}
    assert providers_for("cuda", "fp32", tmp_path, every)[0][1]["trt_fp16_enable"] == "False"
    no_tensorrt = providers_for("cuda", "fp16", tmp_path, [CUDA, CPU])
    assert [name for name, _ in no_tensorrt] == [CUDA, CPU]
    assert no_tensorrt[0][1]["cudnn_conv_algo_search"] == "HEURISTIC"  # the parameter's default
    assert providers_for("cuda", "fp32", tmp_path, [CPU]) == [(CPU, {})]
    with pytest.raises(ModelLoadError, match="has no TensorRT provider"):
        providers_for("cuda", "fp32", tmp_path, [CUDA, CPU], choice="tensorrt")


def test_engines_are_kept_per_file_content_and_one_per_largest_batch(tmp_path):
    """A re-export at the same path with other weights gets its own engine cache; the trunk's
    profile is its fixed input size, batches 1..max_batch, its kernels chosen for max_batch."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"weights A")
    first = tensorrt_cache_folder(tmp_path / "trt", sha256_file(model), "fp16")
    model.write_bytes(b"weights B")
    second = tensorrt_cache_folder(tmp_path / "trt", sha256_file(model), "fp16")
    assert first != second and first.parent == second.parent == tmp_path / "trt"
    assert tensorrt_cache_folder(tmp_path, "ab" * 32, "fp32").name == "abababababababab-fp32"
    profile = tensorrt_profile(("batch", 3, 416, 544), max_batch=4)
    assert profile == {
        "trt_profile_min_shapes": "network_input:1x3x416x544",
        "trt_profile_opt_shapes": "network_input:4x3x416x544",
        "trt_profile_max_shapes": "network_input:4x3x416x544",
    }
    folder = tensorrt_engine_folder(first, 4)
    assert folder == first / "trunk-batch4"
    chain = with_profile(
        providers_for("cuda", "fp16", first, [TENSORRT, CUDA, CPU]), profile, folder
    )
    assert chain[0][1]["trt_engine_cache_path"] == str(folder)
    assert chain[0][1]["trt_timing_cache_path"] == str(first)  # one timing cache for all


def test_tensorrt_refuses_the_whole_graph_and_takes_its_trunk(any_size_graph, tmp_path):
    """The whole any-size graph with a profile for its images (what the package passed before)
    is refused as ORT refuses it: its antialiased Resize splits the graph and the part after it
    has no profile. The trunk alone has a fixed input size and is taken."""
    _, path = any_size_graph
    old_profile = {"trt_profile_min_shapes": "images:1x96x128x3,text_features:8x2,bins:2"}
    refusal = tensorrt_refusal(str(path), old_profile)
    assert refusal.startswith(MISSING_PROFILE)
    parts = graph_parts(path, tmp_path / "parts")
    assert sorted(parts) == sorted(GRAPH_PART_IO)
    trunk = onnx.load(str(parts["trunk"])).graph
    (network_input,) = trunk.input
    dims = [d.dim_value or d.dim_param for d in network_input.type.tensor_type.shape.dim]
    assert dims[1:] == [3, *NETWORK] and isinstance(dims[0], str)  # only the batch is dynamic
    assert "Resize" not in {n.op_type for n in trunk.node}
    pre = onnx.load(str(parts["preprocessing"])).graph
    assert any(a.name == "antialias" and a.i == 1 for n in pre.node for a in n.attribute)
    profile = tensorrt_profile(("b", 3, *NETWORK), 2)
    assert tensorrt_refusal(str(parts["trunk"]), profile) == ""
    mtime = parts["trunk"].stat().st_mtime_ns
    assert graph_parts(path, tmp_path / "parts")["trunk"].stat().st_mtime_ns == mtime  # kept


def test_onnxruntimes_own_fallback_would_move_a_model_to_gpu_0(any_size_graph, monkeypatch, capfd):
    """The stand-in runs ONNX Runtime's wrapper: without libnvinfer its creation-time fallback
    re-creates the session on CUDA with no options (device 0), saying so on stdout only. The
    package turns that fallback off (next tests)."""
    _, path = any_size_graph
    runtime = GpuOnnxRuntime(tensorrt_libraries=False).install(monkeypatch)
    session = onnxruntime.InferenceSession(
        str(path),
        providers=[TENSORRT, CUDA, CPU],
        provider_options=[{"device_id": "1"}, {"device_id": "1"}, {}],
    )
    assert session.get_providers()[0] == CUDA
    assert runtime.sessions[-1] == [(CUDA, {}), (CPU, {})]  # device_id 1 lost
    out = capfd.readouterr().out
    assert "EP Error" in out and "Please install TensorRT libraries" in out


@pytest.mark.parametrize("wrapper", [None, "1.18.0", "1.22.0"])
def test_an_old_wrapper_falls_back_whatever_enable_fallback_says(
    any_size_graph, monkeypatch, capfd, wrapper
):
    """ONNX Runtime's own rule, in its wrappers: on a host with one GPU, a session asked for
    on GPU 1 with enable_fallback=0 raises from 1.23 on; before, it is re-created on other
    providers without their options (1.18: CUDA on GPU 0, where TensorRT is installed; 1.22:
    the CPU) and 'EP Error' printed."""
    _, path = any_size_graph
    runtime = GpuOnnxRuntime(gpus=1, wrapper=wrapper).install(monkeypatch)
    opened = dict(
        providers=[CUDA, CPU], provider_options=[{"device_id": "1"}, {}], enable_fallback=0
    )
    if wrapper is None:
        with pytest.raises(RuntimeError, match="invalid device ordinal"):
            onnxruntime.InferenceSession(str(path), **opened)
        return
    session = onnxruntime.InferenceSession(str(path), **opened)
    fallback = [CUDA, CPU] if wrapper == "1.18.0" else [CPU]
    assert session.get_providers() == fallback
    assert runtime.sessions[-1] == [(name, {}) for name in fallback]  # device_id 1 lost
    assert "EP Error" in capfd.readouterr().out


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_a_gpu_the_host_lacks_is_one_warning_on_every_wrapper(on_gpu, caplog, capfd, wrapper):
    """cuda:1 on a host with one GPU: one warning naming CUDA's error, the CPU provider with
    the package's options, nothing on stdout, whichever wrapper (an old one's own fallback
    refused, its print kept off stdout)."""
    runtime = GpuOnnxRuntime(gpus=1, wrapper=wrapper)
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        model = on_gpu(runtime, onnxruntime_providers="cuda")
    (warning,) = warnings_of(caplog)
    assert warning.startswith("CUDAExecutionProvider did not load (")
    assert "invalid device ordinal" in warning and "\n" not in warning
    assert model.provider == CPU and runtime.sessions[-1] == [(CPU, {})]
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_tensorrt_without_its_libraries_is_one_warning_on_the_same_gpu(
    on_gpu, caplog, capfd, wrapper
):
    runtime = GpuOnnxRuntime(tensorrt_libraries=False, wrapper=wrapper)
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        model = on_gpu(runtime)
    (warning,) = warnings_of(caplog)
    assert "lists TensorRT, but TensorRT's libraries (libnvinfer) do not load" in warning
    assert "device_id 1" in warning and "\n" not in warning
    assert model.provider == CUDA and model.device == "cuda:1"
    cuda = {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC"}
    assert runtime.sessions[-1] == [(CUDA, cuda), (CPU, {})]
    assert "EP Error" not in capfd.readouterr().out
    np.testing.assert_array_equal(model.predict(structured_image(48, 64)).depth.shape, (1, 48, 64))


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_tensorrt_asked_for_alone_fails_in_one_line(on_gpu, capfd, wrapper):
    with pytest.raises(ModelLoadError) as err:
        runtime = GpuOnnxRuntime(tensorrt_libraries=False, wrapper=wrapper)
        on_gpu(runtime, onnxruntime_providers="tensorrt")
    message = str(err.value)
    assert message.startswith("onnxruntime_providers tensorrt: ") and "\n" not in message
    # ONNX Runtime's own words, without its source location
    words = TENSORRT_LIBRARIES_MISSING.split(") ", 1)[1]
    assert message.endswith(words) if wrapper is None else words[:60] in message
    assert "EP Error" not in capfd.readouterr().out


def test_a_cuda_provider_that_does_not_load_is_one_warning(on_gpu, caplog):
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        model = on_gpu(GpuOnnxRuntime(cuda_libraries=False), onnxruntime_providers="cuda")
    (warning,) = warnings_of(caplog)
    assert warning.startswith("CUDAExecutionProvider did not load (onnxruntime left it out")
    assert model.provider == CPU and model.device == "cpu"


def test_tensorrt_runs_the_trunk_for_every_camera_size(on_gpu, cpu_model, caplog):
    """One engine, built for batch 1 at start and for a larger max_batch at camera_info (one
    engine kept: the batch-1 one released), serves every camera size; the preprocessing and
    the head run on CUDA on the same GPU; the depth equals the CPU's whole graph."""
    runtime = GpuOnnxRuntime()
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        model = on_gpu(runtime)
    assert warnings_of(caplog) == [] and model.provider == TENSORRT and model.prepares_image_sizes
    tensorrt = [s for s in runtime.sessions if s[0][0] == TENSORRT]
    assert [[p for p, _ in s] for s in tensorrt] == [[TENSORRT]]  # all of the trunk, or nothing
    assert tensorrt[0][0][1]["device_id"] == "1"
    assert Path(tensorrt[0][0][1]["trt_engine_cache_path"]).name == "trunk-batch1"
    cuda = [s for s in runtime.sessions if s[0][0] == CUDA]
    assert len(cuda) == 2 and all(s[0][1]["device_id"] == "1" for s in cuda)
    # TensorRT alone by construction: its session refuses the CPU provider (no fallback).
    first = [s[0][0] for s in runtime.sessions if s[0][0] != CPU]
    assert [f == TENSORRT for f in first] == runtime.no_cpu_fallback[-len(first) :]
    model.warm_up((48, 64), max_batch=3)
    model.warm_up((72, 40), max_batch=3)  # a second camera: no other engine
    tensorrt = [s for s in runtime.sessions if s[0][0] == TENSORRT]
    assert [Path(s[0][1]["trt_engine_cache_path"]).name for s in tensorrt] == [
        "trunk-batch1",
        "trunk-batch3",
    ]
    for size in ((48, 64), (72, 40), (480, 640)):
        frames = np.stack([structured_image(*size, seed=i) for i in range(7)])
        runtime.runs.clear()
        result = model.predict(frames)
        trunk_runs = [shape for provider, shape in runtime.runs if provider == TENSORRT]
        assert trunk_runs == [(3, 3, NETWORK[0])] * 2 + [(1, 3, NETWORK[0])]
        expected = cpu_model.predict(frames)
        np.testing.assert_allclose(result.depth, expected.depth, atol=1e-5)
        np.testing.assert_allclose(result.bin_probs, expected.bin_probs, atol=1e-6)
    assert len([s for s in runtime.sessions if s[0][0] == TENSORRT]) == 2


def test_a_node_with_max_batch_gets_one_engine_at_load_and_any_number_of_bins(
    any_size_graph, on_gpu, cpu_model
):
    """Loaded for a node's max_batch, TensorRT builds that engine alone (no batch-1 engine
    first), tuned for that batch; warm-ups up to it build nothing. The bins run in the head on
    CUDA, so more bins than any profile range (80) take the same engine."""
    runtime = GpuOnnxRuntime()
    model = on_gpu(runtime, max_batch=3)
    tensorrt = [s[0][1] for s in runtime.sessions if s[0][0] == TENSORRT]
    assert [Path(t["trt_engine_cache_path"]).name for t in tensorrt] == ["trunk-batch3"]
    assert tensorrt[0]["trt_profile_opt_shapes"].startswith("network_input:3x")
    model.warm_up((48, 64), max_batch=3)
    model.warm_up((48, 64), max_batch=2)
    assert len([s for s in runtime.sessions if s[0][0] == TENSORRT]) == 1
    bins = tuple(1.0 + 0.05 * i for i in range(80))
    words = tuple(f"w{i}" for i in range(80))
    config, _ = any_size_graph  # the torch text encoder caches these prompts' features
    DepthClip(config.replace(depth_bins=bins, depth_tokens=words))
    for estimator in (model, cpu_model):
        estimator.update_config(estimator.config.replace(depth_bins=bins, depth_tokens=words))
    frames = np.stack([structured_image(48, 64, seed=i) for i in range(3)])
    result = model.predict(frames)
    assert result.bin_probs.shape[1] == 80
    np.testing.assert_allclose(result.depth, cpu_model.predict(frames).depth, atol=1e-5)
    assert {p for p, shape in runtime.runs if shape[0] == 3} == {TENSORRT, CUDA}


def test_a_graph_exported_before_the_parts_runs_on_cuda_with_one_warning(
    any_size_graph, on_gpu, tmp_path, caplog
):
    config, path = any_size_graph
    old = exported_before_the_parts(path, tmp_path / "old.onnx")
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        model = on_gpu(GpuOnnxRuntime(), model=str(old))
    (warning,) = warnings_of(caplog)
    assert "TensorRT cannot take old.onnx (exported before its trunk could run alone" in warning
    assert "device_id 1" in warning and model.provider == CUDA
    with pytest.raises(ModelLoadError, match="^onnxruntime_providers tensorrt: exported before"):
        on_gpu(GpuOnnxRuntime(), model=str(old), onnxruntime_providers="tensorrt")


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_a_stale_engine_cache_is_cleared_and_built_once(on_gpu, caplog, wrapper):
    runtime = GpuOnnxRuntime(wrapper=wrapper)
    on_gpu(runtime)
    (engine,) = Path(runtime.sessions[-3][0][1]["trt_engine_cache_path"]).glob("*.engine")
    engine.write_bytes(b"an engine of another TensorRT")
    runtime = GpuOnnxRuntime(wrapper=wrapper)
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        model = on_gpu(runtime)
    (warning,) = warnings_of(caplog)
    assert "cannot be read" in warning and "building it again" in warning
    tensorrt = [s for s in runtime.sessions if s[0][0] == TENSORRT]
    assert model.provider == TENSORRT and len(tensorrt) == 2  # stale, rebuilt
    folder = Path(tensorrt[-1][0][1]["trt_engine_cache_path"])
    assert folder.parent.name.endswith(f"-fp32-ort{runtime.__version__}-trtunknown")


def test_processes_sharing_an_engine_cache_take_turns(on_gpu, monkeypatch):
    """ORT writes an engine file in place: a second process must not read it half written (and
    clear the folder as stale) while the first builds. Every build, read or clear of a file's
    engines holds the cache's lock; a process that finds it held says so once and waits, then
    reads the engine the other built."""
    import fcntl
    import threading

    from onnx_runtime_stand_in import _Session

    from depthclip_ros.files import exclusive_lock

    runtime = GpuOnnxRuntime()
    built = _Session._build_engine
    held_while_building = []

    def build_checking_the_lock(self, folder):
        lock = folder.parent / ENGINE_LOCK
        with open(lock, "a+b") as other:  # another process's open of the lock file
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held_while_building.append(False)
                fcntl.flock(other, fcntl.LOCK_UN)
            except BlockingIOError:
                held_while_building.append(True)
        built(self, folder)

    monkeypatch.setattr(_Session, "_build_engine", build_checking_the_lock)
    first = on_gpu(runtime)
    assert first.provider == TENSORRT and held_while_building == [True]
    cache = Path(runtime.sessions[-3][0][1]["trt_engine_cache_path"]).parent
    # Another process builds (holds the lock): this one waits, said once, then opens.
    waiting = threading.Event()
    opened = []

    class Said(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("waiting for another process"):
                waiting.set()

    said = Said()
    logging.getLogger("depthclip_ros").addHandler(said)
    try:
        with exclusive_lock(cache / ENGINE_LOCK):
            opener = threading.Thread(target=lambda: opened.append(on_gpu(GpuOnnxRuntime())))
            opener.start()
            assert waiting.wait(timeout=60)  # it waits for the lock (not a timing assertion)
            assert opened == []
        opener.join(timeout=60)
    finally:
        logging.getLogger("depthclip_ros").removeHandler(said)
    (second,) = opened
    assert second.provider == TENSORRT and held_while_building == [True, True]


def test_a_process_holding_the_engine_lock_is_named_while_another_waits(on_gpu, monkeypatch):
    """The lock's holder writes who it is; a process waiting for it names that process every
    ENGINE_LOCK_REPORT_SECONDS (here 0.3 s) as long as it waits, then opens once it is
    released."""
    import subprocess
    import sys
    import threading

    from depthclip_ros.graph_runtimes import tensorrt_trunk

    runtime = GpuOnnxRuntime()
    on_gpu(runtime)
    cache = Path(runtime.sessions[-3][0][1]["trt_engine_cache_path"]).parent
    holding = (
        "import sys, time\nfrom depthclip_ros.files import exclusive_lock\n"
        "with exclusive_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holding, str(cache / ENGINE_LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )
    named = threading.Event()

    class Said(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("still waiting") and f"for process {holder.pid} (" in message:
                named.set()

    said = Said()
    logging.getLogger("depthclip_ros").addHandler(said)
    monkeypatch.setattr(tensorrt_trunk, "ENGINE_LOCK_REPORT_SECONDS", 0.3)
    opened = []
    try:
        assert holder.stdout.readline().strip() == "held"
        opener = threading.Thread(target=lambda: opened.append(on_gpu(GpuOnnxRuntime())))
        opener.start()
        assert named.wait(timeout=60)  # an event, not a timing assertion
        assert opened == []
    finally:
        holder.kill()
        holder.wait()
        logging.getLogger("depthclip_ros").removeHandler(said)
    opener.join(timeout=60)
    (second,) = opened
    assert second.provider == TENSORRT


def test_a_read_only_engine_cache_is_read_without_its_lock(on_gpu, monkeypatch):
    """Engines prebuilt and shipped read-only: where the lock file cannot be made, no process
    can build there either, and the engine is read as before (tested by refusing the lock
    file's creation: this machine's tests run as root, whom file modes do not stop)."""
    import builtins

    on_gpu(GpuOnnxRuntime())  # the engine built and cached
    real_open = builtins.open

    def read_only(file, mode="r", *args, **kwargs):
        if Path(str(file)).name == ENGINE_LOCK:
            raise PermissionError(13, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only)
    runtime = GpuOnnxRuntime()
    model = on_gpu(runtime)
    assert model.provider == TENSORRT


def test_the_cuda_provider_chooses_its_kernels_at_camera_info(on_gpu):
    """Every batch up to max_batch at the camera's size runs at warm-up, so cuDNN's algorithm
    choice for each input shape is not paid mid-stream."""
    runtime = GpuOnnxRuntime()
    model = on_gpu(runtime, onnxruntime_providers="cuda", cudnn_conv_algo_search="exhaustive")
    assert runtime.sessions[-1][0] == (
        CUDA,
        {"device_id": "1", "cudnn_conv_algo_search": "EXHAUSTIVE"},
    )
    runtime.runs.clear()
    model.warm_up((48, 64), max_batch=3)
    shapes = [shape for provider, shape in runtime.runs if provider == CUDA]
    assert {(2, 48, 64), (3, 48, 64), (1, 48, 64)} <= set(shapes)
    runtime.runs.clear()
    model.predict(np.zeros((3, 48, 64, 3), np.uint8))
    assert runtime.runs == [(CUDA, (3, 48, 64))]


@pytest.mark.parametrize("wrapper", [None, "1.23.2"])
def test_a_placement_onnxruntime_cannot_report_is_said_so(on_gpu, wrapper):
    """Where onnxruntime has no graph-assignment reading (1.23.2: the Humble pin, Jetson
    wheels), the start line (runtime) and the placement say so instead of passing unlooked."""
    model = on_gpu(GpuOnnxRuntime(wrapper=wrapper), onnxruntime_providers="cuda")
    words = f"placement not reported by onnxruntime {wrapper}"
    assert (words in model.runtime) == (wrapper is not None)
    assert (words in model.placement) == (wrapper is not None)
    assert model.placement.startswith("whole graph CUDA")


def test_nodes_on_the_cpu_and_an_old_onnxruntime_are_one_warning_each(on_gpu, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        on_gpu(GpuOnnxRuntime(resize_on_cpu=True), onnxruntime_providers="cuda")
    (warning,) = warnings_of(caplog)
    assert "placed 2 Resize of m.onnx on the CPU provider" in warning
    caplog.clear()
    monkeypatch.setattr(onnxruntime, "__version__", "1.17.3")
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        on_gpu(GpuOnnxRuntime(), onnxruntime_providers="cuda")
    (warning,) = warnings_of(caplog)
    assert "onnxruntime 1.17.3 runs the graph's Resize (opset 18) on the CPU" in warning


def test_tensorrt_measures_the_depth_figure_at_warm_up(on_gpu):
    """The reference frames (640x480) cost no engine of their own: measured at the first
    warm-up, whatever the camera's size."""
    runtime = GpuOnnxRuntime()
    model = on_gpu(runtime)
    model.warm_up((48, 64), max_batch=1)
    assert model.depth_figure.frames == 3 and TENSORRT in model.depth_figure.where
    assert model.depth_figure.max < 1e-5
