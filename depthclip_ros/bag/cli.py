"""depthclip-bag: list a recorded rosbag2, or write a copy of it with depth and point clouds added.

  depthclip-bag info BAG
  depthclip-bag process IN OUT --image-topic /camera/image_raw [--camera-info-topic ...]
  depthclip-bag process IN OUT --image-topic /front/image_raw --image-topic /rear/image_raw

Reads and writes MCAP and sqlite3 bags with `rosbags` (no ROS installation or graph needed).
The command line only (processing.py does the work, reading.py reads the bags), and what
depthclip-fleet's shares with it. No rclpy.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

from ..config.params_files import config_from_params, load_params
from ..config.settings import NodeSettings, OutputSettings
from ..errors import DepthClipError, OutputExistsError
from ..messages import topics
from ..messages.outputs import DEFAULT_OUTPUTS
from ..model_loading import load_estimator
from .plan import STORAGES, plan_bag
from .processing import RANGE_TOPICS, check_depth_topics, process_bag
from .reading import print_info
from .warnings import warning_line

OVERWRITE_HINT = "; pass --overwrite to replace it"


def add_processing_options(parser, multi_bag: bool = False) -> None:
    """How bags are processed: depthclip-bag process's options, which depthclip-fleet shares."""
    parser.add_argument(
        "--image-topic",
        action="append",
        help="sensor_msgs/Image or CompressedImage topic; repeat it for every camera to "
        "process (one model, one pass)"
        + (
            ". Each bag gets the ones it records; a bag with none of them fails"
            if multi_bag
            else ""
        )
        + ". Default: the bag's image topic, when it records exactly one",
    )
    parser.add_argument(
        "--outputs",
        type=output_list,
        default=DEFAULT_OUTPUTS,
        help=f"comma-separated outputs to write, of {', '.join(topics.OUTPUTS)} (default: "
        f"{','.join(DEFAULT_OUTPUTS)})",
    )
    parser.add_argument(
        "--outputs-only",
        action="store_true",
        help="write only the outputs, not a copy of the input (Jazzy and later replay both with "
        "ros2 bag play -i IN -i OUT; Humble: docs/bags.md)",
    )
    parser.add_argument(
        "--compressed-depth",
        action="store_true",
        help="write depth as depth/image/compressedDepth (image_transport's PNG) instead of raw",
    )
    parser.add_argument(
        "--camera-info-topic",
        help="default: camera_info beside the image topic, if recorded (one --image-topic only)",
    )
    parser.add_argument(
        "--scan-topic",
        default=RANGE_TOPICS["scan"],
        help=f"metric_scale source scan: the LaserScan topic (default {RANGE_TOPICS['scan']})",
    )
    parser.add_argument(
        "--anchor-points-topic",
        default=RANGE_TOPICS["points"],
        help="metric_scale source points: the PointCloud2 topic (default "
        f"{RANGE_TOPICS['points']})",
    )
    parser.add_argument(
        "--anchor-depth-topic",
        action="append",
        help="metric_scale source depth: the depth Image registered to the camera (default "
        f"{RANGE_TOPICS['depth']}); once per --image-topic, in their order, to give each "
        "camera its own",
    )
    parser.add_argument(
        "--params", help="parameter YAML (default: the package's config/depthclip.yaml)"
    )
    parser.add_argument(
        "--preset", action="append", help="config/presets/ name or YAML, applied in order"
    )
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        help="output storage (default: " + ("each input's)" if multi_bag else "the input's)"),
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="frames of one size per forward pass"
    )
    parser.add_argument(
        "--device", help="auto | cpu | cuda | cuda:N (default: the parameter file's)"
    )


def range_topics(args) -> dict:
    """{metric_scale source: bag topic} of --scan-topic, --anchor-points-topic and
    --anchor-depth-topic (given once per --image-topic: {image topic: its depth topic})."""
    depth = args.anchor_depth_topic or [RANGE_TOPICS["depth"]]
    return {
        "scan": args.scan_topic,
        "points": args.anchor_points_topic,
        "depth": depth[0] if len(depth) == 1 else dict(zip(args.image_topic, depth, strict=True)),
    }


