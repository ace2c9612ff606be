"""The CPU's lower precisions, each against fp32: int8 graphs (depthclip-export --precision int8,
calibrated on camera frames), the OpenVINO backend (fp32, bf16, int8) and torch bf16; the
combinations that do not exist, refused in one line. Timings are the benchmark's."""

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from helpers import (
    built_once,
    copy_of_export,
    exported_before_the_parts,
    model_config,
    structured_image,
)

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.config.params_files import preset_configs
from depthclip_ros.errors import ConfigError, ModelLoadError
from depthclip_ros.estimator import cpu_features
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.reference_frames import load_reference, reference_path
from depthclip_ros.estimator.result import OUTPUT_FIELDS
from depthclip_ros.export import calibration, quantization
from depthclip_ros.export.graph import export
from depthclip_ros.graph_runtimes.exported_graph import (
    INT8_AGREEMENT,
    INT8_MEASURED_WITH,
    INT8_WEIGHT_BITS,
    precision_detail,
)
from depthclip_ros.graph_runtimes.onnx_runtime import OnnxDepthClip
from depthclip_ros.graph_runtimes.openvino_runtime import (
    COMPILED_SHAPES,
    OpenVinoDepthClip,
    compile_properties,
    lowers_float_precision,
)
from depthclip_ros.model_loading import load_estimator
from depthclip_ros.synthetic_scenes import SCENES, render_scene
from depthclip_ros.tools import export as export_cli

SIZE = (120, 160)  # (height, width) of the test camera
# Bounds, tiny random CLIP at temperature 1.0, measured here (AMD EPYC, AVX-512 VNNI): bf16
# 1.6e-3 m from fp32. The int8 bounds are the figures the export measured (its metadata), not
# constants: ONNX Runtime's exact int8 reproduces them; OpenVINO's int8 kernels round otherwise
# (measured: p99 within 1.1x of ONNX Runtime's, median within 1.3x).
BF16_ATOL = 0.01
OPENVINO_INT8_FACTOR = 2.0


def frames(count, seed=0):
    return [structured_image(*SIZE, seed=seed + i) for i in range(count)]


@pytest.fixture
def tiny_config(make_config):
    return make_config(input_width=128, input_height=96)


@pytest.fixture(scope="module")
def int8_graph(tiny_checkpoint, tmp_path_factory):
    """The tiny CLIP's int8 graph (tiny_config's), calibrated on 8 structured frames (2 held
    out), and the frames: exported once for the tests here, which read it and write beside
    their own copies."""
    shots = frames(8)

    def build(folder):
        config = model_config(tiny_checkpoint, folder / "cache", input_width=128, input_height=96)
        quantization.export_int8(
            config, folder / "int8.onnx", shots, "test frames", None, preset_configs()
        )

    return built_once(tmp_path_factory, "cpu-precisions-int8", build) / "int8.onnx", shots


@pytest.fixture(scope="module")
def exported_fp32(tiny_checkpoint, tmp_path_factory):
    """tiny_config's fp32 graph as depthclip-export writes it, exported once for the tests
    here."""

    def build(folder):
        config = model_config(tiny_checkpoint, folder / "cache", input_width=128, input_height=96)
        export(config, folder / "fp32.onnx")

    return built_once(tmp_path_factory, "cpu-precisions-fp32", build) / "fp32.onnx"


@pytest.fixture
def fp32_graph(exported_fp32, tmp_path):
    """A copy of it in the test's own folder (its text features and reference frames beside),
    free to change."""
    return copy_of_export(exported_fp32, tmp_path / "fp32.onnx")


def run_on(config, path, backend, **changes):
    return load_estimator(config.replace(model=str(path), backend=backend, **changes))


def graph_metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_int8_metadata_states_the_difference_measured_on_the_held_out_frames(
    fp32_graph, tiny_config, int8_graph, tmp_path
):
    path, shots = int8_graph
    meta = graph_metadata(path)
    assert meta["precision"] == "int8" and meta["int8_held_out_frames"] == "2"
    assert meta["int8_calibration"] == "test frames: 5 frames"  # frame 5 left between
    assert meta[INT8_WEIGHT_BITS] == "7"
    assert meta[INT8_MEASURED_WITH] == (
        f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider, "
        f"{cpu_features.cpu_description()}"
    )
    # The figures again, independently: the fp32 graph and the int8 graph on frames 6 and 7.
    fp32_path = fp32_graph
    held = [shots[6], shots[7]]
    ref = np.concatenate(
        [run_on(tiny_config, fp32_path, "onnxruntime").predict(f).depth.ravel() for f in held]
    )
    got = np.concatenate(
        [run_on(tiny_config, path, "onnxruntime").predict(f).depth.ravel() for f in held]
    )
    diff = np.abs(ref - got)
    assert float(meta["int8_depth_difference_median_m"]) == pytest.approx(np.median(diff), 1e-4)
    assert float(meta["int8_depth_difference_p99_m"]) == pytest.approx(
        np.percentile(diff, 99), 1e-4
    )
    ratio = np.maximum(ref / got, got / ref)
    assert float(meta[INT8_AGREEMENT]) == pytest.approx(np.mean(ratio < 1.25), abs=1e-6)
    assert "7-bit weights (at export" in precision_detail(meta)
    assert meta[INT8_MEASURED_WITH] in precision_detail(meta)


def test_int8_weights_are_seven_bit(int8_graph):
    """|w| <= 64 in every quantised weight: two u8 x s8 products sum within 16 bits."""
    graph = onnx.load(str(int8_graph[0])).graph
    weights = [
        onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_quantized")
    ]
    weights = [w for w in weights if w.dtype == np.int8]
    assert len(weights) >= 5
    assert max(int(np.abs(w.astype(int)).max()) for w in weights) == 64  # all of 7 bits


