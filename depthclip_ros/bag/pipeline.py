"""Stages overlapped on threads: reading and decoding, the model, encoding and writing each run
while the others do, joined by bounded queues (memory stays bounded; the model never waits on
the disk while there is work queued). The model and file writes release the GIL.

Overlap pays only where the model leaves the CPU free: on a GPU, or when the CPU has cores the
model's thread pool does not use. Where the model's threads take every core, the other stages'
Python work stalls them (GIL and thread-pool barriers): on the 2-core machine the bag tool ran
at 0.7x the speed of one thread (docs/performance.md), so there the stages run in turn. No rclpy.
"""

from __future__ import annotations

import os
import queue
import threading

_END = object()
_POLL_S = 0.1  # how soon a blocked stage notices that another one failed


def model_leaves_cpu_free(device, model_threads: int) -> bool:
    """Whether other stages can run beside the model without slowing it: it runs on an
    accelerator, or its thread pool leaves at least one core."""
    return str(device) != "cpu" or model_threads < (os.cpu_count() or 1)


def run_stages(source, *stages, overlap: bool = True, queue_size: int = 2) -> None:
    """Every item of the iterable `source` through `stages` in order; the last stage's return
    values are dropped. `overlap`: each stage on its own thread, items in order (else all in
    the calling thread, one item at a time). The first exception of any stage (or a Ctrl-C in
    the calling thread) stops every stage and is raised here."""
    if not overlap:
        for item in source:
            for stage in stages:
                item = stage(item)
        return
    stop = threading.Event()
    errors = []
    queues = [queue.Queue(queue_size) for _ in stages]

    def put(q, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def get(q):
        while not stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        return _END

    def guarded(body):
        def run():
            try:
                body()
            except BaseException as exc:  # handed to the calling thread, raised there
                errors.append(exc)
                stop.set()

        return run

    def produce():
        for item in source:
            if not put(queues[0], item):
                return
        put(queues[0], _END)

    def consume(index, stage):
        nxt = queues[index + 1] if index + 1 < len(queues) else None
        while (item := get(queues[index])) is not _END:
            out = stage(item)
            if nxt is not None and not put(nxt, out):
                return
        if nxt is not None:
            put(nxt, _END)

    threads = [threading.Thread(target=guarded(produce), daemon=True)]
    threads += [
        threading.Thread(target=guarded(lambda i=i, s=s: consume(i, s)), daemon=True)
        for i, s in enumerate(stages)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(_POLL_S)
    except BaseException:
        stop.set()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]
