"""depthclip-export: the core's image path as one ONNX graph, for ONNX Runtime (CPU, CUDA,
TensorRT) without torch.

  depthclip-export --model RN50|CKPT --out depthclip.onnx [--params P] [--preset NAME]
                   [--precision fp32|fp16] [--image-size 640x480]

The command line of estimator/export.py: the graph, its metadata and the text features of the
configured prompts and of every shipped preset beside it (FILE_text_features/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config.parameters import DepthClipConfig
from ..config.params_files import load_params, preset_configs
from ..errors import DepthClipError
from ..estimator.export import export
from ..estimator.onnx_runtime import ANY_SIZE, GRAPH_PRECISIONS
from ..estimator.text_cache import exported_text_dir
from ..files import cannot_write


def parse_size(text: str) -> tuple:
    """'640x480' -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return height, width


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
        meta = export(config, Path(args.out), args.image_size, preset_configs(args.params))
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
