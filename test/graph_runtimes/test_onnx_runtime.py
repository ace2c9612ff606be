"""depthclip-export and the onnxruntime backend: the exported graph against the torch core,
metadata checks, run-time changes, and the node running an exported model."""

import dataclasses
import logging
import sys

import clip
import numpy as np
import onnx
import pytest
import torch
from helpers import (
    built_once,
    copy_of_export,
    encode,
    model_config,
    run_on_a_full_disk,
    stamp,
    structured_image,
    wait_until,
)
from ros_harness import running_node

from depthclip_ros.config.params_files import load_config, preset_configs, preset_names
from depthclip_ros.errors import ConfigError, ImageSizeError, ModelLoadError
from depthclip_ros.estimator.clip_loading import load_clip
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.depth_quantile import depth_quantile
from depthclip_ros.export import graph as export
from depthclip_ros.graph_runtimes.onnx_providers import CUDA
from depthclip_ros.graph_runtimes.onnx_runtime import OnnxDepthClip
from depthclip_ros.messages import decoding
from depthclip_ros.model_loading import load_estimator
from depthclip_ros.tools import export as export_cli

CAMERA = (480, 640)  # (height, width) of the test camera's images
# fp16 against fp16: the graph folds the batch norms into fp16 convolutions, the torch core keeps
# them float32, and ONNX Runtime's and torch's fp16 kernels round differently. Measured at most
# 1.1e-3 m here (tiny), about the gap between the torch core in fp16 and in float32; an error of
# the image path (normalisation, crop, flip, bins) is tenths of a metre.
FP16_ATOL = 5e-3


def export_and_load(config, path, image_size=None, reference=True):
    """Exported as depthclip-export exports it: the shipped presets' text features beside (and,
    `reference`, the reference frames: the RN50 tests leave them out, as their depth through
    RN50 costs what the tiny graphs' tests check already)."""
    export.export(config, path, image_size, preset_configs(), reference)
    return OnnxDepthClip(config.replace(model=str(path)))


# The tests below that need the tiny model's default graph (any size, 128x96 network input) share
# one export of it per test run, fp32 and fp16, each test on its own copy: an export is seconds
# of tracing, and the tests that check the export itself still export.
SMALL_INPUT = dict(input_width=128, input_height=96)
# The RN50 graphs' network input: what is checked there is RN50's shapes (its channels, the
# 2048-d dense features' projection), not the input's size; a third of 544x416's pixels
# (torch's fp16 kernels on a CPU are slow).
RN50_INPUT = dict(input_width=320, input_height=224)


@pytest.fixture(scope="module")
def exported_default(tiny_checkpoint, tmp_path_factory):
    """The default graph as depthclip-export writes it: the shipped presets' text features and
    the reference frames beside."""

    def build(folder):
        config = model_config(tiny_checkpoint, folder / "cache", **SMALL_INPUT)
        export.export(config, folder / "m.onnx", prompt_configs=preset_configs())

    return built_once(tmp_path_factory, "onnx-runtime-default", build) / "m.onnx"


@pytest.fixture(scope="module")
def exported_default_fp16(tiny_checkpoint, tmp_path_factory):
    def build(folder):
        config = model_config(tiny_checkpoint, folder / "cache", precision="fp16", **SMALL_INPUT)
        export.export(config, folder / "fp16.onnx")

    return built_once(tmp_path_factory, "onnx-runtime-default-fp16", build) / "fp16.onnx"


def assert_same_result(torch_result, onnx_result):
    np.testing.assert_allclose(onnx_result.depth, torch_result.depth, atol=1e-4)
    assert np.array_equal(np.isnan(onnx_result.depth), np.isnan(torch_result.depth))
    np.testing.assert_allclose(onnx_result.coarse_depth, torch_result.coarse_depth, atol=1e-4)
    # depth/std from the same graph: the torch core's, NaN where the depth is NaN
    np.testing.assert_allclose(onnx_result.depth_std, torch_result.depth_std, atol=1e-4)
    np.testing.assert_allclose(onnx_result.coarse_std, torch_result.coarse_std, atol=1e-4)
    np.testing.assert_allclose(onnx_result.bin_probs, torch_result.bin_probs, atol=1e-5)
    assert onnx_result.region == torch_result.region
    # points/clearing's depth, from either backend's probabilities: the same bins (a pixel
    # whose cumulative probability lay within 1e-5 of q could differ; none does here).
    rows, cols = (np.arange(0, n, 4) for n in torch_result.depth.shape[1:])
    for index in range(len(torch_result.depth)):
        for q in (0.1, 0.5, 0.9):
            np.testing.assert_array_equal(
                depth_quantile(onnx_result, index, q, rows, cols),
                depth_quantile(torch_result, index, q, rows, cols),
            )