def test_int8_quantises_the_trunk_and_leaves_the_head_float(int8_graph):
    graph = onnx.load(str(int8_graph[0])).graph
    producer = {out: n for n in graph.node for out in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(producer[n.input[1]].op_type == "DequantizeLinear" for n in convs)
    head = [n for n in graph.node if n.op_type in ("MatMul", "Softmax", "ReduceL2", "Resize")]
    assert len(head) >= 4
    for node in head:
        for name in node.input:
            assert name not in producer or producer[name].op_type != "DequantizeLinear", node.name
    for node in graph.node:  # nothing after layer4 is re-quantised
        if node.op_type == "QuantizeLinear":
            assert producer[node.input[0]].op_type not in ("MatMul", "Softmax")


def test_the_reference_frames_are_the_held_out_frames_with_their_fp32_depth(
    fp32_graph, tiny_config, int8_graph, tmp_path
):
    path, shots = int8_graph
    reference = load_reference(path)
    np.testing.assert_array_equal(reference.frames, np.stack([shots[6], shots[7]]))
    fp32_path = fp32_graph
    fp32 = run_on(tiny_config, fp32_path, "onnxruntime")
    want = np.stack([fp32.predict(f).depth[0] for f in reference.frames])
    np.testing.assert_allclose(reference.depth, want, atol=1e-6)
    np.testing.assert_array_equal(reference.bins, np.asarray(tiny_config.depth_bins, np.float32))
    assert reference.temperature == tiny_config.temperature
    assert cpu_features.cpu_description() in reference.measured_with


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_int8_graph_measures_its_figure_where_it_runs(tiny_config, int8_graph, backend):
    """The warm-up figure, on the reference frames: ONNX Runtime's exact int8 reproduces the
    export's figure; OpenVINO's kernels give their own, within a bound of it."""
    path, shots = int8_graph
    meta = graph_metadata(path)
    median = float(meta["int8_depth_difference_median_m"])
    p99 = float(meta["int8_depth_difference_p99_m"])
    model = run_on(tiny_config, path, backend)
    assert model.precision == "int8" and model.depth_figure is None
    model.warm_up()
    figure = model.depth_figure
    assert figure.frames == 2 and backend in figure.where and "device" in figure.where
    assert cpu_features.cpu_description() in figure.where
    if backend == "onnxruntime":
        assert figure.median == pytest.approx(median, rel=1e-4, abs=1e-9)
        assert figure.p99 == pytest.approx(p99, rel=1e-4, abs=1e-9)
        assert figure.agreement == pytest.approx(float(meta[INT8_AGREEMENT]), abs=1e-6)
    else:
        assert figure.p99 <= OPENVINO_INT8_FACTOR * p99
        assert figure.median <= OPENVINO_INT8_FACTOR * median
    assert figure.words in model.depth_figure_words
    # Against the torch core's fp32 depth on the calibration frames, within the figure's max.
    reference = DepthClip(tiny_config)
    for frame in shots[:3]:
        got, want = model.predict(frame), reference.predict(frame)
        np.testing.assert_allclose(got.depth, want.depth, atol=2 * figure.max)


def test_an_fp32_graph_measures_zero_on_its_own_runtime(fp32_graph, tiny_config, tmp_path):
    """The demo scenes are an fp32 graph's reference: ONNX Runtime gives back the depth it
    stored; OpenVINO's fp32 kernels differ by rounding."""
    path = fp32_graph
    reference = load_reference(path)
    assert reference.frames.shape == (3, 480, 640, 3)
    ort = run_on(tiny_config, path, "onnxruntime")
    ort.warm_up()
    assert ort.depth_figure.max == 0.0 and ort.depth_figure.agreement == 1.0
    ov = run_on(tiny_config, path, "openvino", openvino_cache_dir=str(tmp_path / "ov"))
    ov.warm_up()
    assert 0 < ov.depth_figure.max < 1e-4


def test_a_graph_without_reference_frames_says_how_to_get_them(
    fp32_graph, tiny_config, tmp_path, caplog
):
    path = fp32_graph
    stored = reference_path(path)
    stored.unlink()
    model = run_on(tiny_config, path, "onnxruntime")
    model.warm_up()
    assert model.depth_figure is None
    assert "no fp32_reference.npz beside the graph: export it again" in model.depth_figure_words
    stored.write_bytes(b"not a zip")  # damaged: one warning, the model runs
    with caplog.at_level("WARNING", logger="depthclip_ros"):
        model = run_on(tiny_config, path, "onnxruntime")
        model.warm_up()
    (line,) = ours(caplog)
    assert "cannot be read" in line and model.depth_figure is None
    caplog.clear()
    other = tmp_path / "other.onnx"  # another model's reference frames (another embedding)
    export(tiny_config.replace(input_width=96, input_height=64), other)
    stored.write_bytes(reference_path(other).read_bytes())
    with np.load(stored) as data:
        arrays = dict(data)
    arrays["text_features"] = arrays["text_features"][:5]  # not this graph's embedding size
    with open(stored, "wb") as f:
        np.savez(f, **arrays)
    with caplog.at_level("WARNING", logger="depthclip_ros"):
        model = run_on(tiny_config, path, "onnxruntime")
        model.warm_up()  # the model still warms up and runs
    (line,) = ours(caplog)
    assert "does not run on fp32.onnx" in line and model.depth_figure is None
    assert model.depth_figure_words in line
    assert model.predict(structured_image(*SIZE)).depth.shape == (1, *SIZE)


def ours(caplog) -> list:
    """The package's log lines among those captured."""
    return [r.getMessage() for r in caplog.records if r.name == "depthclip_ros"]


def eight_bit_graph(path, tmp_path):
    """The int8 graph's file as exported before 7-bit weights said so in its metadata."""
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props if p.key != INT8_WEIGHT_BITS}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta)
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    old.with_name("old_text_features").mkdir()
    for item in path.with_name(path.stem + "_text_features").iterdir():
        (old.with_name("old_text_features") / item.name).write_bytes(item.read_bytes())
    return old


def as_cpu(monkeypatch, cpuinfo, machine):
    """This process sees another CPU: its /proc/cpuinfo text and machine name."""
    text = (Path(__file__).parents[1] / "support" / "cpuinfo" / cpuinfo).read_text()
    parsed = cpu_features.parse_cpuinfo(text)
    monkeypatch.setattr(cpu_features, "cpu_model_and_flags", lambda: parsed)
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: machine)


