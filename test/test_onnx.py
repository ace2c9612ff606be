"""depthclip-export and the onnxruntime backend: the exported graph against the torch core,
metadata checks, run-time changes, and the node running an exported model."""

import numpy as np
import onnx
import pytest
from helpers import encode, stamp, structured_image, wait_until
from ros_harness import running_node

from depthclip_ros import image_decoding, onnx_export
from depthclip_ros.backends import ModelLoadError, load_estimator
from depthclip_ros.core import DepthClip
from depthclip_ros.onnx_backend import OnnxDepthClip
from depthclip_ros.parameter_schema import ConfigError
from depthclip_ros.params_files import preset_names
from depthclip_ros.prediction import ImageSizeError

CAMERA = (480, 640)  # (height, width) of the exported graphs' images


def export_and_load(config, path, image_size=CAMERA):
    onnx_export.export(config, path, image_size)
    return OnnxDepthClip(config.replace(model=str(path)))


def assert_same_result(torch_result, onnx_result):
    np.testing.assert_allclose(onnx_result.depth, torch_result.depth, atol=1e-4)
    assert np.array_equal(np.isnan(onnx_result.depth), np.isnan(torch_result.depth))
    np.testing.assert_allclose(onnx_result.coarse_depth, torch_result.coarse_depth, atol=1e-4)
    np.testing.assert_allclose(onnx_result.bin_probs, torch_result.bin_probs, atol=1e-5)
    assert onnx_result.region == torch_result.region


@pytest.mark.slow
@pytest.mark.parametrize(
    "preprocessing, flip", [("resize", False), ("crop", True)], ids=["resize", "crop-flip"]
)
def test_rn50_graph_equals_the_torch_core(rn50_checkpoint, tmp_path, preprocessing, flip):
    """Real RN50 shapes: ONNX Runtime's depth equals the core's within 1e-4 m, batch 1 and 4."""
    from depthclip_ros.config import DepthClipConfig

    config = DepthClipConfig(
        model=str(rn50_checkpoint),
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        temperature=1.0,
        preprocessing=preprocessing,
        flip=flip,
    )
    core = DepthClip(config)
    exported = export_and_load(config, tmp_path / "rn50.onnx")
    images = np.stack([structured_image(*CAMERA, seed=s) for s in range(4)])
    for batch in (1, 4):
        assert_same_result(core.predict(images[:batch]), exported.predict(images[:batch]))


@pytest.mark.parametrize("preprocessing", ["resize", "crop"])
@pytest.mark.parametrize("flip", [False, True])
def test_tiny_graph_equals_the_torch_core(make_config, tmp_path, preprocessing, flip):
    config = make_config(preprocessing=preprocessing, flip=flip, input_width=128, input_height=96)
    core = DepthClip(config)
    exported = export_and_load(config, tmp_path / "tiny.onnx")
    images = np.stack([structured_image(*CAMERA, seed=s) for s in range(4)])
    for batch in (1, 4):
        assert_same_result(core.predict(images[:batch]), exported.predict(images[:batch]))


def test_bins_temperature_and_exported_prompts_change_without_re_export(make_config, tmp_path):
    config = make_config(input_width=128, input_height=96)
    core = DepthClip(config)
    exported = export_and_load(config, tmp_path / "m.onnx")
    image = structured_image(*CAMERA)
    # Bins and temperature are graph inputs; a shipped preset's prompts were exported with it.
    preset = onnx_export.load_config(None, ["tokens_prompt_1"]).depth_tokens
    changed = config.replace(
        temperature=0.5, depth_bins=tuple(2 * b for b in config.depth_bins), depth_tokens=preset
    )
    core.update_config(changed)
    exported.update_config(changed.replace(model=exported.config.model))
    assert_same_result(core.predict(image), exported.predict(image))


def test_what_the_graph_cannot_honour_is_refused_with_the_reason(make_config, tmp_path):
    config = make_config(input_width=128, input_height=96)
    exported = export_and_load(config, tmp_path / "m.onnx")
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
    with pytest.raises(ImageSizeError, match="takes 640x480 images, got 320x240"):
        exported.predict(structured_image(240, 320))
    # A config the graph cannot run is refused at load, too.
    with pytest.raises(ConfigError, match="input_width"):
        OnnxDepthClip(onnx_config.replace(input_width=160))


def test_metadata_records_the_export_and_text_features_lie_beside(make_config, tmp_path):
    config = make_config(input_width=128, input_height=96)
    path = tmp_path / "m.onnx"
    onnx_export.export(config, path, CAMERA)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    core = DepthClip(config)
    assert meta["model_identity"] == core.model_identity
    assert core.model_identity.endswith("@sha256:" + meta["checkpoint_sha256"])
    assert (meta["image_width"], meta["image_height"]) == ("640", "480")
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
    assert meta["opset"] == str(onnx_export.OPSET) and meta["exporter"].startswith("torch ")
    inputs = [i.name for i in onnx.load(str(path)).graph.input]
    assert inputs == ["images", "text_features", "bins", "temperature"]
    # The configured prompts and each shipped preset's, in the cache format.
    features = sorted((tmp_path / "m_text_features").glob("text_*.npy"))
    distinct = {repr(c.prompt_sets) for c in [config, *onnx_export.preset_configs()]}
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
    assert onnx_export.main(argv) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    assert onnx_export.main(["--model", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("depthclip-export: error: ") and err.count("\n") == 1


def test_node_runs_an_exported_model(make_config, tiny_checkpoint, tmp_path):
    """The node loads the .onnx as it loads a checkpoint; a change the graph cannot honour is
    refused when set and the node keeps running."""
    from rclpy.parameter import Parameter

    config = make_config(input_width=128, input_height=96)
    path = tmp_path / "node.onnx"
    onnx_export.export(config, path, (120, 160))
    image = structured_image(120, 160)
    expected = DepthClip(config).predict(image).depth[0]
    with running_node(str(path), tmp_path / "cache", input_width=128, input_height=96) as (
        node,
        tester,
    ):
        assert isinstance(node.estimator, OnnxDepthClip)
        tester.image_pub.publish(stamp(encode(image, "rgb8"), 7))
        depth = image_decoding.depth_image_to_array(tester.wait_for("depth/image")[0])
        np.testing.assert_allclose(depth, expected, atol=1e-4)
        result = node.set_parameters([Parameter("input_width", value=160)])[0]
        assert not result.successful and "exported graph" in result.reason
        result = node.set_parameters([Parameter("temperature", value=0.5)])[0]
        assert result.successful
        wait_until(lambda: node.estimator.config.temperature == 0.5)
