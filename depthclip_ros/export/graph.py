"""The core's image path as one ONNX graph, for ONNX Runtime (CPU, CUDA, TensorRT) and OpenVINO
without torch (the library call of depthclip-export, tools/export.py).

The graph is traced from the methods the core runs (preprocess, DepthClip.trunk,
positions_of, bin_probabilities, DepthClip.depth_from_probabilities), so no math exists twice,
in three parts joined into one file with the tensors between them named (GRAPH_PARTS): uint8
images (B, H, W, 3) -> preprocessing -> network_input -> CLIP's layer4 trunk -> features ->
head -> depth (B, H, W), its std, coarse depth and std, per-bin probabilities. TensorRT runs
the trunk alone, whose input size is fixed (onnx_runtime). Text features, bins and temperature
are inputs; the batch and (preprocessing resize) the image's height and width are dynamic; the
image path runs in float32, or in fp16 for CUDA and TensorRT (precision fp16). The text
features of the configured prompts (and of any further configs', e.g. the shipped presets') go
beside the file, in the text-feature cache format (FILE_text_features/)."""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path

import onnx
import onnx.compose
import torch

from ..config.parameters import DepthClipConfig
from ..errors import ConfigError
from ..estimator.clip_loading import LoadedModel, load_clip
from ..estimator.clip_modules import clip_module
from ..estimator.core import DepthClip
from ..estimator.depth_head import bin_probabilities
from ..estimator.preprocessing import preprocess
from ..estimator.result import FEATURE_STRIDE, network_image_size
from ..estimator.text_cache import exported_text_dir
from ..estimator.text_features import text_features
from ..files import atomic_write
from ..graph_runtimes.exported_graph import (
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    GRAPH_PARTS,
    graph_image_size,
    graph_metadata,
    graph_precision,
)
from ..graph_runtimes.onnx_runtime import OnnxDepthClip
from .reference import demo_frames, store_reference

OPSET = 18  # Resize with antialias (the core's resize) needs 18


class Preprocessing(torch.nn.Module):
    """uint8 images -> the normalised network input (the core's preprocess)."""

    def __init__(self, cfg: DepthClipConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, images):
        return preprocess(images, self.cfg)


class Trunk(torch.nn.Module):
    """The network input at its fixed size -> layer4 features (the core's trunk)."""

    def __init__(self, estimator: DepthClip, cfg: DepthClipConfig):
        super().__init__()
        self.estimator, self.cfg = estimator, cfg
        self.encoder = estimator.encoder  # registered: its weights become the graph's

    def forward(self, network_input):
        return self.estimator.trunk(network_input, self.cfg)


class HeadAndDepth(torch.nn.Module):
    """Layer4 features, the images (their size), text features, bins, temperature -> depth,
    its std, coarse depth and std, probabilities (the core's head and depth step)."""

    def __init__(self, estimator: DepthClip, cfg: DepthClipConfig):
        super().__init__()
        self.estimator, self.cfg = estimator, cfg

    def forward(self, features, images, text, bins, temperature):
        positions = self.estimator.positions_of(features, self.cfg)
        # The graph's input is the temperature; its float32 reciprocal is taken in the graph.
        probs = bin_probabilities(positions, text, 1.0 / temperature, features.shape[-2:])
        batch_bins = bins.expand(images.shape[0], -1)
        return self.estimator.depth_from_probabilities(
            probs, batch_bins, self.cfg, images.shape[1:3]
        )


def joined(parts: list) -> onnx.ModelProto:
    """One graph of the ONNX `parts` in order, each one's own names prefixed with its index so
    they cannot meet; the names between parts (GRAPH_PARTS) and the graph's inputs and outputs
    stay, so TensorRT can take the trunk out again (onnx_providers.graph_parts)."""
    kept = {*GRAPH_INPUTS, *GRAPH_OUTPUTS, *GRAPH_PARTS}
    nodes, initializers, values, functions, inputs = [], [], [], [], {}
    for index, part in enumerate(parts):
        renamed = onnx.compose.add_prefix(part, f"part{index}/")
        names = {f"part{index}/{name}": name for name in kept}

        def keep(name, names=names):
            return names.get(name, name)

        for node in renamed.graph.node:
            node.input[:] = [keep(n) for n in node.input]
            node.output[:] = [keep(n) for n in node.output]
        for value in [*renamed.graph.input, *renamed.graph.output]:
            value.name = keep(value.name)
        nodes += renamed.graph.node
        initializers += renamed.graph.initializer
        values += renamed.graph.value_info
        if index < len(parts) - 1:  # a tensor between parts: its type and shape kept
            values += renamed.graph.output
        functions += renamed.functions
        for value in renamed.graph.input:
            if value.name not in GRAPH_PARTS:
                inputs.setdefault(value.name, value)
    graph = onnx.helper.make_graph(
        nodes,
        "depthclip",
        [inputs[name] for name in GRAPH_INPUTS],
        list(renamed.graph.output),
        initializers,
        value_info=values,
    )
    model = onnx.helper.make_model(graph, opset_imports=parts[0].opset_import, functions=functions)
    model.ir_version = parts[0].ir_version
    onnx.checker.check_model(model)
    return model