def test_an_eight_bit_int8_graph_gets_exact_kernels_without_vnni(
    tiny_config, int8_graph, tmp_path, monkeypatch, caplog
):
    """The decision and its words (test_emulated_cpus runs it on an emulated AVX2 CPU)."""
    old = eight_bit_graph(int8_graph[0], tmp_path)
    as_cpu(monkeypatch, "amd_zen4.txt", "x86_64")  # VNNI: its default kernels are exact
    with caplog.at_level("WARNING", logger="depthclip_ros"):
        assert "exact" not in run_on(tiny_config, old, "onnxruntime").runtime
        run_on(tiny_config, old, "openvino")
    assert ours(caplog) == []
    as_cpu(monkeypatch, "intel_haswell.txt", "x86_64")
    with caplog.at_level("WARNING", logger="depthclip_ros"):
        model = run_on(tiny_config, old, "onnxruntime")
        assert "exact U8U8 int8 kernels" in model.runtime
        run_on(tiny_config, int8_graph[0], "onnxruntime")  # 7-bit: nothing to say
        run_on(tiny_config, old, "openvino")
    ort_line, ov_line = ours(caplog)
    assert "i7-4770" in ort_line and "no VNNI" in ort_line and "export it again" in ort_line
    assert "saturating 16-bit sums" in ov_line and "i7-4770" in ov_line


def test_openvino_on_arm_names_the_int8_runtime_there(
    tiny_config, int8_graph, tmp_path, monkeypatch, caplog
):
    as_cpu(monkeypatch, "raspberry_pi_5.txt", "aarch64")
    with caplog.at_level("WARNING", logger="depthclip_ros"):
        run_on(tiny_config, int8_graph[0], "onnxruntime")
        run_on(tiny_config, int8_graph[0], "openvino")
    (line,) = ours(caplog)
    assert "Cortex-A76" in line and "backend onnxruntime is the int8 runtime on Arm" in line


@pytest.mark.parametrize(
    "cpuinfo,machine,name,flags,saturates,bf16",
    [
        (
            "raspberry_pi_5.txt",
            "aarch64",
            "Arm Cortex-A76, Raspberry Pi 5 Model B Rev 1.0",
            ["asimddp"],
            False,
            False,
        ),
        (
            "aws_graviton3.txt",
            "aarch64",
            "Arm Neoverse-V1",
            ["asimddp", "i8mm", "bf16", "sve"],
            False,
            True,
        ),
        (
            "amd_zen4.txt",
            "x86_64",
            "AMD Ryzen 9 7950X 16-Core Processor",
            ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"],
            False,
            True,
        ),
        (
            "intel_haswell.txt",
            "x86_64",
            "Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz",
            ["avx2"],
            True,
            False,
        ),
    ],
)
def test_cpu_features_read_x86_and_arm_cpuinfo(
    monkeypatch, cpuinfo, machine, name, flags, saturates, bf16
):
    as_cpu(monkeypatch, cpuinfo, machine)
    assert cpu_features.cpu_model_and_flags()[0] == name
    assert cpu_features.speed_flags() == flags
    assert cpu_features.int8_saturates() is saturates
    assert cpu_features.native_bf16() is bf16
    assert cpu_features.cpu_description() == f"{name} ({machine}: {' '.join(flags)})"


def test_openvino_and_onnxruntime_int8_kernels_agree(tiny_config, int8_graph):
    """Both within the bound of the export's figure from each other."""
    path, shots = int8_graph
    p99 = float(graph_metadata(path)["int8_depth_difference_p99_m"])
    ort = run_on(tiny_config, path, "onnxruntime")
    ov = run_on(tiny_config, path, "openvino")
    for frame in shots[:2]:
        diff = np.abs(ov.predict(frame).depth - ort.predict(frame).depth)
        assert np.percentile(diff, 99) <= OPENVINO_INT8_FACTOR * p99


def test_openvino_fp32_equals_onnxruntime_fp32(fp32_graph, tiny_config, tmp_path):
    path = fp32_graph
    ort = run_on(tiny_config, path, "onnxruntime")
    ov = run_on(tiny_config, path, "openvino", openvino_cache_dir=str(tmp_path / "ov"))
    assert isinstance(ov, OpenVinoDepthClip) and ov.precision == "fp32"
    batch = np.stack(frames(2, seed=5))
    for images in (batch[0], batch, structured_image(96, 200)):  # sizes and a batch
        got, want = ov.predict(images), ort.predict(images)
        for name in ("depth", "depth_std", "coarse_depth", "coarse_std"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=1e-4)
        # OpenVINO's and ONNX Runtime's fp32 kernels round differently: measured 8e-4.
        np.testing.assert_allclose(got.bin_probs, want.bin_probs, rtol=3e-3)
    assert list(ov.compiled) == [(1, *SIZE, 7), (2, *SIZE, 7), (1, 96, 200, 7)]
    assert ov.device == "cpu"  # the package's name (the bag tool's CPU check reads it)
    assert any((tmp_path / "ov").iterdir())  # OpenVINO's compiled-model cache


