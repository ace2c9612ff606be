"""The core's image path as one ONNX graph, for ONNX Runtime (CPU, CUDA, TensorRT) without
torch (the library call of depthclip-export, tools/export.py).

The graph is traced from the modules the core runs (DepthClip.positions, bin_probabilities,
DepthClip.depth_from_probabilities), so no math exists twice: uint8 images (B, H, W, 3) ->
preprocessing -> CLIP's layer4 -> head -> depth (B, H, W), coarse depth and per-bin
probabilities. Text features, bins and temperature are inputs; the batch and (preprocessing
resize) the image's height and width are dynamic; the image path runs in float32, or in fp16
for CUDA and TensorRT (precision fp16). The text features of the configured prompts (and of any
further configs', e.g. the shipped presets') go beside the file, in the text-feature cache
format (FILE_text_features/).
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path

import clip
import torch

from ..config.parameters import DepthClipConfig
from ..errors import ConfigError
from ..estimator.clip_loading import LoadedModel, load_clip
from ..estimator.core import STRIDE, DepthClip
from ..estimator.depth_head import bin_probabilities
from ..estimator.result import network_image_size
from ..estimator.text_cache import exported_text_dir
from ..estimator.text_features import text_features
from ..files import atomic_write
from ..graph_runtimes.exported_graph import (
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    graph_image_size,
    graph_metadata,
    graph_precision,
)
from ..graph_runtimes.onnx_runtime import OnnxDepthClip
from .reference import demo_frames, store_reference

OPSET = 18  # Resize with antialias (the core's resize) needs 18


class ImagePath(torch.nn.Module):
    """uint8 images, text features, bins, temperature -> depth, coarse depth, probabilities,
    with the core's own steps."""

    def __init__(self, estimator: DepthClip, cfg: DepthClipConfig):
        super().__init__()
        self.estimator, self.cfg = estimator, cfg
        self.encoder = estimator.encoder  # registered: its weights become the graph's

    def forward(self, images, text, bins, temperature):
        positions, _, grid = self.estimator.positions(images, self.cfg)
        # The graph's input is the temperature; its float32 reciprocal is taken in the graph.
        probs = bin_probabilities(positions, text, 1.0 / temperature, grid)
        batch_bins = bins.expand(images.shape[0], -1)
        return self.estimator.depth_from_probabilities(
            probs, batch_bins, self.cfg, images.shape[1:3]
        )


def model_to_trace(config: DepthClipConfig, precision: str) -> LoadedModel:
    """The model on CPU in `precision`. fp16 is the model the torch core runs on CUDA (CLIP's
    convert_weights), with the batch norms halved too: torch.onnx folds each batch norm into its
    convolution and, from float32 norm parameters, would give an fp16 convolution float32
    weights (a graph ONNX Runtime refuses)."""
    loaded = load_clip(config.model, "cpu", "fp32", config.download_root)
    if precision == "fp32":
        return loaded
    clip.model.convert_weights(loaded.clip_model)
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
        example_size = (config.input_height + STRIDE, config.input_width + STRIDE)
    else:
        example_size = image_size or network_image_size(config)
    estimator = DepthClip(config, model_to_trace(config, precision))
    module = ImagePath(estimator, config).eval()
    head = estimator.head
    example = (
        torch.zeros((2, *example_size, 3), dtype=torch.uint8),
        head.text,
        head.bins,
        torch.tensor(config.temperature, dtype=torch.float32),
    )
    batch, bins = torch.export.Dim("batch", min=1), torch.export.Dim("bins", min=2)
    images = {0: batch}
    if any_size:
        images.update({1: torch.export.Dim("height", min=2), 2: torch.export.Dim("width", min=2)})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        torch.inference_mode(False),
        torch.no_grad(),
        warnings.catch_warnings(),
    ):
        # The text features' and the bins' shared Dim is intended; the exporter warns about it.
        warnings.filterwarnings("ignore", message=".*axis name: bins", category=UserWarning)
        staged = Path(tmp) / out.name
        torch.onnx.export(
            module,
            example,
            str(staged),
            input_names=list(GRAPH_INPUTS),
            output_names=list(GRAPH_OUTPUTS),
            dynamic_shapes=(images, {1: bins}, {0: bins}, None),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        import onnx

        model = onnx.load(str(staged))
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