def torch_fp16_core(config):
    """The torch core as it runs with precision fp16 on CUDA (CLIP's fp16 weights, batch norms
    float32), built on CPU, where load_clip refuses fp16."""
    loaded = load_clip(config.model, "cpu", "fp32")
    clip.model.convert_weights(loaded.clip_model)
    return DepthClip(config, dataclasses.replace(loaded, dtype=torch.float16))


def assert_fp16_graph(path):
    """The image path's weights are fp16; the inputs and outputs stay uint8 / float32."""
    graph = onnx.load(str(path)).graph
    conv_weights = {node.input[1] for node in graph.node if node.op_type == "Conv"}
    weight_types = {i.data_type for i in graph.initializer if i.name in conv_weights}
    assert len(conv_weights) > 10 and weight_types == {onnx.TensorProto.FLOAT16}
    tensor = onnx.TensorProto
    assert [i.type.tensor_type.elem_type for i in graph.input] == [tensor.UINT8] + [
        tensor.FLOAT
    ] * 3
    assert {o.type.tensor_type.elem_type for o in graph.output} == {tensor.FLOAT}


@pytest.mark.slow
def test_rn50_graph_equals_the_torch_core(rn50_checkpoint, tmp_path):
    """Real RN50 shapes, crop and flip (the tiny graphs' tests run resize too): ONNX Runtime's
    depth equals the core's within 1e-4 m, batch 1 and 2 (the tiny graphs' run batch 4), at a
    network input a third of the shipped one's pixels (RN50_INPUT)."""
    from depthclip_ros.config.parameters import DepthClipConfig

    config = DepthClipConfig(
        model=str(rn50_checkpoint),
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        temperature=1.0,
        preprocessing="crop",
        flip=True,
        **RN50_INPUT,
    )
    core = DepthClip(config)
    exported = export_and_load(config, tmp_path / "rn50.onnx", reference=False)
    images = np.stack([structured_image(*CAMERA, seed=s) for s in range(2)])
    for batch in (1, 2):
        assert_same_result(core.predict(images[:batch]), exported.predict(images[:batch]))


@pytest.mark.slow
def test_rn50_fp16_graph_runs_the_torch_fp16_core(rn50_checkpoint, tmp_path):
    """Real RN50 shapes, crop and the fp16 head: the fp16 graph against the torch core's fp16
    path, batch 1 (the tiny fp16 graphs run batch 1 and 4), at RN50_INPUT. The flip is the fp32
    RN50 graph's test's: torch's fp16 kernels are slow on CPUs, and the flip doubles them."""
    from depthclip_ros.config.parameters import DepthClipConfig

    config = DepthClipConfig(
        model=str(rn50_checkpoint),
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        temperature=1.0,
        preprocessing="crop",
        flip=False,
        head_precision="model",
        **RN50_INPUT,
    )
    path = tmp_path / "rn50_fp16.onnx"
    # No reference frames: an fp16 graph's are an fp32 export's depth, a second RN50 export
    # (the tiny fp16 graphs' tests export theirs)
    export.export(config.replace(precision="fp16"), path, reference=False)
    assert_fp16_graph(path)
    exported = OnnxDepthClip(config.replace(model=str(path)))
    core = torch_fp16_core(config)
    # Batch 1: torch's fp16 kernels are slow on CPUs.
    image = structured_image(*CAMERA)
    got, want = exported.predict(image), core.predict(image)
    np.testing.assert_allclose(got.depth, want.depth, atol=FP16_ATOL)
    assert np.array_equal(np.isnan(got.depth), np.isnan(want.depth))


# Each preprocessing and the flip once (a graph's preprocessing and flip are separate steps).
@pytest.mark.parametrize(
    "preprocessing, flip", [("resize", False), ("crop", True)], ids=["resize", "crop-flip"]
)
def test_tiny_graph_equals_the_torch_core(make_config, tmp_path, preprocessing, flip):
    config = make_config(preprocessing=preprocessing, flip=flip, input_width=128, input_height=96)
    core = DepthClip(config)
    exported = export_and_load(config, tmp_path / "tiny.onnx")
    images = np.stack([structured_image(*CAMERA, seed=s) for s in range(4)])
    for batch in (1, 4):
        assert_same_result(core.predict(images[:batch]), exported.predict(images[:batch]))