def test_openvino_keeps_a_bounded_number_of_compiled_shapes(fp32_graph, tiny_config, tmp_path):
    path = fp32_graph
    ov = run_on(tiny_config, path, "openvino")
    sizes = [(64 + 8 * i, 96) for i in range(COMPILED_SHAPES + 2)]
    for size in sizes:
        ov.predict(structured_image(*size), arrays=())
    assert list(ov.compiled) == [(1, *s, 7) for s in sizes[-COMPILED_SHAPES:]]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_streams_run_frames_side_by_side_with_the_same_depth(
    tiny_config, int8_graph, backend, monkeypatch
):
    """inference_streams 2: two forwards at once, each on its own share of the threads; begun
    frames give the one-stream model's depth to the bit, in the order asked, and a batch runs
    as one part a stream. The default: one stream."""
    path, shots = int8_graph
    alone = run_on(tiny_config, path, backend, inference_threads=2)
    streams = run_on(tiny_config, path, backend, inference_threads=2, inference_streams=2)
    expected = [alone.predict(shot) for shot in shots[:3]]
    assert alone.frames_in_flight == 1 and streams.cpu_threads == 2
    batches = []
    if backend == "onnxruntime":
        # Each session's own single thread; both forwards run at once: each waits at a
        # barrier the other must reach (one after the other, the first would wait in vain).
        meeting = threading.Barrier(2, timeout=30)
        run = onnxruntime.InferenceSession.run

        def run_beside_another(session, fields, feeds, *args):
            batches.append(len(feeds["images"]))
            meeting.wait()
            return run(session, fields, feeds, *args)

        monkeypatch.setattr(onnxruntime.InferenceSession, "run", run_beside_another)
    ended = threading.Event()
    begun = [streams.begin_predict(shot) for shot in shots[:2]]
    assert streams.frames_in_flight == 2
    begun[0].when_done(ended.set)  # called from the runtime's thread once the forward ends
    assert ended.wait(30) and begun[0].done()
    begun.append(streams.begin_predict(shots[2]))
    if backend == "onnxruntime":
        meeting.wait()  # the third frame's forward meets this thread
    for started, want in zip(begun, expected):
        got = started()
        for field in OUTPUT_FIELDS:
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    if backend == "onnxruntime":
        meeting = threading.Barrier(2, timeout=30)  # the batch's two parts meet each other
    batch = streams.predict(np.stack(shots[:3]))  # 3 frames over 2 streams: 2 + 1
    if backend == "openvino":
        assert {(1, *SIZE, 7), (2, *SIZE, 7)} <= set(streams.compiled)
        assert (3, *SIZE, 7) not in streams.compiled
    else:
        assert sorted(batches[3:]) == [1, 2] and batches[:3] == [1, 1, 1]
    # The parts' depth to the bit (a batch of 2 may round unlike two of 1: the kernels' own).
    monkeypatch.undo()
    parts = [alone.predict(np.stack(shots[:2])), alone.predict(shots[2])]
    for field in ("depth", "bin_probs"):
        want = np.concatenate([getattr(part, field) for part in parts])
        np.testing.assert_array_equal(getattr(batch, field), want)


def test_streams_under_each_runtimes_own_name_and_where_there_are_none(
    tiny_config, int8_graph, caplog
):
    """OpenVINO's own NUM_STREAMS (openvino_properties) is its streams too; ONNX Runtime's
    sessions each take their share of the threads; the torch core runs one forward at a time
    (begun is done) and refuses inference_streams in one line."""
    path, shots = int8_graph
    ov = run_on(tiny_config, path, "openvino", openvino_properties=["NUM_STREAMS=2"])
    ov.predict(shots[0])
    assert ov.frames_in_flight == 2
    ort = run_on(tiny_config, path, "onnxruntime", inference_threads=4, inference_streams=2)
    sessions = [ort._idle.get() for _ in range(2)]
    assert len({id(s) for s in sessions}) == 2 and ort.cpu_threads == 4
    for session in sessions:
        assert session.get_session_options().intra_op_num_threads == 2
    for backend in ("onnxruntime", "openvino"):  # at most one stream a thread, on both
        one = run_on(tiny_config, path, backend, inference_threads=1, inference_streams=2)
        one.predict(shots[0])
        assert one.frames_in_flight == 1 and one.cpu_threads == 1
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        on_cuda = run_on(tiny_config, path, "onnxruntime", device="cuda", inference_streams=2)
    assert on_cuda.frames_in_flight == 1  # CUDA runs one at a time (here: CPU, no GPU build)
    assert "inference_streams 2 runs forwards side by side on the CPU; on cuda" in caplog.text
    core = DepthClip(tiny_config)
    started = core.begin_predict(shots[0])
    assert core.frames_in_flight == 1 and started.done()
    np.testing.assert_array_equal(started().depth, core.predict(shots[0]).depth)
    with pytest.raises(ConfigError, match="inference_streams.*torch backend runs one forward"):
        tiny_config.replace(inference_streams=2)


def test_bf16_where_the_cpu_has_it_and_one_line_where_not(fp32_graph, tiny_config, tmp_path):
    """Each machine checks the branch it has: within the bound of fp32 on a CPU with native
    bf16, the refusal on one without (torch and OpenVINO alike)."""
    path = fp32_graph
    image = structured_image(*SIZE, seed=3)
    reference = DepthClip(tiny_config).predict(image)
    bf16_config = tiny_config.replace(precision="bf16")
    for load in (
        lambda: DepthClip(bf16_config),
        lambda: run_on(bf16_config, path, "openvino"),
    ):
        if not cpu_features.native_bf16():
            with pytest.raises(ModelLoadError, match="no native bf16") as err:
                load()
            assert "\n" not in str(err.value)
            continue
        model = load()
        assert model.precision == "bf16"
        got = model.predict(image)
        np.testing.assert_allclose(got.depth, reference.depth, atol=BF16_ATOL)
        assert np.abs(got.depth - reference.depth).max() > 0  # it did run in bf16


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_head_compiled_apart_equals_the_whole_graph(
    fp32_graph, tiny_config, int8_graph, tmp_path, precision
):
    """The split that keeps the head f32 under bf16 (CPU) and f16 (GPU), run at f32 on any
    CPU: the image part and the head apart give every output of the whole graph."""
    path = int8_graph[0]
    if precision == "fp32":
        path = fp32_graph
    whole = run_on(tiny_config, path, "openvino")
    apart = run_on(tiny_config, path, "openvino")
    apart.head_config = apart.compile_config  # f32 both: only the split differs
    image = structured_image(*SIZE, seed=5)
    expected, got = whole.predict(image), apart.predict(image)
    assert len(whole.compiled[(1, *SIZE, 7)].parts) == 1
    image_part, head = apart.compiled[(1, *SIZE, 7)].parts
    head_inputs = {name for port in head.inputs for name in port.names}
    assert head_inputs == {"features", "text_features", "bins", "temperature"}
    assert {name for port in image_part.inputs for name in port.names} == {"images"}
    for field in OUTPUT_FIELDS:
        np.testing.assert_allclose(getattr(got, field), getattr(expected, field), atol=1e-6)


