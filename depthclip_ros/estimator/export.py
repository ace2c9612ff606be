"""depthclip-export: the core's image path as one ONNX graph, for ONNX Runtime (CPU, CUDA,
TensorRT) without torch.

  depthclip-export --model RN50|CKPT --out depthclip.onnx [--params P] [--preset NAME]
                   [--precision fp32|fp16] [--image-size 640x480]

The graph is traced from the modules the core runs (DepthClip.positions, bin_probabilities,
DepthClip.depth_from_probabilities), so no math exists twice: uint8 images (B, H, W, 3) ->
preprocessing -> CLIP's layer4 -> head -> depth (B, H, W), coarse depth and per-bin
probabilities. Text features, bins and temperature are inputs; the batch and (preprocessing
resize) the image's height and width are dynamic; the image path runs in float32, or in fp16
for CUDA and TensorRT (precision fp16). The text features of the configured prompts and of every
shipped preset go beside the file, in the text-feature cache format (FILE_text_features/).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import warnings
from pathlib import Path

import clip
import torch

from ..config.parameters import DepthClipConfig
from ..config.params_files import load_config, load_params, preset_names
from ..errors import ConfigError, DepthClipError
from ..files import atomic_write, cannot_write
from .clip_loading import LoadedModel, load_clip
from .core import STRIDE, DepthClip
from .depth_head import bin_probabilities
from .onnx_runtime import ANY_SIZE, GRAPH_INPUTS, GRAPH_OUTPUTS, GRAPH_PRECISIONS, graph_metadata
from .result import network_image_size
from .text_cache import exported_text_dir
from .text_features import text_features

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
        probs = bin_probabilities(positions, text, temperature, grid)
        batch_bins = bins.expand(images.shape[0], -1)
        return self.estimator.depth_from_probabilities(
            probs, batch_bins, self.cfg, images.shape[1:3]
        )


def parse_size(text: str) -> tuple:
    """'640x480' -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return height, width


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


def export(config: DepthClipConfig, out: Path, image_size=None, params_file=None) -> dict:
    """Write the graph to `out` and the text features beside it; returns its metadata. The
    graph takes images of any size (preprocessing resize) or 640x480 (crop); `image_size`
    (height, width) fixes it to one size instead. The image path is fp16 for
    `precision: fp16`, else float32 (auto: CPU, where it is traced)."""
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
    head = estimator._head
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
    for cfg in [config, *preset_configs(params_file)]:
        text_features(
            estimator.loaded.clip_model,
            estimator.model_identity,
            cfg.prompt_sets,
            estimator.device,
            folder,
            estimator.head_dtype(cfg),
        )
    return meta


def preset_configs(params_file=None) -> list:
    """The config of every shipped preset on top of the parameter file (their prompts)."""
    configs = []
    for name in preset_names():
        try:
            configs.append(load_config(params_file, [name]))
        except ConfigError:  # a preset that does not fit these parameters has no prompts here
            continue
    return configs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="depthclip-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="CLIP name or checkpoint (default: the parameter file's)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--params", help="parameter YAML (default: config/depthclip.yaml)")
    parser.add_argument("--preset", action="append", help="config/presets/ name or YAML")
    parser.add_argument(
        "--precision",
        choices=GRAPH_PRECISIONS,
        help="the graph's image path: fp32, or fp16 for CUDA / TensorRT (default: fp16 when "
        "the parameter file says precision fp16, else fp32)",
    )
    parser.add_argument(
        "--image-size",
        type=parse_size,
        help="fix the graph to camera images of WIDTHxHEIGHT (default: images of any size, "
        "resized in the graph; 640x480 for preprocessing crop)",
    )
    args = parser.parse_args(argv)
    if not args.out.endswith(".onnx"):
        parser.error("--out must name a .onnx file")
    try:
        overrides = {"model": args.model} if args.model else {}
        if args.precision:
            overrides["precision"] = args.precision
        config = DepthClipConfig.from_params(
            load_params(args.params, args.preset or (), overrides)
        )
        meta = export(config, Path(args.out), args.image_size, args.params)
    except DepthClipError as exc:
        print(f"depthclip-export: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # reading the model and parameters says its own errors: a write
        print(f"depthclip-export: error: {cannot_write(args.out, exc)}", file=sys.stderr)
        return 2
    sizes = (
        "any size"
        if meta["image_width"] == ANY_SIZE
        else f"{meta['image_width']}x{meta['image_height']}"
    )
    print(
        f"wrote {args.out}: {meta['model_identity']}, {sizes} images, "
        f"{meta['preprocessing']} to {meta['input_width']}x"
        f"{meta['input_height']}, flip {meta['flip']}, {meta['precision']}, opset "
        f"{meta['opset']}; text features "
        f"in {exported_text_dir(Path(args.out))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