def test_only_the_arrays_asked_for_are_fetched(make_config, exported_default, tmp_path):
    config = make_config(**SMALL_INPUT)
    path = copy_of_export(exported_default, tmp_path / "tiny.onnx")
    exported = OnnxDepthClip(config.replace(model=str(path)))
    image = structured_image(*CAMERA)
    full = exported.predict(image)
    part = exported.predict(image, arrays=("bin_probs",))
    assert part.depth is None and part.depth_std is None
    assert part.coarse_depth is None and part.coarse_std is None
    np.testing.assert_array_equal(part.bin_probs, full.bin_probs)
    grid = exported.predict(image, arrays=("coarse_depth", "depth"))
    np.testing.assert_array_equal(grid.coarse_depth, full.coarse_depth)
    np.testing.assert_array_equal(grid.depth, full.depth)
    assert exported.predict(image, arrays=()).depth is None  # run, nothing fetched


@pytest.mark.parametrize("flip", [False, True])
def test_one_graph_serves_every_camera_size(make_config, exported_default, tmp_path, flip):
    """Exported without --image-size, one graph takes every size (the resize in the graph),
    equal to the torch core at each: VGA, odd sizes, the network's own size (the core skips
    its resize there; the graph's resize to the same size changes nothing), portrait."""
    config = make_config(flip=flip, **SMALL_INPUT)
    core = DepthClip(config)
    if flip:
        exported = export_and_load(config, tmp_path / "any.onnx")
    else:
        path = copy_of_export(exported_default, tmp_path / "any.onnx")
        exported = OnnxDepthClip(config.replace(model=str(path)))
    assert exported.image_size is None
    for height, width in [CAMERA, (96, 128), (239, 317), (720, 1280), (640, 360)]:
        images = np.stack([structured_image(height, width, seed=s) for s in range(2)])
        assert_same_result(core.predict(images), exported.predict(images))


@pytest.mark.parametrize(
    "preprocessing, flip, head_precision",
    [("resize", False, "float32"), ("crop", True, "model")],
    ids=["resize", "crop-flip-fp16-head"],
)
def test_fp16_graph_runs_the_torch_fp16_core(
    make_config, exported_default_fp16, tmp_path, preprocessing, flip, head_precision
):
    config = make_config(
        preprocessing=preprocessing, flip=flip, head_precision=head_precision, **SMALL_INPUT
    )
    path = tmp_path / "fp16.onnx"
    if config == make_config(**SMALL_INPUT):  # the default graph: exported once for the module
        copy_of_export(exported_default_fp16, path)
    else:  # its reference frames are the module's fp16 graph's test (a second export)
        export.export(config.replace(precision="fp16"), path, reference=False)
    assert_fp16_graph(path)
    exported = OnnxDepthClip(config.replace(model=str(path), precision="auto"))
    assert exported.metadata["precision"] == "fp16" and exported.dtype == "float16"
    fp16, fp32 = torch_fp16_core(config), DepthClip(config)
    images = np.stack([structured_image(*CAMERA, seed=s) for s in range(4)])
    for batch in (1, 4):
        got, want = exported.predict(images[:batch]), fp16.predict(images[:batch])
        np.testing.assert_allclose(got.depth, want.depth, atol=FP16_ATOL)
        assert np.array_equal(np.isnan(got.depth), np.isnan(want.depth))
        np.testing.assert_allclose(got.coarse_depth, want.coarse_depth, atol=FP16_ATOL)
        assert got.region == want.region
        # fp16 indeed: the float32 core's depth is not reproduced to float32's precision
        assert np.nanmax(np.abs(got.depth - fp32.predict(images[:batch]).depth)) > 1e-5


def test_precision_must_match_the_graph(
    make_config, exported_default, exported_default_fp16, tmp_path
):
    config = make_config(**SMALL_INPUT)
    fp32_path = copy_of_export(exported_default, tmp_path / "fp32.onnx")
    fp16_path = copy_of_export(exported_default_fp16, tmp_path / "fp16.onnx")
    assert OnnxDepthClip(config.replace(model=str(fp32_path), precision="auto")).dtype == "float32"
    with pytest.raises(ConfigError, match="'precision' = 'fp16'.*fp32.onnx is fp32; export it wi"):
        OnnxDepthClip(config.replace(model=str(fp32_path), precision="fp16"))
    with pytest.raises(ConfigError, match="'precision' = 'fp32'.*--precision fp32"):
        OnnxDepthClip(config.replace(model=str(fp16_path), precision="fp32"))