AUTO_DEFAULT = compile_properties("AUTO", "fp32", "auto", 0)  # its GPU in f16


@pytest.mark.parametrize(
    "properties,available,apart",
    [
        ({"INFERENCE_PRECISION_HINT": "f32"}, ["CPU"], False),
        ({"INFERENCE_PRECISION_HINT": "bf16"}, ["CPU"], True),
        ({"INFERENCE_PRECISION_HINT": "f16"}, ["CPU", "GPU.0"], True),
        ({}, ["CPU", "NPU"], False),  # the NPU computes in fp16 whatever it is asked
        (AUTO_DEFAULT, ["CPU"], False),  # no GPU for AUTO to choose
        (AUTO_DEFAULT, ["CPU", "GPU.0", "GPU.1"], True),
        (compile_properties("AUTO", "fp32", "fp32", 0), ["CPU", "GPU.0"], False),
    ],
)
def test_openvino_compiles_the_head_apart_where_a_device_computes_below_f32(
    properties, available, apart
):
    assert lowers_float_precision(properties, available) is apart


def test_openvino_bf16_keeps_its_head_f32(fp32_graph, tiny_config, tmp_path, caplog):
    """OpenVINO's bf16 hint would compute the head (logits, softmax, depth) in bf16 too: compiled
    apart in f32, its depth is nearer float32's. A graph exported before the parts runs whole,
    with one warning."""
    if not cpu_features.native_bf16():
        pytest.skip("this CPU has no native bf16 (its refusal: test_bf16_where_the_cpu_has_it)")
    path = fp32_graph
    reference = run_on(tiny_config, path, "openvino")
    apart = run_on(tiny_config, path, "openvino", precision="bf16")
    whole = run_on(tiny_config, path, "openvino", precision="bf16")
    whole.head_config = None  # the graph whole under bf16, as before the split
    assert apart.precision_detail == "bf16 inference of the fp32 graph, its head in f32"
    images = [structured_image(*SIZE, seed=seed) for seed in range(3)]

    def p99_error(model):
        errors = [np.abs(model.predict(i).depth - reference.predict(i).depth) for i in images]
        return np.percentile(np.concatenate(errors), 99)

    assert p99_error(apart) < p99_error(whole)
    old = exported_before_the_parts(path, tmp_path / "old.onnx")
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        model = run_on(tiny_config, old, "openvino", precision="bf16")
    (warning,) = ours(caplog)
    assert warning.startswith("old.onnx was exported before its head could be compiled apart")
    assert model.head_config is None and model.predict(images[0]).depth.shape == (1, *SIZE)


def test_torch_bf16_casts_only_its_copy_of_the_trunk(tiny_config):
    if not cpu_features.native_bf16():
        pytest.skip("this CPU has no native bf16 (its refusal: the test above)")
    model = DepthClip(tiny_config.replace(precision="bf16", dense_features="projected"))
    assert model.encoder.layer4[0].conv1.weight.dtype == torch.bfloat16
    clip_model = model.loaded.clip_model
    assert clip_model.visual.layer4[0].conv1.weight.dtype == torch.float32
    assert clip_model.token_embedding.weight.dtype == torch.float32
    assert np.isfinite(model.predict(structured_image(*SIZE)).depth).all()


def test_channels_last_equals_the_contiguous_trunk(tiny_config):
    """The shipped layout (channels_last) against the same weights in the default layout."""
    model = DepthClip(tiny_config)
    image = structured_image(*SIZE, seed=1)
    shipped = model.predict(image).depth
    model.encoder = model.encoder.to(memory_format=torch.contiguous_format)
    dense = model.dense_features
    model.dense_features = lambda x: dense(x.contiguous())
    np.testing.assert_allclose(model.predict(image).depth, shipped, atol=1e-5)


@pytest.mark.parametrize(
    "changes,words",
    [
        (dict(precision="int8"), "torch backend has no int8"),
        (dict(precision="bf16", backend="onnxruntime"), "ONNX Runtime has no bf16"),
        (dict(precision="bf16", device="cuda"), "on CUDA use fp16"),
        (dict(precision="bf16", head_precision="model"), "logits would be bf16"),
        (dict(device="gpu"), "set backend openvino"),
        (dict(device="npu", backend="onnxruntime"), "set backend openvino"),
        (dict(backend="openvino", device="cuda:0"), "no CUDA device"),
        (dict(backend="openvino", device="gpu.one"), "must be one of"),
        (dict(backend="openvino", device="gpu", precision="bf16"), "GPU runs f16"),
        (dict(backend="openvino", device="npu", precision="bf16"), "its NPU f16"),
    ],
)
def test_combinations_that_do_not_exist_are_one_line(tiny_config, changes, words):
    with pytest.raises(ConfigError, match=words) as err:
        tiny_config.replace(**changes)
    assert "\n" not in str(err.value)


def test_openvino_refusals_are_one_line(tiny_config, int8_graph, tmp_path, monkeypatch):
    path, _ = int8_graph
    with pytest.raises(ConfigError, match="bf16 inference takes an fp32 graph"):
        run_on(tiny_config, path, "openvino", precision="bf16")
    with pytest.raises(ConfigError, match="is int8"):
        run_on(tiny_config, path, "openvino", precision="fp32")
    # An NPU no machine here has: OpenVINO's own device list in the line.
    with pytest.raises(ModelLoadError, match="finds no NPU here .available: .*CPU"):
        run_on(tiny_config, path, "openvino", device="npu")
    with pytest.raises(ModelLoadError, match="runs a model exported by depthclip-export"):
        load_estimator(tiny_config.replace(backend="openvino"))
    # Not installed: what `import openvino` raises then.
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ModelLoadError, match="pip install openvino") as err:
        run_on(tiny_config, path, "openvino")
    assert "\n" not in str(err.value)