def _export_part(module, example, path, names, dynamic_shapes) -> onnx.ModelProto:
    """`module` as an ONNX graph with `names` for its inputs and outputs."""
    inputs, outputs = names
    torch.onnx.export(
        module,
        example,
        str(path),
        input_names=list(inputs),
        output_names=list(outputs),
        dynamic_shapes=dynamic_shapes,
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return onnx.load(str(path))


def model_to_trace(config: DepthClipConfig, precision: str) -> LoadedModel:
    """The model on CPU in `precision`. fp16 is the model the torch core runs on CUDA (CLIP's
    convert_weights), with the batch norms halved too: torch.onnx folds each batch norm into its
    convolution and, from float32 norm parameters, would give an fp16 convolution float32
    weights (a graph ONNX Runtime refuses)."""
    loaded = load_clip(config.model, "cpu", "fp32", config.download_root)
    if precision == "fp32":
        return loaded
    clip_module("model").convert_weights(loaded.clip_model)
    for module in loaded.clip_model.visual.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.half()
    return dataclasses.replace(loaded, dtype=torch.float16)


def export(
    config: DepthClipConfig, out: Path, image_size=None, prompt_configs=(), reference=True
) -> dict:
    """Write the graph to `out` and the text features of `config`'s prompts and of each of
    `prompt_configs`' beside it, and (`reference`) the demo scenes with their float32 depth
    (export.reference); returns its metadata. The graph takes images of any size
    (preprocessing resize) or 640x480 (crop); `image_size` (height, width) fixes it to one size
    instead. The image path is fp16 for `precision: fp16`, else float32 (auto: CPU, where it is
    traced)."""
    if config.scene_bins != "off":
        raise ConfigError("scene_bins", config.scene_bins, "is not exported; use 'off'")
    precision = "fp16" if config.precision == "fp16" else "fp32"
    config = config.replace(device="cpu", precision="fp32")  # traced on CPU
    any_size = image_size is None and config.preprocessing == "resize"
    if any_size:  # traced at a size other than the network's, so the resize is in the graph
        example_size = (config.input_height + FEATURE_STRIDE, config.input_width + FEATURE_STRIDE)
    else:
        example_size = image_size or network_image_size(config)
    estimator = DepthClip(config, model_to_trace(config, precision))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = traced_parts_joined(estimator, config, example_size, any_size)
    meta = graph_metadata(
        config,
        precision,
        estimator.model_identity,
        None if any_size else example_size,
        estimator.embed_dim,
        OPSET,
        f"torch {torch.__version__} torch.onnx (dynamo)",
    )
    onnx.helper.set_model_props(model, meta)
    atomic_write(out, lambda f: f.write(model.SerializeToString()))
    folder = exported_text_dir(out)
    for cfg in [config, *prompt_configs]:
        text_features(
            estimator.loaded.clip_model,
            estimator.model_identity,
            cfg.prompt_sets,
            estimator.device,
            folder,
            estimator.head_dtype(cfg),
        )
    if reference:
        store_demo_reference(config, out, meta, image_size, prompt_configs)
    return meta


def traced_parts_joined(estimator, config, example_size, any_size: bool) -> onnx.ModelProto:
    """The core's image path traced on a batch of two `example_size` images in three parts
    (preprocessing, trunk, head and depth) and joined into one graph: the trunk alone has a
    fixed input size, so TensorRT builds one engine for every camera (onnx_runtime.graph_part).
    Batch, bins and (`any_size`) the image's height and width are dynamic."""
    head = estimator.head
    images = torch.zeros((2, *example_size, 3), dtype=torch.uint8)
    text, bins = head.text, head.bins
    temperature = torch.tensor(config.temperature, dtype=torch.float32)
    with torch.no_grad():
        network_input = preprocess(images, config)
        features = estimator.trunk(network_input, config)
    batch, bin_count = torch.export.Dim("batch", min=1), torch.export.Dim("bins", min=2)
    image_dims = {0: batch}
    if any_size:
        image_dims.update(
            {1: torch.export.Dim("height", min=2), 2: torch.export.Dim("width", min=2)}
        )
    feature_batch = 2 * batch if config.flip else batch  # the mirrors follow the images
    network_input_name, features_name = GRAPH_PARTS
    with (
        tempfile.TemporaryDirectory() as tmp,
        torch.inference_mode(False),
        torch.no_grad(),
        warnings.catch_warnings(),
    ):
        # The text features' and the bins' shared Dim is intended; the exporter warns about it.
        warnings.filterwarnings(
            "ignore", message=".*axis name: (bins|batch)", category=UserWarning
        )
        return joined(
            [
                _export_part(
                    Preprocessing(config).eval(),
                    (images,),
                    Path(tmp) / "preprocessing.onnx",
                    (["images"], [network_input_name]),
                    (image_dims,),
                ),
                _export_part(
                    Trunk(estimator, config).eval(),
                    (network_input,),
                    Path(tmp) / "trunk.onnx",
                    ([network_input_name], [features_name]),
                    ({0: batch},),
                ),
                _export_part(
                    HeadAndDepth(estimator, config).eval(),
                    (features, images, text, bins, temperature),
                    Path(tmp) / "head.onnx",
                    ([features_name, *GRAPH_INPUTS], GRAPH_OUTPUTS),
                    ({0: feature_batch}, image_dims, {1: bin_count}, {0: bin_count}, None),
                ),
            ]
        )


def store_demo_reference(config, out: Path, meta: dict, image_size, prompt_configs) -> None:
    """The demo scenes as the reference frames of `out`, their depth from its fp32 graph (an
    fp16 graph: the same model exported in fp32 for it)."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = out
        if graph_precision(meta) != "fp32":
            fp32_path = Path(tmp) / out.name
            export(config, fp32_path, image_size, prompt_configs, reference=False)
        run = config.replace(
            model=str(fp32_path), backend="onnxruntime", device="cpu", precision="auto"
        )
        store_reference(out, OnnxDepthClip(run), demo_frames(), graph_image_size(meta))
