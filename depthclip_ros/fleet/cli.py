"""depthclip-fleet: depth for every bag of an archive, on Ray (a local Ray, or a cluster).

  depthclip-fleet IN... --out OUTDIR --image-topic /camera/image_raw [--workers N]
      [--address auto | HOST:PORT] [--resume]

Every bag under the inputs (rosbag2 folders, .mcap, .db3) is written to OUTDIR with its layout
mirrored, as `depthclip-bag process` writes it. Exit 0: every bag done; 1: some failed (named);
2: usage, configuration or cluster error; 130: interrupted (nothing half-written; --resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bag.cli import (
    add_processing_options,
    chosen_outputs,
    processing_option_problem,
    processing_params,
    range_topics,
    stop_on_sigterm,
)
from ..bag.processing import check_depth_topics
from ..config.settings import OutputSettings
from ..errors import DepthClipError
from ..files import leftover_staging, remove_leftover_staging
from .discovery import find_bags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthclip-fleet",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="IN", help="bags, or folders searched for bags"
    )
    parser.add_argument(
        "--out", required=True, metavar="OUTDIR", help="where outputs and manifest.jsonl go"
    )
    group = parser.add_argument_group("processing (as depthclip-bag process)")
    add_processing_options(group, multi_bag=True)
    group = parser.add_argument_group("cluster")
    group.add_argument(
        "--address",
        help="Ray cluster to join: 'auto' (the one `ray start` runs on this machine), HOST:PORT "
        "or ray://HOST:10001; default: a local Ray started for this run and stopped after it",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=1,
        help="model workers, each loading the model once (default 1)",
    )
    group.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1.0,
        help="CPUs reserved per worker; on CPU also its torch threads (default 1)",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per worker, fractions share one (0.5: two workers a GPU); default 1 when the "
        "cluster has GPUs and --device is not cpu, else 0 (CPU)",
    )
    group.add_argument(
        "--bags-in-flight",
        type=int,
        help="bags read and written at once, each a Ray task (default: two per worker)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=2,
        help="times a bag is tried again after its worker or task process died (default 2)",
    )
    group = parser.add_argument_group("runs")
    group.add_argument(
        "--resume",
        action="store_true",
        help="skip bags the manifest has done with the same model and config; others are "
        "(re)done, an output without its 'done' line replaced",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that exist (otherwise such bags fail)",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _usage_checks(args, parser) -> None:
    problem = processing_option_problem(args)
    if problem:
        parser.error(problem)
    for name in ("workers", "bags_in_flight"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.retries < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    if args.cpus_per_worker < 0 or (args.gpus_per_worker or 0) < 0:
        parser.error("--cpus-per-worker and --gpus-per-worker must be >= 0")


def summary_table(summary) -> str:
    rate = summary.frames / summary.processing_s if summary.processing_s else 0.0
    total_s = summary.startup_s + summary.processing_s
    rows = [
        ("bags done", len(summary.done)),
        ("bags failed", len(summary.failed)),
        ("bags skipped (done before)", len(summary.skipped)),
        ("frames", summary.frames),
        ("start-up (Ray, workers, models)", f"{summary.startup_s:.1f} s"),
        ("processing", f"{summary.processing_s:.1f} s"),
        ("frames/s (start-up excluded)", f"{rate:.1f}"),
        ("frames/s (start-up included)", f"{summary.frames / total_s if total_s else 0:.1f}"),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _usage_checks(args, parser)
    stop_on_sigterm()
    outdir = Path(args.out)
    started_ray, jobs = False, []
    try:
        try:
            from . import run
        except ImportError as exc:
            print(
                f"depthclip-fleet: error: needs Ray ({exc}): pip install 'ray>=2.60'",
                file=sys.stderr,
            )
            return 2
        jobs = find_bags(args.inputs, outdir)
        params = processing_params(args)
        if args.image_topic:  # else each bag's cameras are found by its worker
            check_depth_topics(
                OutputSettings.from_params(params), len(args.image_topic), range_topics(args)
            )
        options = run.FleetOptions(
            image_topics=args.image_topic,
            camera_info_topic=args.camera_info_topic,
            storage=args.storage,
            batch_size=args.batch_size,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            gpus_per_worker=args.gpus_per_worker,
            bags_in_flight=args.bags_in_flight,
            retries=args.retries,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet,
            outputs=chosen_outputs(args),
            outputs_only=args.outputs_only,
            range_topics=range_topics(args),
        )
        started_ray = run.connect(args.address)
        summary = run.run_fleet(
            jobs, params, options, outdir, log=lambda line: print(line, file=sys.stderr)
        )
    except DepthClipError as exc:
        print(f"depthclip-fleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if started_ray:  # this run's own Ray: once it is down, nothing of the run writes
            import ray

            ray.shutdown()  # (a bag too slow to stop, or an attempt started as it stopped)
            for job in jobs:
                remove_leftover_staging(job.output)
        leftovers = [p for job in jobs for p in leftover_staging(job.output)]
        print(
            f"depthclip-fleet: interrupted; bags finished so far are in {outdir} and "
            f"{outdir / 'manifest.jsonl'}, none half-written"
            + (f" ({len(leftovers)} staging folders could not be removed)" if leftovers else "")
            + "; run again with --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    print(summary_table(summary))
    for job, error in summary.failed:
        print(f"failed: {job.input}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
