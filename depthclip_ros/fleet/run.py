"""The fleet driver: model workers started, bags handed out a few at a time, each bag's end
recorded in the manifest, failures of the cluster retried, a Ctrl-C leaving nothing half
written. Runs where `depthclip-fleet` runs (the head of a cluster, or a laptop).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time

import ray

from ..bag.processing import RANGE_TOPICS
from ..bag.reading import image_topics_of, open_bag
from ..errors import DepthClipError, FleetError
from ..files import remove_leftover_staging
from ..messages.outputs import DEFAULT_OUTPUTS
from .discovery import BagJob
from .manifest import DONE, FAILED, Manifest, config_hash
from .workers import ModelWorker, RunControl, process_bag_task

POLL_S = 0.5
STOP_WAIT_S = 60  # for the bags in flight to stop after a Ctrl-C (each ends its chunk)
# For a restarted worker to load its model again before a bag is retried on it.
RESTART_WAIT_S = 600


@dataclasses.dataclass
class FleetOptions:
    image_topics: list | None  # None: each bag's one image topic
    camera_info_topic: str | None = None
    storage: str | None = None
    batch_size: int = 1
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs and device allows
    bags_in_flight: int | None = None  # None: two per worker
    retries: int = 2
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    outputs: tuple = DEFAULT_OUTPUTS
    outputs_only: bool = False
    range_topics: dict = dataclasses.field(default_factory=lambda: dict(RANGE_TOPICS))

    def processing(self) -> dict:
        """What a bag task needs to know (and what the config hash covers besides parameters)."""
        return dict(
            image_topics=list(self.image_topics or ()),
            outputs=list(self.outputs),
            outputs_only=self.outputs_only,
            camera_info_topic=self.camera_info_topic,
            storage=self.storage,
            batch_size=self.batch_size,
            overwrite=self.overwrite,
            range_topics=dict(self.range_topics),
        )


@dataclasses.dataclass
class FleetSummary:
    done: list = dataclasses.field(default_factory=list)  # BagJobs
    failed: list = dataclasses.field(default_factory=list)  # (BagJob, error line)
    skipped: list = dataclasses.field(default_factory=list)  # done before: keep their lines
    frames: int = 0
    startup_s: float = 0.0  # Ray and the workers up, models loaded
    processing_s: float = 0.0  # from the workers ready to the last bag's end
    workers: list = dataclasses.field(default_factory=list)  # describe() of each worker


def count_frames(job: BagJob, image_topics) -> BagJob:
    """The job with its image message count (0 when the bag cannot be opened: its task will say
    why)."""
    try:
        reader = open_bag(job.input)
    except DepthClipError:
        return job
    try:
        wanted = image_topics or image_topics_of(reader)
        count = sum(c.msgcount for c in reader.connections if c.topic in wanted)
    finally:
        reader.close()
    return dataclasses.replace(job, frames=count)


# A GPU worker's batches in flight: the core's frames in flight on CUDA graphs
# (estimator/cuda_graph.py SLOTS; not imported: the driver runs without torch).
GPU_BATCHES_IN_FLIGHT = 2


def _gpus_per_worker(options: FleetOptions, params: dict) -> float:
    if options.gpus_per_worker is not None:
        return options.gpus_per_worker
    wants_gpu = params.get("device", "auto") != "cpu"
    return 1.0 if wants_gpu and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def start_workers(params: dict, options: FleetOptions) -> list:
    """The model workers, each restarted by Ray when its process dies (bounded)."""
    gpus = _gpus_per_worker(options, params)
    if gpus > 0 and params.get("device", "auto") == "cpu":
        raise FleetError("--gpus-per-worker > 0 with device cpu: pass --device cuda or auto")
    have = ray.cluster_resources()
    for name, each in (("CPU", options.cpus_per_worker), ("GPU", gpus)):
        if options.workers * each > have.get(name, 0):
            raise FleetError(
                f"{options.workers} workers x {each:g} {name} need {options.workers * each:g} "
                f"{name}s; the Ray cluster has {have.get(name, 0):g}: lower --workers or "
                f"--{name.lower()}s-per-worker"
            )
    return [
        ModelWorker.options(
            num_cpus=options.cpus_per_worker,
            num_gpus=gpus,
            # On a GPU two bags' batches in flight (one replays while the other's comes back).
            max_concurrency=GPU_BATCHES_IN_FLIGHT if gpus > 0 else 1,
            max_restarts=max(1, options.retries),
            max_task_retries=0,  # a forward lost with its worker fails its bag, which is retried
        ).remote(params, options.batch_size)
        for _ in range(options.workers)
    ]


def describe_workers(workers) -> list:
    try:
        return ray.get([w.describe.remote() for w in workers])
    except ray.exceptions.RayActorError as exc:
        cause = getattr(exc, "error_msg", None) or str(exc)
        raise FleetError(f"a model worker could not start: {_last_line(cause)}") from None


def wait_for_workers(workers, timeout_s: float = RESTART_WAIT_S) -> None:
    """Return once every worker answers again. A bag retried at once would meet its worker still
    restarting (ActorUnavailableError) and spend its retries on the restart. A worker whose
    restarts are used up, or that is still loading after `timeout_s`, is left for the retried
    bag to report."""
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        while time.monotonic() < deadline:
            try:
                ray.get(worker.describe.remote(), timeout=max(deadline - time.monotonic(), 0.1))
                break
            except ray.exceptions.ActorUnavailableError:  # restarting: ask again
                time.sleep(POLL_S)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                break


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else str(text)


def run_fleet(jobs: list, params: dict, options: FleetOptions, outdir, log=print) -> FleetSummary:
    """Process `jobs` on the connected Ray cluster; returns the summary. FleetError when the
    workers cannot start. A Ctrl-C cancels the bags in flight and removes their staging."""
    started = time.monotonic()
    summary = FleetSummary()
    manifest = Manifest(outdir)
    processing = options.processing()
    config = config_hash(params, {k: v for k, v in processing.items() if k != "overwrite"})
    workers = start_workers(params, options)
    summary.workers = describe_workers(workers)
    model = summary.workers[0]["model"]
    summary.startup_s = time.monotonic() - started
    jobs = [count_frames(job, options.image_topics) for job in jobs]
    pending = []
    for job in jobs:
        if options.resume and manifest.done_before(job, model, config):
            summary.skipped.append(job)
        else:
            pending.append(job)
    control = RunControl.remote()
    in_flight = {}  # object ref of a bag task -> its BagJob
    limit = options.bags_in_flight or 2 * len(workers)
    attempts = {}
    from tqdm import tqdm

    bar = tqdm(
        total=sum(job.frames for job in pending),
        unit="frame",
        desc="depth",
        disable=not options.progress,
        file=sys.stderr,
    )
    queue = list(pending)
    processing_started = time.monotonic()

    def submit(job):
        attempts[job] = attempts.get(job, 0) + 1
        # Resuming, an output without its 'done' line is one finished as the run stopped:
        # replaced (atomically, once the new one is complete) rather than refused.
        bag_options = dict(processing, overwrite=options.overwrite or options.resume)
        ref = process_bag_task.remote(
            job, len(attempts), params, bag_options, workers, summary.workers[0], control
        )
        in_flight[ref] = job

    try:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                submit(queue.pop(0))
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
            for ref in ready:
                job = in_flight.pop(ref)
                outcome = _outcome(ref)
                if outcome["status"] == "retry":
                    if attempts[job] <= options.retries:
                        log(f"retrying {job.input}: {outcome['error']}")
                        wait_for_workers(workers)
                        queue.insert(0, job)
                        continue
                    outcome = dict(outcome, status=FAILED)
                _record(manifest, summary, job, outcome, model, config)
            bar.n = ray.get(control.total.remote())
            bar.set_postfix_str(
                f"bags {len(summary.done)}/{len(pending)} done, {len(summary.failed)} failed",
                refresh=False,
            )
            bar.refresh()
    except BaseException:
        for job, outcome in _stop(control, in_flight, log):
            _record(manifest, summary, job, outcome, model, config)
        raise
    finally:
        bar.close()
        summary.processing_s = time.monotonic() - processing_started
        manifest.compact()
    return summary


def _outcome(ref) -> dict:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:  # the cluster lost a worker or the bag task's process
        return dict(status="retry", error=f"{type(exc).__name__}: {_last_line(exc)}")


def _record(manifest, summary, job, outcome, model, config) -> None:
    status = outcome["status"]
    manifest.record(
        job,
        status,
        frames=outcome.get("frames", 0),
        seconds=outcome.get("seconds", 0.0),
        error=outcome.get("error"),
        model=model,
        config=config,
    )
    if status == DONE:
        summary.done.append(job)
        summary.frames += outcome["frames"]
    else:
        summary.failed.append((job, outcome["error"]))


def _stop(control, in_flight: dict, log) -> list:
    """Ask the bags in flight to stop and wait for them (each removes its staging as it stops;
    what a task whose process died left is removed here); returns [(job, outcome)] of those
    that finished first, to be recorded. A bag that does not stop in time may still be writing:
    its staging stays (the interrupted line counts it) until the next run removes it."""
    control.stop.remote()
    ready, late = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=STOP_WAIT_S)
    if late:
        log(f"{len(late)} bags did not stop within {STOP_WAIT_S} s")
    finished = []
    for ref in ready:
        job, outcome = in_flight[ref], _outcome(ref)
        if outcome["status"] in (DONE, FAILED):
            finished.append((job, outcome))
        remove_leftover_staging(job.output)  # it has ended: nothing writes there any more
    return finished


def connect(address: str | None) -> bool:
    """Join the cluster at `address` ('auto', HOST:PORT, ray://...) or start a local Ray for
    this run; True when this call started Ray (and should shut it down)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FleetError(f"cannot connect to Ray at {address}: {_last_line(exc)}") from None
    return True
