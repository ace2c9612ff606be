"""Reading, decoding, the model, finishing and writing overlapped: the model begins one chunk on
a thread of its own, another thread finishes the one before (takes its results, builds its
output messages) while the calling thread reads the next chunk and writes the finished one, and
images are decoded on threads ahead of the reading (`ahead`). Reading and writing stay on the
thread that opened the bags (sqlite3 connections refuse any other). At most `depth` chunks wait
between reading and writing and `window` messages for their decoding: memory stays bounded.

Overlap pays only where the model leaves the CPU free: on a GPU, or when the CPU has cores the
model's thread pool does not use. Where the model's threads take every core, the other work
stalls them (the GIL and the thread pool's barriers): on 2 cores the bag tool ran slower
overlapped than in turn (bench/results/performance.md), so there the steps run in turn.
No rclpy.
"""

from __future__ import annotations

import collections
import functools
from concurrent.futures import ThreadPoolExecutor

from ..estimator.cpu_features import usable_cores


def model_leaves_cpu_free(device, model_threads: int) -> bool:
    """Whether other work can run beside the model without slowing it: it runs on an
    accelerator, or its thread pool leaves at least one core."""
    return str(device) != "cpu" or model_threads < usable_cores()


def decode_threads(device, model_threads: int, most: int = 4) -> int:
    """Threads for decoding images beside the reading thread and the model: the cores neither
    takes (a model on an accelerator waits for it, on the CPU it takes its thread pool), at
    most `most`; 0: decode on the reading thread."""
    model_cores = model_threads if str(device) == "cpu" else 0
    return max(0, min(most, usable_cores() - 1 - model_cores))


def ahead(items, work, wanted, workers: int, window: int):
    """(item, get) for each item of `items`, in order: get() returns `work(item)` (or raises
    what it raised). With `workers`, the items `wanted(item)` accepts are worked on that many
    threads up to `window` items ahead of the caller (decoding releases the GIL); the others,
    and every item with 0 workers, when get() is called."""
    if workers <= 0:
        for item in items:
            yield item, functools.partial(work, item)
        return
    waiting = collections.deque()  # (item, its future or None), in order
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        try:
            for item in items:
                waiting.append((item, pool.submit(work, item) if wanted(item) else None))
                while len(waiting) > window or (waiting and _ready(waiting[0][1])):
                    yield _handed(*waiting.popleft(), work)
            while waiting:
                yield _handed(*waiting.popleft(), work)
        finally:  # the caller stopped early: no work left queued behind it
            for _, future in waiting:
                if future is not None:
                    future.cancel()


def _ready(future) -> bool:
    return future is None or future.done()


def _handed(item, future, work) -> tuple:
    return item, functools.partial(work, item) if future is None else future.result


def run_stages(
    source, model_step, write_step, *, finish_step=None, overlap: bool = True, depth: int = 2
) -> None:
    """`write_step(finish_step(model_step(item)))` for every item of the iterable `source`, in
    order (no `finish_step`: `write_step(model_step(item))`). `overlap`: model_step on a thread
    of its own and finish_step on another, up to `depth` items ahead of writing; else each item
    all the way through before the next is read. The first exception (or a Ctrl-C) stops
    reading and is raised here once the items being worked on are finished."""
    finish = finish_step or (lambda item: item)
    if not overlap:
        for item in source:
            write_step(finish(model_step(item)))
        return
    waiting = collections.deque()  # (the model's future, the finishing's), in item order
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="model") as model,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish") as finishing,
    ):
        try:
            for item in source:
                begun = model.submit(model_step, item)
                waiting.append((begun, finishing.submit(_finished, begun, finish)))
                while waiting and (len(waiting) > depth or waiting[0][1].done()):
                    write_step(waiting.popleft()[1].result())
            while waiting:
                write_step(waiting.popleft()[1].result())
        except BaseException:
            for futures in waiting:
                for future in futures:
                    future.cancel()
            raise


def _finished(begun, finish):
    return finish(begun.result())
