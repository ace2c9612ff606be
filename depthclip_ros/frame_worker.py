"""One thread that owns all model work: the newest frame, and jobs handed over as futures.

Callbacks never wait for the model: `submit` replaces a pending frame (the newest frame wins,
so a slow model drops frames instead of building a backlog) and `call` queues a job (model
load, config change, unload) that runs on the worker thread between two frames and returns a
Future. One thread for all torch work: spread over two threads, a second OpenMP thread team
made each CPU forward slower (measured: README, Performance).

Lazy: while `wanted()` is false (nobody subscribes to the outputs) a frame is held, not run;
it runs as soon as someone listens, or is discarded once older than `hold` seconds. Holding
it covers a subscriber whose first frame arrives before the subscription is matched.
No rclpy and no torch here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from typing import Callable


class FrameWorker:
    def __init__(
        self,
        process: Callable,
        on_error: Callable[[Exception], None],
        wanted: Callable[[], bool] = lambda: True,
        hold: float = 1.0,
        poll: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        name: str = "depthclip-worker",
    ):
        self._process, self._on_error, self._wanted = process, on_error, wanted
        self._hold, self._poll, self._clock = hold, poll, clock
        self._cv = threading.Condition()
        self._pending = None  # (frame, arrival)
        self._jobs = collections.deque()
        self._running = True
        self.processed = 0  # frames run through `process`
        self.expired = 0  # frames discarded unrun: nobody listened within `hold`
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, frame) -> bool:
        """Make `frame` the next one to process; True when it replaced an unprocessed frame."""
        with self._cv:
            replaced = self._pending is not None
            self._pending = (frame, self._clock())
            self._cv.notify()
        return replaced

    def call(self, fn: Callable, *args) -> concurrent.futures.Future:
        """Run fn(*args) on the worker thread before the next frame."""
        future = concurrent.futures.Future()
        with self._cv:
            if not self._running:
                future.set_exception(RuntimeError("the worker has stopped"))
                return future
            self._jobs.append((future, fn, args))
            self._cv.notify()
        return future

    def discard_pending(self) -> None:
        with self._cv:
            self._pending = None

    def stop(self, timeout: float = 10.0) -> bool:
        """Finish the frame or job in progress, cancel the rest; True when the thread ended."""
        with self._cv:
            self._running = False
            self._pending = None
            for future, _, _ in self._jobs:
                future.cancel()
            self._jobs.clear()
            self._cv.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next(self):
        """Block until there is a job, a wanted frame, or a stop: ('job'|'frame'|'stop', item)."""
        with self._cv:
            while True:
                if not self._running:
                    return "stop", None
                if self._jobs:
                    return "job", self._jobs.popleft()
                if self._pending is not None:
                    if self._wanted():
                        item, self._pending = self._pending, None
                        return "frame", item
                    if self._clock() - self._pending[1] > self._hold:
                        self._pending = None
                        self.expired += 1
                        continue
                    self._cv.wait(self._poll)  # someone may subscribe: look again soon
                else:
                    self._cv.wait()

    def _loop(self):
        while True:
            kind, item = self._next()
            if kind == "stop":
                return
            if kind == "job":
                future, fn, args = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # handed to whoever waits on the future
                        future.set_exception(exc)
                continue
            frame, arrival = item
            self.processed += 1
            try:
                self._process(frame, arrival)
            except Exception as exc:  # one bad frame must not stop the worker
                self._on_error(exc)
