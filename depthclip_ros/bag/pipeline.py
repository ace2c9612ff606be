"""Reading, the model and writing overlapped: the model works on one chunk on a thread of its
own while the calling thread reads the next chunk and writes the previous one. Reading and
writing stay on the thread that opened the bags (sqlite3 connections refuse any other). At most
`depth` chunks wait for the model: memory stays bounded.

Overlap pays only where the model leaves the CPU free: on a GPU, or when the CPU has cores the
model's thread pool does not use. Where the model's threads take every core, the other work
stalls them (the GIL and the thread pool's barriers): on 2 cores the bag tool ran slower
overlapped than in turn (bench/results/performance.md), so there the steps run in turn.
No rclpy.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

from ..estimator.cpu_features import usable_cores


def model_leaves_cpu_free(device, model_threads: int) -> bool:
    """Whether other work can run beside the model without slowing it: it runs on an
    accelerator, or its thread pool leaves at least one core."""
    return str(device) != "cpu" or model_threads < usable_cores()


def run_stages(source, model_step, write_step, *, overlap: bool = True, depth: int = 2) -> None:
    """`write_step(model_step(item))` for every item of the iterable `source`, in order.
    `overlap`: model_step on its own thread, up to `depth` items ahead of writing; else each
    item all the way through before the next is read. The first exception (or a Ctrl-C) stops
    reading and is raised here once the model's current item is finished."""
    if not overlap:
        for item in source:
            write_step(model_step(item))
        return
    waiting = collections.deque()  # futures of the model, in item order
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model") as model:
        try:
            for item in source:
                waiting.append(model.submit(model_step, item))
                while waiting and (len(waiting) > depth or waiting[0].done()):
                    write_step(waiting.popleft().result())
            while waiting:
                write_step(waiting.popleft().result())
        except BaseException:
            for future in waiting:
                future.cancel()
            raise
