"""What runs on the Ray cluster: model actors (the model loaded once per actor, predicting
batches for any bag) and the bag task (reading, decoding, writing near the data, its forwards
sent to the actors). The bag task is the bag tool's processing with the actors as its model.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time

import ray

from ..bag.cli import error_line
from ..bag.plan import plan_bag
from ..bag.processing import process_bag
from ..bag.reading import topics_in_bag
from ..config.params_files import config_from_params
from ..config.settings import NodeSettings, OutputSettings
from ..errors import BagStopped, DepthClipError
from ..files import remove_leftover_staging
from ..runtime.scene_hysteresis import SceneChoice
from .manifest import DONE, FAILED

STOPPED = "stopped"  # a task's answer when the driver stopped it: never in the manifest


@ray.remote
class ModelWorker:
    """One loaded model; `predict` takes a batch of uint8 RGB frames from any bag. Started with
    `max_concurrency` (start_workers: the model's frames in flight), several bags' batches are
    in it at once: each begun in turn, one's result waited for while the next runs (CUDA
    graphs)."""

    def __init__(self, params: dict, max_batch: int = 1):
        from ..model_loading import load_estimator

        self.estimator = load_estimator(config_from_params(params), max_batch)
        self.estimator.warm_up()
        self._beginning = threading.Lock()  # one batch begun at a time: the model's own order

    def describe(self) -> dict:
        return dict(
            model=self.estimator.model_identity,
            device=str(self.estimator.device),
            forwards_side_by_side=getattr(self.estimator, "forwards_side_by_side", 1),
            chooses_scenes=self.estimator.config.scene_bins == "auto",
            pid=os.getpid(),
            node=ray.get_runtime_context().get_node_id(),
        )

    def predict(self, images, scenes=None, arrays=None):
        """(the estimator's DepthResult, `scenes` as it ran here: a SceneChoice's cameras'
        new states travel back with the result)."""
        with self._beginning:
            started = self.estimator.begin_predict(images, scenes=scenes, arrays=arrays)
        return started(), scenes


class ActorModel:
    """The bag tool's model interface over the pool of ModelWorkers: batches go to the workers
    in turn (starting at a bag's own offset), so several bags keep every worker fed, and a
    bag's batches are in flight together (its reading and writing go on meanwhile)."""

    def __init__(self, workers, description: dict, start: int):
        self.device = description["device"]
        self.model_identity = description["model"]
        self.cpu_threads = 0  # the model runs in other processes: this one's cores are free
        self.forwards_side_by_side = description.get("forwards_side_by_side", 1)
        self._chooses_scenes = description.get("chooses_scenes", True)
        self._next = itertools.cycle(
            workers[start % len(workers) :] + workers[: start % len(workers)]
        )

    def begin_predict(self, images, scenes=None, arrays=None):
        """The estimator's predict sent to a worker; its call waits for the result. Only
        `arrays` travel back (None: all). A SceneChoice (`scenes`) runs there and its cameras'
        states are taken back here: under scene_bins auto at once, as a camera's scene state
        must come back before its next batch leaves."""
        answer = next(self._next).predict.remote(images, scenes, arrays)
        if self._chooses_scenes:
            result = self._result(answer, scenes)
            return lambda: result
        return functools.partial(self._result, answer, scenes)

    @staticmethod
    def _result(answer, scenes):
        try:
            result, ran = ray.get(answer)
        except ray.exceptions.RayTaskError as exc:  # the model refused the frames: say why
            if isinstance(exc.cause, DepthClipError):
                raise exc.cause from None
            raise
        if isinstance(scenes, SceneChoice):
            scenes.adopt(ran)
        return result


@ray.remote(num_cpus=0)  # it must never wait for the CPUs the workers hold
class RunControl:
    """Between the driver and its bag tasks: the frames done (the progress bar) and whether the
    driver asked the bags in flight to stop (Ctrl-C). Tasks stop themselves between chunks:
    ray.cancel races with the end of a task and aborts the driver with a failed check in Ray
    2.60 (ray-project/ray#54846), so it is not used."""

    def __init__(self):
        self.frames = 0
        self.stopping = False

    def add(self, count: int) -> bool:
        """Count `count` frames written; True when the task should stop."""
        self.frames += count
        return self.stopping

    def stop(self) -> None:
        self.stopping = True

    def total(self) -> int:
        return self.frames


def _report_to(control):
    def frames_written(count):
        if ray.get(control.add.remote(count)):
            raise BagStopped

    return frames_written


# No CPU reserved: the driver bounds how many run (--bags-in-flight), and CPUs a cluster has
# beyond the model workers' are theirs. The driver, not Ray, retries a bag (max_retries=0).
@ray.remote(num_cpus=0, max_retries=0)
def process_bag_task(job, index, params, options, workers, description, control) -> dict:
    """Process one bag's cameras among options['image_topics'] (a bag without any fails);
    {'status': 'done', stats...}, {'status': 'failed', 'error': line} for a problem of the bag
    or the configuration, or {'status': 'stopped'} when the driver asked it to stop. Failures
    of the cluster (a worker that died) are raised, for the driver to retry the bag."""
    remove_leftover_staging(job.output)  # of an attempt whose process was killed
    started = time.monotonic()
    try:
        with plan_bag(
            job.input,
            job.output,
            topics_in_bag(job.input, options["image_topics"]),
            camera_info_topic=options["camera_info_topic"],
            storage=options["storage"],
            overwrite=options["overwrite"],
            outputs=tuple(options["outputs"]),
            outputs_only=options["outputs_only"],
        ) as plan:
            stats = process_bag(
                plan,
                ActorModel(workers, description, index),
                OutputSettings.from_params(params),
                batch_size=options["batch_size"],
                scene_switch_frames=NodeSettings.from_params(params).scene_switch_frames,
                frames_written=_report_to(control),
                range_topics=options["range_topics"],
            )
    except BagStopped:
        return dict(status=STOPPED, seconds=time.monotonic() - started)
    except DepthClipError as exc:
        return dict(status=FAILED, error=error_line(exc), seconds=time.monotonic() - started)
    frames = sum(camera["frames"] for camera in stats["cameras"].values())
    return dict(status=DONE, frames=frames, seconds=stats["seconds"], stats=stats)
