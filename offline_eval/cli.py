"""depthclip-eval: NYU Depth V2 through the DepthCLIP core, with the paper's protocol.

depthclip-eval --data-root NYU --out results/            # Table 1 row (needs CLIP RN50 weights)
depthclip-eval --data-root NYU --baseline uniform        # the paper's lower bound
depthclip-eval --data-root NYU --sweep bins              # Table 2; --sweep tokens: Table 3
depthclip-eval --data-root NYU --sweep scene-bins        # also: features, templates
depthclip-eval --data-root NYU --scene-bins oracle       # bins of NYU's scene (Table 2 per class)
depthclip-eval --data-root NYU --temporal --limit 2      # temporal_filter on still, pan, moving
depthclip-eval --data-root NYU --align scan:0.25         # metric_scale on a simulated 2D lidar
depthclip-eval --bag BAG --image-topic /cam/color/image_raw \
    --depth-topic /cam/aligned_depth_to_color/image_raw --params robot.yaml   # your own scenes
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from depthclip_ros.errors import DepthClipError
from depthclip_ros.files import atomic_write, cannot_write

from .alignment import Alignment
from .bag_frames import open_bag_frames
from .data import open_dataset
from .evaluation import EvalRun, evaluate
from .report import markdown_report, markdown_table, sweep_table


def _presets(*names):
    return {name: {"presets": (name,)} for name in names}


# --sweep NAME -> {row label: EvalRun changes}, run on top of the user's --preset(s).
SWEEPS = {
    "bins": _presets(
        "bins_original",
        "bins_class_dependent_1",
        "bins_class_dependent_2",
        "bins_class_dependent_3",
        "bins_class_dependent_4",
    ),
    "tokens": _presets("tokens_original", "tokens_prompt_1", "tokens_prompt_2", "tokens_prompt_3"),
    "features": _presets("features_subsampled", "features_projected"),
    "templates": _presets("templates_single", "templates_ensemble"),
    "scene-bins": {
        "scene bins off": {"scene_bins": "off"},
        "scene bins auto": {"scene_bins": "auto"},
        "scene bins oracle": {"scene_bins": "oracle"},
    },
}


def alignment(text: str) -> Alignment:
    try:
        return Alignment.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser():
    p = argparse.ArgumentParser(
        prog="depthclip-eval",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--data-root", help="folder holding official_splits/test/<scene>/ (BTS layout)")
    p.add_argument(
        "--split-file",
        help="rows 'scene/rgb_X.jpg scene/sync_depth_X.png [focal]' (default: scan)",
    )
    p.add_argument("--mat", help="nyu_depth_v2_labeled.mat instead of --data-root")
    p.add_argument(
        "--bag",
        help="a rosbag2 of your camera with a depth camera's depth registered to it, instead "
        "of NYU: scored whole, at the camera's size, with --params as the node runs (no paper "
        "preset)",
    )
    p.add_argument("--image-topic", help="--bag: the colour image topic")
    p.add_argument(
        "--depth-topic",
        help="--bag: the depth registered to it (32FC1 m, 16UC1 mm; aligned_depth_to_color)",
    )
    p.add_argument(
        "--camera-info-topic", help="--bag: the image's camera_info (default: beside it)"
    )
    p.add_argument("--every", type=int, default=1, help="--bag: every N-th image only")
    p.add_argument(
        "--protocol",
        choices=("camera", "nyu"),
        help="--bag: camera (default: every pixel at the camera's size, --params as the node "
        "runs it) or nyu (the paper's: its preset and eval crop, 640x480 frames, as --data-root)",
    )
    p.add_argument("--splits", help="splits.mat (testNdxs) with --mat")
    p.add_argument("--params", help="parameter YAML (default: config/depthclip.yaml)")
    p.add_argument(
        "--preset", action="append", default=[], help="config preset(s) on top of 'paper'"
    )
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: from --params)")
    p.add_argument("--out", help="output folder: results.json, results.md, per_image.jsonl, vis/")
    p.add_argument(
        "--save-vis", type=int, default=0, metavar="N", help="save N panels (needs --out)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument(
        "--skip-missing", action="store_true", help="skip missing files, count them in results"
    )
    p.add_argument(
        "--baseline", choices=("uniform", "constant"), help="a baseline instead of the model"
    )
    p.add_argument(
        "--constant-value", type=float, help="--baseline constant value (default: median bin)"
    )
    p.add_argument("--seed", type=int, default=0, help="--baseline uniform seed")
    p.add_argument(
        "--scene-bins",
        choices=("off", "auto", "oracle"),
        default="off",
        help="bins per scene: auto = CLIP picks it, oracle = NYU's scene folder (paper Table 2)",
    )
    p.add_argument(
        "--align",
        type=alignment,
        default=Alignment(),
        metavar="HOW",
        help="each image's depth put in a scale before scoring: none (the paper's protocol), "
        "median or lstsq (oracles from the image's truth), scan:H (a simulated 2D lidar H m "
        "below the camera) or random:N (N points of the truth), fitted by metric_scale's rule "
        "(a :MODE suffix, scan:0.25:bins, picks its mode: scale, scale_shift or bins)",
    )
    p.add_argument(
        "--temporal",
        action="store_true",
        help="temporal_filter off and mixture on sequences made of the first --limit images "
        "(default 1; still with noise, panning, a moving object): flicker, lag, error, cost",
    )
    p.add_argument(
        "--sweep",
        choices=tuple(SWEEPS),
        help="bins (paper Table 2), tokens (Table 3), features, templates or scene-bins",
    )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out) if args.out else None
    base = EvalRun(
        params_file=args.params,
        presets=tuple(args.preset),
        device=args.device,
        baseline=args.baseline,
        constant_value=args.constant_value,
        seed=args.seed,
        limit=args.limit,
        batch_size=args.batch_size,
        workers=args.workers,
        save_vis=args.save_vis,
        resume=args.resume,
        scene_bins=args.scene_bins,
        align=args.align,
        paper=not args.bag or args.protocol == "nyu",
    )
    problem = _bag_problem(args)
    if problem:
        print(f"depthclip-eval: {problem}", file=sys.stderr)
        return 2
    if args.temporal:
        return _temporal(args)
    sweep = SWEEPS[args.sweep] if args.sweep else {}
    runs = [
        dataclasses.replace(
            base,
            presets=(*args.preset, *changes.get("presets", ())),
            scene_bins=changes.get("scene_bins", base.scene_bins),
        )
        for changes in sweep.values()
    ] or [base]
    try:
        # Every cheap input (data, every run's config) before the first model load.
        data = (
            open_bag_frames(
                args.bag,
                args.image_topic,
                args.depth_topic,
                args.camera_info_topic,
                args.every,
                nyu_protocol=args.protocol == "nyu",
            )
            if args.bag
            else open_dataset(
                args.data_root, args.split_file, args.skip_missing, args.mat, args.splits
            )
        )
        for run in runs:
            run.config()
        if args.sweep:
            tables = {}
            for preset, run in zip(sweep, runs):
                print(f"== {preset}", file=sys.stderr)
                tables[preset] = evaluate(
                    data, run, out / preset.replace(" ", "_") if out else None
                )
            text = sweep_table(tables)
            if out:
                atomic_write(out / f"sweep_{args.sweep}.md", lambda f: f.write(text.encode()))
        else:
            text = markdown_report(evaluate(data, base, out))
    except DepthClipError as exc:
        print(f"depthclip-eval: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the data's read errors are DataErrors: this is a write
        print(f"depthclip-eval: {cannot_write(out or 'the results', exc)}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _bag_problem(args) -> str | None:
    """What is wrong with --bag and the options beside it (None: nothing)."""
    if not args.bag:
        return "--protocol is --bag's (NYU's own data is scored as NYU)" if args.protocol else None
    if not (args.image_topic and args.depth_topic):
        return "--bag needs --image-topic and --depth-topic (the depth registered to the image)"
    if args.data_root or args.mat:
        return "--bag replaces --data-root and --mat: give one"
    if args.temporal or args.scene_bins == "oracle":
        return "--temporal and --scene-bins oracle are NYU's: not with --bag"
    return None


def _temporal(args) -> int:
    """--temporal: offline_eval.temporal's table for each of the first --limit images, with the
    --params config (resize: the pan's frames are narrower than 640)."""
    from depthclip_ros.config.params_files import load_config
    from depthclip_ros.metrics import gt_from_png
    from depthclip_ros.model_loading import load_estimator

    from . import temporal

    try:
        data = open_dataset(
            args.data_root, args.split_file, args.skip_missing, args.mat, args.splits
        )
        overrides = {"device": args.device} if args.device else {}
        model = load_estimator(load_config(args.params, list(args.preset), overrides))
        rows = []
        for sample in data.samples[: args.limit or 1]:
            rgb, depth_mm = data.load(sample)
            found, _, _ = temporal.measure(model, rgb, gt_from_png(depth_mm))
            rows += [[sample.name, *row] for row in found]
    except DepthClipError as exc:
        print(f"depthclip-eval: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(["image", *temporal.HEAD], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