def output_list(text: str) -> tuple:
    """--outputs: 'depth,points' -> ('depth', 'points'), each a key of topics.OUTPUTS."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in topics.OUTPUTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected some of {', '.join(topics.OUTPUTS)}, got {text!r}"
        )
    return names


def chosen_outputs(args) -> tuple:
    """The outputs to write: --outputs, with depth as compressedDepth for --compressed-depth."""
    if not args.compressed_depth:
        return args.outputs
    outputs = [o for o in args.outputs if o != "depth"]
    return tuple(dict.fromkeys([*outputs, "compressed_depth"]))


def processing_option_problem(args) -> str | None:
    """What is wrong with the processing options of `args` (None: nothing), in their words."""
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size must be >= 1, got {args.batch_size}"
    image_topics = args.image_topic or []
    repeated = sorted({t for t in image_topics if image_topics.count(t) > 1})
    if repeated:
        return f"--image-topic {', '.join(repeated)} is given more than once"
    depth_topics = args.anchor_depth_topic or []
    if len(depth_topics) > 1 and len(depth_topics) != len(image_topics):
        return (
            f"--anchor-depth-topic is given {len(depth_topics)} times for "
            f"{len(image_topics)} --image-topic: once (every camera's) or once per "
            "--image-topic, in their order"
        )
    if args.camera_info_topic and len(image_topics) > 1:
        return (
            "--camera-info-topic applies to one --image-topic; with several, each camera's "
            "camera_info is the one beside its image"
        )
    return None


def processing_params(args) -> dict:
    """The parameters the processing options give: the files, then --device."""
    overrides = {"device": args.device} if args.device else {}
    return load_params(args.params, args.preset or (), overrides)


def error_line(exc: DepthClipError) -> str:
    """An error of processing a bag, told in the options' words."""
    return f"{exc}{OVERWRITE_HINT}" if isinstance(exc, OutputExistsError) else str(exc)


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C: partial output is removed."""

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)


@contextlib.contextmanager
def progress_bar(total: int, shown: bool):
    """A frames_written callback drawing tqdm's bar with its ETA on stderr."""
    from tqdm import tqdm

    with tqdm(total=total, unit="frame", desc="depth", disable=not shown) as bar:
        yield bar.update


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthclip-bag", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="topics, types and counts of a bag; image topics marked")
    p_info.add_argument("bag")
    p = sub.add_parser(
        "process", help="copy IN to OUT, adding depth, depth/camera_info and points"
    )
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    add_processing_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    try:
        if args.command == "info":
            print_info(Path(args.bag))
            return 0
        problem = processing_option_problem(args)
        if problem:
            print(f"depthclip-bag: error: {problem}", file=sys.stderr)
            return 2
        params = processing_params(args)
        config = config_from_params(params)
        settings = OutputSettings.from_params(params)
        with plan_bag(
            Path(args.input),
            Path(args.output),
            args.image_topic,
            camera_info_topic=args.camera_info_topic,
            storage=args.storage,
            overwrite=args.overwrite,
            outputs=chosen_outputs(args),
            outputs_only=args.outputs_only,
        ) as plan:
            check_depth_topics(settings, len(plan.cameras), range_topics(args))
            # After the cheap checks: it takes seconds (TensorRT: minutes, its engine's build).
            estimator = load_estimator(config, args.batch_size)
            if hasattr(estimator, "measure_depth_figure"):  # a lower precision's, measured here
                estimator.measure_depth_figure()
            with progress_bar(plan.frames, not args.quiet) as bar:
                stats = process_bag(
                    plan,
                    estimator,
                    settings,
                    batch_size=args.batch_size,
                    scene_switch_frames=NodeSettings.from_params(params).scene_switch_frames,
                    frames_written=bar,
                    range_topics=range_topics(args),
                )
    except DepthClipError as exc:
        print(f"depthclip-bag: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("depthclip-bag: interrupted; no output written", file=sys.stderr)
        return 130
    for entry in stats["warnings"]:
        print(warning_line(entry), file=sys.stderr)
    preparing = stats["preparing_seconds"]
    print(
        f"wrote {args.output} ({stats['storage']}): {stats['copied']} input messages copied, "
        f"{stats['seconds']:.1f} s"
        + (f" (and {preparing:.1f} s preparing image sizes)" if preparing else "")
    )
    for topic, camera in stats["cameras"].items():
        print(f"  {topic}: {camera_summary(camera)}")
    figure = getattr(estimator, "depth_figure_words", None)  # graphs and bf16 measure one
    print(
        f"  model: {estimator.model_identity} on {estimator.device} "
        f"({estimator.precision_detail}, {estimator.runtime})"
        + (f"; depth vs fp32 here: {figure}" if figure else "")
    )
    return 0


def camera_summary(camera: dict) -> str:
    """One camera's line of the summary: what went where, what was rejected."""
    outputs = camera["outputs"]
    depth_topics = [outputs[k] for k in ("depth", "compressed_depth") if k in outputs]
    parts = []
    if depth_topics:
        parts.append(f"{camera['depth']} depth images on {' and '.join(depth_topics)}")
    cloud_topics = [outputs[k] for k in ("points", "clearing") if k in outputs]
    if cloud_topics:
        parts.append(f"{camera['clouds']} clouds on {' and '.join(cloud_topics)}")
    others = [outputs[k] for k in ("std", "camera_info", "colored") if k in outputs]
    if not depth_topics and others:
        parts.append(f"{camera['depth']} frames on {', '.join(others)}")
    parts.append(f"{camera['rejected']} frames rejected")
    parts.append(f"{camera['info_fallbacks']} without a camera_info of their stamp")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
