"""depthclip-export: the core's image path as one ONNX graph, for ONNX Runtime (CPU, CUDA,
TensorRT) and OpenVINO without torch.

  depthclip-export --model RN50|CKPT --out depthclip.onnx [--params P] [--preset NAME]
                   [--precision fp32|fp16|int8] [--image-size 640x480]
                   [--calibration demo|IMAGES_FOLDER|BAG [--calibration-topic T]]
  depthclip-export --precision int8 --from-onnx FP32.onnx --calibration SOURCE --out X.onnx

The command line of the export package: the graph, its metadata and the text features of the
configured prompts and of every shipped preset beside it (FILE_text_features/); int8: the trunk
quantised on --calibration's frames, its depth difference from fp32 printed and stored.
--from-onnx quantises an fp32 graph written before, without torch (the torch-free install: a
robot calibrates on its own camera and measures on its own CPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config.parameters import DepthClipConfig
from ..config.params_files import load_params, preset_configs
from ..errors import DepthClipError
from ..estimator.text_cache import exported_text_dir
from ..export.calibration import DEFAULT_LIMIT, calibration_frames
from ..files import cannot_write
from ..graph_runtimes.exported_graph import GRAPH_PRECISIONS, graph_image_size, precision_detail


def parse_size(text: str) -> tuple:
    """'640x480' -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return height, width


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthclip-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="CLIP name or checkpoint (default: the parameter file's)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--params", help="parameter YAML (default: config/depthclip.yaml)")
    parser.add_argument("--preset", action="append", help="config/presets/ name or YAML")
    parser.add_argument(
        "--precision",
        choices=GRAPH_PRECISIONS,
        help="the graph's image path: fp32, fp16 for CUDA / TensorRT, or int8 for CPUs (needs "
        "--calibration) (default: fp16 when the parameter file says precision fp16, else fp32)",
    )
    parser.add_argument(
        "--calibration",
        help="int8: frames to calibrate on: 'demo' (the built-in scenes) or 'demo:corridor,...', "
        "a folder of images, or a bag (a quarter of the frames held out to measure the int8 "
        "graph against fp32)",
    )
    parser.add_argument(
        "--calibration-topic", default="", help="the bag's image topic (default: its only one)"
    )
    parser.add_argument(
        "--calibration-frames",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"at most this many frames, spread over the source (default {DEFAULT_LIMIT})",
    )
    parser.add_argument(
        "--image-size",
        type=parse_size,
        help="fix the graph to camera images of WIDTHxHEIGHT (default: images of any size, "
        "resized in the graph; 640x480 for preprocessing crop)",
    )
    parser.add_argument(
        "--from-onnx",
        metavar="FP32.onnx",
        help="int8: quantise this fp32 graph (written by depthclip-export, its text features "
        "beside it) instead of tracing --model; needs no torch",
    )
    return parser


def main(argv=None) -> int:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if not args.out.endswith(".onnx"):
        parser.error("--out must name a .onnx file")
    if args.from_onnx and (args.precision != "int8" or args.model or args.image_size):
        parser.error(
            "--from-onnx takes --precision int8, and no --model or --image-size (the fp32 "
            "graph fixed them at its export)"
        )
    try:
        overrides = {"model": args.model} if args.model else {}
        if args.from_onnx:
            overrides["model"] = args.from_onnx
        int8 = args.precision == "int8"
        if args.precision:  # int8 is the export's: the config it traces with is fp32
            overrides["precision"] = "fp32" if int8 else args.precision
        config = DepthClipConfig.from_params(
            load_params(args.params, args.preset or (), overrides)
        )
        if int8 and not args.calibration:
            parser.error(
                "--precision int8 needs --calibration: 'demo', a folder of your camera's "
                "images, or a bag of it"
            )
        out, presets = Path(args.out), preset_configs(args.params)
        if int8:
            frames, source = calibration_frames(
                args.calibration, args.calibration_topic, args.calibration_frames
            )
            from ..export.quantization import export_int8

            meta = export_int8(
                config, out, frames, source, args.image_size, presets, fp32_graph=args.from_onnx
            )
        else:
            from ..export.graph import export  # torch: the model traced

            meta = export(config, out, args.image_size, presets)
    except DepthClipError as exc:
        print(f"depthclip-export: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # reading the model and parameters says its own errors: a write
        print(f"depthclip-export: error: {cannot_write(args.out, exc)}", file=sys.stderr)
        return 2
    size = graph_image_size(meta)
    sizes = "any size" if size is None else f"{size[1]}x{size[0]}"
    print(
        f"wrote {args.out}: {meta['model_identity']}, {sizes} images, "
        f"{meta['preprocessing']} to {meta['input_width']}x"
        f"{meta['input_height']}, flip {meta['flip']}, {precision_detail(meta)}, opset "
        f"{meta['opset']}; text features "
        f"in {exported_text_dir(Path(args.out))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