TELEMETRY_PROBE = """
import os, sys
forks = []
fork = os.fork
os.fork = lambda: forks.append(1) or fork()
from depthclip_ros.graph_runtimes.openvino_runtime import import_openvino
import_openvino().Core().available_devices
telemetry = sys.modules.get("openvino_telemetry")
print("telemetry module" if telemetry else "no telemetry module", len(forks), "forks")
"""


@pytest.mark.parametrize("consent", [None, "0", "1"])
def test_openvino_is_imported_without_its_telemetry_unless_the_user_opted_in(tmp_path, consent):
    """`import openvino` sends a usage event to Google Analytics by default, from a process it
    forks, and keeps a client id in ~/intel; the package imports it without its telemetry
    unless ~/intel/openvino_telemetry says 1 (OpenVINO's `opt_in_out --opt_in`)."""
    intel = tmp_path / "intel"
    intel.mkdir()
    if consent is not None:
        (intel / "openvino_telemetry").write_text(f"{consent}\n")
    # An opted-in run keeps OpenVINO's telemetry, which sends nothing where CI=true.
    env = {**os.environ, "HOME": str(tmp_path), "CI": "true" if consent == "1" else ""}
    proc = subprocess.run(
        [sys.executable, "-c", TELEMETRY_PROBE], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    if consent == "1":
        assert proc.stdout.strip() == "telemetry module 0 forks"
    else:
        assert proc.stdout.strip() == "no telemetry module 0 forks"
        assert sorted(p.name for p in intel.iterdir()) == (
            ["openvino_telemetry"] * (consent == "0")
        )


def test_calibration_sources(tmp_path):
    from PIL import Image

    shots, description = calibration.calibration_frames("demo:corridor,room")
    assert len(shots) == 2 and description == "demo scenes corridor, room"
    folder = tmp_path / "images"
    folder.mkdir()
    for i, frame in enumerate(frames(5)):
        Image.fromarray(frame).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    shots, _ = calibration.calibration_frames(str(folder), limit=3)
    assert [s.shape for s in shots] == [(*SIZE, 3)] * 3
    np.testing.assert_array_equal(shots[-1], frames(5)[4])  # first and last kept, PNG exact
    for source, words in (
        ("demo:kitchen", "no demo scene kitchen"),
        (str(tmp_path / "missing"), "neither 'demo'"),
        (str(tmp_path), "has no images"),
    ):
        with pytest.raises(ConfigError, match=words):
            calibration.calibration_frames(source)
    # The last quarter held out, the frame before it in neither: no held-out frame is a
    # calibration frame's neighbour.
    assert quantization.split_frames(list(range(9))) == ([0, 1, 2, 3, 4, 5], [7, 8])
    assert quantization.split_frames(list(range(4))) == ([0, 1], [3])
    assert quantization.split_frames([0, 1]) == ([0], [1])
    with pytest.raises(ConfigError, match="at least 2 frames"):
        quantization.split_frames([0])


def test_calibration_from_a_bag(tmp_path):
    """A bag of a camera beside another: its image topic named, frames as the node decodes."""
    from bag_factory import write_bag
    from helpers import structured_image as camera_frame

    bag = tmp_path / "cams"
    write_bag(bag, frames=6, cameras={"/front": (160, 120), "/rear": (96, 64)})
    with pytest.raises(Exception, match="/front/image_raw, /rear/image_raw"):
        calibration.calibration_frames(str(bag))
    shots, description = calibration.calibration_frames(str(bag), "/rear/image_raw", limit=4)
    assert len(shots) == 4 and description == f"4 frames of /rear/image_raw in {bag}"
    np.testing.assert_array_equal(shots[-1], camera_frame(64, 96, seed=5 + 100))


def test_export_cli_int8(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    argv = ["--model", tiny_checkpoint, "--out", str(out), "--precision", "int8"]
    with pytest.raises(SystemExit) as exit_code:
        export_cli.main(argv)
    assert exit_code.value.code == 2 and "needs --calibration" in capsys.readouterr().err
    assert export_cli.main([*argv, "--calibration", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither 'demo'" in err
    assert export_cli.main([*argv, "--calibration", "demo"]) == 0
    printed = capsys.readouterr().out
    assert "int8, 7-bit weights (at export, against fp32 on 1 held-out frames" in printed
    assert (tmp_path / "cli_text_features").is_dir() and (tmp_path / "cli_reference.npz").is_file()


def test_export_cli_int8_as_a_process_prints_no_library_warnings(tiny_checkpoint, tmp_path):
    out = tmp_path / "p.onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "depthclip_ros.tools.export",
            "--model",
            tiny_checkpoint,
            "--out",
            str(out),
            "--precision",
            "int8",
            "--calibration",
            "demo",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.startswith("wrote ")
    model = OnnxDepthClip(DepthClipConfig(model=str(out), device="cpu"))
    model.warm_up()  # what it wrote loads, its reference frames with it
    assert model.precision == "int8" and model.depth_figure.frames == 1


def test_depthclip_bag_runs_an_int8_graph_on_openvino_from_a_parameter_file(
    tiny_config, int8_graph, tmp_path, capsys
):
    """The tools take every variant through the same parameter file as the node."""
    import yaml
    from bag_factory import deserialize, read_bag, write_bag

    from depthclip_ros.bag import cli
    from depthclip_ros.messages import decoding

    path, _ = int8_graph
    params = tmp_path / "params.yaml"
    overrides = {"model": str(path), "backend": "openvino", "device": "cpu", "temperature": 1.0}
    overrides.update(input_width=128, input_height=96, cache_dir=str(tmp_path / "cache"))
    params.write_text(yaml.safe_dump({"/**/depthclip": {"ros__parameters": overrides}}))
    written = write_bag(tmp_path / "in", frames=2)
    argv = ["process", tmp_path / "in", tmp_path / "out", "--params", params, "--quiet"]
    assert cli.main([str(a) for a in argv]) == 0
    summary = capsys.readouterr().out  # the model and its depth figure, measured here
    assert "int8, 7-bit weights" in summary and "depth vs fp32 here: |depth - fp32|" in summary
    assert "measured on openvino" in summary
    out, _ = read_bag(tmp_path / "out")
    model = run_on(tiny_config, path, "openvino")
    for (_, raw), (_, depth_raw, _) in zip(written["/cam/image_raw"], out["/cam/depth/image"]):
        image = decoding.decode_image(deserialize(raw, "sensor_msgs/msg/Image"))
        depth = decoding.depth_image_to_array(deserialize(depth_raw, "sensor_msgs/msg/Image"))
        np.testing.assert_allclose(depth, model.predict(image).depth[0], atol=1e-5)


@pytest.mark.parametrize(
    "cuda_build,words", [(None, "CPU-only build"), ("13.0", "no CUDA device")]
)
def test_device_auto_on_a_torch_without_cuda_says_so_once(monkeypatch, caplog, cuda_build, words):
    """A Jetson with PyPI's CPU-only aarch64 torch must not run on CPU unnoticed (stand-ins for
    what torch answers there)."""
    from depthclip_ros.estimator.clip_loading import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    with caplog.at_level("WARNING", logger="depthclip_ros"):
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device("cpu") == torch.device("cpu")  # asked for: no warning
    (record,) = caplog.records
    assert words in record.getMessage() and "device: cpu says so" in record.getMessage()


def test_inference_threads_leave_the_other_cores(tiny_config, int8_graph):
    """inference_threads N: N threads in each runtime; by default one per core; neither
    spinning (ONNX Runtime) nor pinned (OpenVINO) in either case."""
    path, shots = int8_graph
    tasks = lambda: len(os.listdir("/proc/self/task"))  # noqa: E731 (the process's threads)
    run_on(tiny_config, path, "onnxruntime")  # the runtime's own threads of import
    before = tasks()
    default = run_on(tiny_config, path, "onnxruntime")
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert default._build[1].get_session_config_entry(key) == "0"
    spawned_by_default = tasks() - before
    before = tasks()
    one = run_on(tiny_config, path, "onnxruntime", inference_threads=1)
    assert tasks() == before  # one thread: the caller's, no pool
    assert one.cpu_threads == 1 and default.cpu_threads == cpu_features.usable_cores()
    assert spawned_by_default >= 1 or cpu_features.usable_cores() == 1  # the default's pool
    np.testing.assert_array_equal(one.predict(shots[0]).depth, default.predict(shots[0]).depth)
    ov = run_on(tiny_config, path, "openvino", inference_threads=1)
    ov.predict(shots[0], arrays=())
    (compiled,) = next(iter(ov.compiled.values())).parts  # int8 on the CPU: f32, whole
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1 and ov.cpu_threads == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    threads = torch.get_num_threads()
    try:
        DepthClip(tiny_config.replace(inference_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_usable_cores_count_a_cores_hyperthreads_once(tmp_path):
    """Physical cores among the CPUs given: two hyperthreads of one core are one; a CPU whose
    topology cannot be read (some containers) is a core of its own."""
    for cpu, package, core in ((0, 0, 0), (1, 0, 1), (2, 0, 0), (3, 1, 0)):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert cpu_features.usable_cores({0, 2}, str(tmp_path)) == 1  # siblings
    assert cpu_features.usable_cores({0, 1, 2, 3}, str(tmp_path)) == 3  # core 0 of two packages
    assert cpu_features.usable_cores({0, 7}, str(tmp_path)) == 2  # cpu7: no topology


# A process started pinned, as `taskset -c N` starts it: each runtime's threads counted.
PINNED_PROCESS = """
import json, os, sys
import numpy as np
import onnxruntime  # the runtimes' own threads of import before the count
from depthclip_ros.config.params_files import load_config
from depthclip_ros.graph_runtimes.openvino_runtime import import_openvino
import_openvino()
from depthclip_ros.model_loading import load_estimator

overrides = json.loads(sys.argv[1])
tasks = lambda: len(os.listdir("/proc/self/task"))
frame = np.zeros((96, 128, 3), np.uint8)
found = {}
for backend in ("onnxruntime", "openvino"):
    before = tasks()
    model = load_estimator(load_config(overrides={**overrides, "backend": backend}))
    model.predict(frame, arrays=())
    found[backend] = {"cpu_threads": model.cpu_threads, "added": tasks() - before}
(compiled,) = next(iter(model.compiled.values())).parts
found["openvino"]["compiled"] = compiled.get_property("INFERENCE_NUM_THREADS")
print(json.dumps(found))
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pinning to fewer cores needs Linux and two cores at least",
)
def test_a_process_pinned_to_one_core_runs_one_model_thread(tiny_config, int8_graph):
    """taskset, a container's cpuset: ONNX Runtime's own default starts a thread per core of
    the machine whatever the process may use; the package gives it the cores it may use (one
    here: no pool), as OpenVINO counts them."""
    overrides = {
        "model": str(int8_graph[0]),
        "device": "cpu",
        "input_width": 128,
        "input_height": 96,
        "cache_dir": tiny_config.cache_dir,
    }
    cpu = min(os.sched_getaffinity(0))
    done = subprocess.run(
        [sys.executable, "-c", PINNED_PROCESS, json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # ONNX Runtime: one thread, the caller's: no pool started
    assert found["onnxruntime"] == {"cpu_threads": 1, "added": 0}
    assert found["openvino"]["cpu_threads"] == 1 and found["openvino"]["compiled"] == 1


def test_each_runtimes_own_thread_options_reach_it(tiny_config, int8_graph):
    """onnxruntime_session_config and openvino_properties: the runtime's own names, over
    inference_threads' (OpenVINO's threads counted from them), the same depth; an entry that is
    not KEY=VALUE is a ConfigError, a property OpenVINO does not know a ModelLoadError naming
    it."""
    path, shots = int8_graph
    spinning = ["session.intra_op.allow_spinning=1", "session.inter_op.allow_spinning=1"]
    ort = run_on(tiny_config, path, "onnxruntime", onnxruntime_session_config=spinning)
    options = ort._build[1]  # ONNX Runtime's own default back
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "1"
    default = run_on(tiny_config, path, "onnxruntime")
    np.testing.assert_array_equal(ort.predict(shots[0]).depth, default.predict(shots[0]).depth)
    properties = ["ENABLE_CPU_PINNING=YES", "NUM_STREAMS=1", "INFERENCE_NUM_THREADS=1"]
    ov = run_on(tiny_config, path, "openvino", inference_threads=2, openvino_properties=properties)
    assert ov.cpu_threads == 1  # the user's INFERENCE_NUM_THREADS over inference_threads'
    got = ov.predict(shots[0])
    (compiled,) = next(iter(ov.compiled.values())).parts
    assert compiled.get_property("ENABLE_CPU_PINNING") is True  # OpenVINO's own default back
    assert compiled.get_property("NUM_STREAMS") == 1
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    np.testing.assert_allclose(
        got.depth, run_on(tiny_config, path, "openvino").predict(shots[0]).depth, atol=1e-5
    )
    with pytest.raises(ConfigError, match="openvino_properties.*'ENABLE_CPU_PINNING' is not"):
        tiny_config.replace(openvino_properties=("ENABLE_CPU_PINNING",))
    with pytest.raises(ConfigError, match="onnxruntime_session_config.*'=0' is not KEY=VALUE"):
        tiny_config.replace(onnxruntime_session_config=("=0",))
    unknown = run_on(tiny_config, path, "openvino", openvino_properties=["NO_SUCH_PROPERTY=1"])
    with pytest.raises(ModelLoadError, match="Unsupported property NO_SUCH_PROPERTY") as raised:
        unknown.predict(shots[0])
    assert "\n" not in str(raised.value)


def test_openvino_compiles_static_shapes_at_a_cameras_size_and_once_per_failure(
    fp32_graph, tiny_config, tmp_path, monkeypatch
):
    path = fp32_graph
    ov = run_on(tiny_config, path, "openvino")
    assert ov.prepares_image_sizes  # the node compiles a camera's size at its camera_info
    ov.warm_up((96, 200), max_batch=3)
    assert {(1, 96, 200, 7), (3, 96, 200, 7)} <= set(ov.compiled)
    (compiled,) = ov.compiled[(1, 96, 200, 7)].parts
    assert all(not port.get_partial_shape().is_dynamic for port in compiled.inputs)
    five_bins = ov.config.replace(
        depth_bins=(1.0, 1.5, 2.0, 2.5, 3.0), depth_tokens=("giant", "close", "far", "a", "b")
    )
    with pytest.raises(ConfigError, match="text features were not exported"):
        ov.update_config(five_bins)  # another bin count needs its prompts exported: refused
    calls = []
    original = ov.core.compile_model

    def refuse(*args):
        calls.append(args)
        raise RuntimeError("Exception from src/inference: cannot compile\nlast line: refused")

    monkeypatch.setattr(ov.core, "compile_model", refuse)
    for _ in range(3):
        with pytest.raises(ModelLoadError, match="for 64x48 images .batch 1, 7 bins. on CPU: "):
            ov.predict(structured_image(48, 64))
    assert len(calls) == 1  # compiled once, the same error said again
    monkeypatch.setattr(ov.core, "compile_model", original)
    ov.predict(structured_image(48, 80))  # other shapes still compile


UNPINNED = {"ENABLE_CPU_PINNING": False}  # on every CPU (bench/results/performance.md)


@pytest.mark.parametrize(
    "device,precision,requested,threads,properties",
    [
        ("CPU", "fp32", "auto", 0, {"INFERENCE_PRECISION_HINT": "f32", **UNPINNED}),
        ("CPU", "bf16", "bf16", 0, {"INFERENCE_PRECISION_HINT": "bf16", **UNPINNED}),
        (
            "CPU",
            "int8",
            "auto",
            1,
            {
                "INFERENCE_PRECISION_HINT": "f32",
                "INFERENCE_NUM_THREADS": 1,
                "ENABLE_CPU_PINNING": False,
            },
        ),
        ("GPU.1", "fp16", "auto", 0, {"INFERENCE_PRECISION_HINT": "f16"}),
        ("GPU", "fp32", "fp32", 0, {"INFERENCE_PRECISION_HINT": "f32"}),
        ("NPU", "fp16", "auto", 0, {}),
        (
            "AUTO",
            "fp32",
            "auto",
            0,
            {
                "DEVICE_PROPERTIES": {
                    "CPU": {"INFERENCE_PRECISION_HINT": "f32", **UNPINNED},
                    "GPU": {"INFERENCE_PRECISION_HINT": "f16"},
                }
            },
        ),
    ],
)
def test_openvino_inference_precision_per_device(
    device, precision, requested, threads, properties
):
    assert compile_properties(device, precision, requested, threads) == properties


def test_openvino_auto_reports_where_it_runs(fp32_graph, tiny_config, tmp_path):
    path = fp32_graph
    ov = run_on(tiny_config, path, "openvino", device="auto")
    assert ov.device == "auto"
    ov.warm_up()
    assert ov.device == "cpu" and ov.runtime.endswith("AUTO (executes on CPU)")


def test_torch_bf16_measures_its_figure_against_its_float32_trunk(tiny_config):
    if not cpu_features.native_bf16():
        pytest.skip("this CPU has no native bf16 (its refusal: test_bf16_where_the_cpu_has_it)")
    fp32 = DepthClip(tiny_config)
    assert fp32.depth_figure_words is None  # the reference itself
    model = DepthClip(tiny_config.replace(precision="bf16"))
    model.warm_up()
    figure = model.depth_figure
    demo = [render_scene(name)[0] for name in SCENES]
    want = np.stack([fp32.predict(f).depth[0] for f in demo])
    got = np.stack([model.predict(f).depth[0] for f in demo])
    diff = np.abs(got - want)
    assert figure.frames == 3 and figure.max == pytest.approx(float(diff.max()), abs=1e-6)
    assert figure.median == pytest.approx(float(np.median(diff)), abs=1e-6) and figure.max > 0
    assert "bf16 against its float32 trunk" in figure.where
    assert model.encoder.layer4[0].conv1.weight.dtype == torch.bfloat16  # swapped back