def test_bins_temperature_and_exported_prompts_change_without_re_export(
    make_config, exported_default, tmp_path
):
    config = make_config(**SMALL_INPUT)
    core = DepthClip(config)
    path = copy_of_export(exported_default, tmp_path / "m.onnx")
    exported = OnnxDepthClip(config.replace(model=str(path)))
    image = structured_image(*CAMERA)
    # Bins and temperature are graph inputs; a shipped preset's prompts were exported with it.
    preset = load_config(None, ["tokens_prompt_1"]).depth_tokens
    changed = config.replace(
        temperature=0.5, depth_bins=tuple(2 * b for b in config.depth_bins), depth_tokens=preset
    )
    core.update_config(changed)
    exported.update_config(changed.replace(model=exported.config.model))
    assert_same_result(core.predict(image), exported.predict(image))


def test_what_the_graph_cannot_honour_is_refused_with_the_reason(make_config, tmp_path):
    config = make_config(input_width=128, input_height=96)
    exported = export_and_load(config, tmp_path / "m.onnx", CAMERA)  # fixed to one size
    onnx_config = exported.config
    for change, field in [
        (dict(input_width=160), "input_width"),
        (dict(preprocessing="crop"), "preprocessing"),
        (dict(flip=True), "flip"),
        (dict(dense_features="projected"), "dense_features"),
    ]:
        with pytest.raises(ConfigError, match=f"{field}.*exported graph m.onnx was built with"):
            exported.update_config(onnx_config.replace(**change))
    with pytest.raises(ConfigError, match="were not exported with the model"):
        unseen = tuple(f"very {token}" for token in onnx_config.depth_tokens)
        exported.update_config(onnx_config.replace(depth_tokens=unseen))
    with pytest.raises(ConfigError, match="scene_bins.*torch backend"):
        exported.update_config(onnx_config.replace(scene_bins="auto"))
    assert exported.config == onnx_config  # a refused change leaves the running config
    with pytest.raises(ImageSizeError, match="takes 640x480 images, got 320x240.*without"):
        exported.predict(structured_image(240, 320))
    # A config the graph cannot run is refused at load, too.
    with pytest.raises(ConfigError, match="input_width"):
        OnnxDepthClip(onnx_config.replace(input_width=160))


