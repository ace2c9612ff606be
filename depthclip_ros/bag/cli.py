"""depthclip-bag: list a recorded rosbag2, or write a copy of it with depth and point clouds added.

  depthclip-bag info BAG
  depthclip-bag process IN OUT --image-topic /camera/image_raw [--camera-info-topic ...]
  depthclip-bag process IN OUT --image-topic /front/image_raw --image-topic /rear/image_raw

Reads and writes MCAP and sqlite3 bags with `rosbags` (no ROS installation or graph needed).
The command line only: bag_processing does the work, bag_files reads the bags. No rclpy.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..config.parameters import DepthClipConfig, OutputSettings
from ..config.params_files import load_params
from ..errors import DepthClipError
from .processing import STORAGES, process_bag
from .reading import print_info


def add_processing_options(parser, multi_bag: bool = False) -> None:
    """How bags are processed: depthclip-bag process's options, which depthclip-fleet shares."""
    parser.add_argument(
        "--image-topic",
        required=True,
        action="append",
        help="sensor_msgs/Image or CompressedImage topic; repeat it for every camera to "
        "process (one model, one pass)"
        + (
            ". Each bag gets the ones it records; a bag with none of them fails"
            if multi_bag
            else ""
        ),
    )
    parser.add_argument(
        "--camera-info-topic",
        help="default: camera_info beside the image topic, if recorded (one --image-topic only)",
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


def _terminate(signum, frame):  # SIGTERM unwinds like Ctrl-C, so the partial output is removed
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "info":
            print_info(Path(args.bag))
            return 0
        params = load_params(
            args.params, args.preset or (), {"device": args.device} if args.device else {}
        )
        stats = process_bag(
            Path(args.input),
            Path(args.output),
            args.image_topic,
            DepthClipConfig.from_params(params),
            OutputSettings.from_params(params),
            camera_info_topic=args.camera_info_topic,
            storage=args.storage,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except DepthClipError as exc:
        print(f"depthclip-bag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("depthclip-bag: interrupted; no output written", file=sys.stderr)
        return 130
    for problem, timestamp in stats["problems"].items():
        print(f"warning: {problem} (first at log time {timestamp} ns)", file=sys.stderr)
    print(
        f"wrote {args.output} ({stats['storage']}): {stats['copied']} input messages copied, "
        f"{stats['seconds']:.1f} s"
    )
    for topic, camera in stats["cameras"].items():
        print(
            f"  {topic}: {camera['depth']} depth images on {camera['outputs']['depth']}, "
            f"{camera['clouds']} clouds on {camera['outputs']['points']}, {camera['rejected']} "
            f"frames rejected, {camera['info_fallbacks']} without a camera_info of their stamp"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