def test_metadata_records_the_export_and_text_features_lie_beside(
    make_config, exported_default, tmp_path
):
    config = make_config(**SMALL_INPUT)
    path = copy_of_export(exported_default, tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    core = DepthClip(config)
    assert meta["model_identity"] == core.model_identity
    assert core.model_identity.endswith("@sha256:" + meta["checkpoint_sha256"])
    assert (meta["image_width"], meta["image_height"]) == ("any", "any")
    assert (meta["preprocessing"], meta["input_width"], meta["input_height"]) == (
        "resize",
        "128",
        "96",
    )
    assert (meta["normalization"], meta["dense_features"], meta["flip"]) == (
        "imagenet",
        "subsampled",
        "False",
    )
    assert meta["opset"] == str(export.OPSET) and meta["exporter"].startswith("torch ")
    assert meta["precision"] == "fp32"
    inputs = [i.name for i in onnx.load(str(path)).graph.input]
    assert inputs == ["images", "text_features", "bins", "temperature"]
    # The configured prompts and each shipped preset's, in the cache format.
    features = sorted((tmp_path / "m_text_features").glob("text_*.npy"))
    distinct = {repr(c.prompt_sets) for c in [config, *preset_configs()]}
    assert len(features) == len(distinct) and len(preset_names()) > 1


def test_files_that_are_not_depthclip_exports_are_refused(make_config, tmp_path):
    config = make_config()
    plain = tmp_path / "plain.onnx"
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(model, str(plain))
    with pytest.raises(ModelLoadError, match="was not written by depthclip-export"):
        load_estimator(config.replace(model=str(plain)))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        load_estimator(config.replace(model=str(garbage)))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_estimator(config.replace(model=str(tmp_path / "missing.onnx")))
    with pytest.raises(ModelLoadError, match="backend 'torch' cannot run the exported graph"):
        load_estimator(config.replace(model=str(plain), backend="torch"))
    with pytest.raises(ModelLoadError, match="backend 'onnxruntime' runs a model exported"):
        load_estimator(config.replace(backend="onnxruntime"))


def test_export_cli_writes_the_graph_and_reports_errors(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    argv = ["--model", str(tiny_checkpoint), "--out", str(out), "--image-size", "320x240"]
    assert export_cli.main(argv + ["--precision", "fp16"]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (meta["precision"], meta["image_width"], meta["image_height"]) == ("fp16", "320", "240")
    assert export_cli.main(["--model", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("depthclip-export: error: ") and err.count("\n") == 1


def test_export_to_a_full_disk_is_one_error_line(tiny_checkpoint, tmp_path):
    """depthclip-export as its own process with a file-size limit (writes beyond it fail as on
    a full disk): exit 2, one line naming the output, no traceback, no graph left."""
    out = tmp_path / "full.onnx"

    argv = [sys.executable, "-m", "depthclip_ros.tools.export"]
    argv += ["--model", str(tiny_checkpoint), "--out", str(out)]
    proc = run_on_a_full_disk(argv, 64 * 1024, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1
    assert errors[0].startswith(f"depthclip-export: error: cannot write {out}: File too large")
    assert "Traceback" not in proc.stderr and not out.exists()


def test_node_runs_an_exported_model(make_config, exported_default, tmp_path):
    """The node loads the .onnx as it loads a checkpoint; a change the graph cannot honour is
    refused when set and the node keeps running."""
    from rclpy.parameter import Parameter

    config = make_config(**SMALL_INPUT)
    path = copy_of_export(exported_default, tmp_path / "node.onnx")
    image = structured_image(120, 160)
    expected = DepthClip(config).predict(image).depth[0]
    with running_node(str(path), tmp_path / "cache", input_width=128, input_height=96) as (
        node,
        tester,
    ):
        assert isinstance(node.estimator, OnnxDepthClip)
        tester.image_pub.publish(stamp(encode(image, "rgb8"), 7))
        depth = decoding.depth_image_to_array(tester.wait_for("depth/image")[0])
        np.testing.assert_allclose(depth, expected, atol=1e-4)
        result = node.set_parameters([Parameter("input_width", value=160)])[0]
        assert not result.successful and "exported graph" in result.reason
        result = node.set_parameters([Parameter("temperature", value=0.5)])[0]
        assert result.successful
        wait_until(lambda: node.estimator.config.temperature == 0.5)


def test_export_leaves_the_torch_core_working_in_the_same_process(make_config, tmp_path):
    """An export traces the core with fake tensors; nothing of that trace may stay behind for
    the real frames after it (the benchmark and users export, then predict, in one process)."""
    from depthclip_ros.estimator import preprocessing

    preprocessing.normalization.cache_clear()  # as in a fresh process: the export comes first
    config = make_config(input_width=128, input_height=96)
    export.export(config, tmp_path / "first.onnx", (120, 160))
    image = structured_image(120, 160)
    after = DepthClip(config).predict(image).depth
    preprocessing.normalization.cache_clear()
    fresh = DepthClip(config).predict(image).depth
    np.testing.assert_array_equal(after, fresh)


def test_device_auto_without_a_gpu_provider_says_it_runs_on_cpu(make_config, tmp_path, caplog):
    import onnxruntime

    config = make_config(input_width=128, input_height=96)
    path = tmp_path / "m.onnx"
    export.export(config, path, (96, 128))
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        exported = OnnxDepthClip(config.replace(model=str(path), device="auto"))
    warnings = [r.getMessage() for r in caplog.records if "device 'auto'" in r.getMessage()]
    if CUDA in onnxruntime.get_available_providers():
        assert warnings == [] and exported.device != "cpu"
    else:  # the CPU-only onnxruntime (this machine's): said once, with the fix
        assert exported.device == "cpu" and len(warnings) == 1
        assert "install onnxruntime-gpu" in warnings[0]


def test_the_files_hash_is_remembered_while_it_is_unchanged(tmp_path, monkeypatch):
    from depthclip_ros.estimator import file_identity

    model = tmp_path / "m.onnx"
    model.write_bytes(b"weights A")
    reads = []
    real = file_identity.sha256_file
    monkeypatch.setattr(file_identity, "sha256_file", lambda p: reads.append(p) or real(p))
    first = file_identity.sha256_remembered(model, tmp_path / "memo")
    assert file_identity.sha256_remembered(model, tmp_path / "memo") == first == real(model)
    assert len(reads) == 1  # the second start read no byte of the model
    model.write_bytes(b"weights B, longer")
    assert file_identity.sha256_remembered(model, tmp_path / "memo") == real(model) != first
