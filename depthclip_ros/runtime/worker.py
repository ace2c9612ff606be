"""One thread that owns all model work: the newest frame, and jobs handed over as futures.

Callbacks never wait for the model: `submit` replaces a pending frame (the newest frame wins,
so a slow model drops frames instead of building a backlog) and `call` queues a job (model
load, config change, unload, a point cloud whose camera_info came) that runs on the worker
thread between two frames and returns a Future; `call(..., at=t)` not before time t (a cloud
that stops waiting for its camera_info), without holding the frames meanwhile. One thread for
all torch work: spread over two threads, a second OpenMP thread team made each CPU forward
slower (measured: bench/results/performance.md).

Several sources (cameras) share the worker: each keeps only its newest frame, and the worker
serves the source served least recently among those with a wanted frame, so a fast camera
cannot starve a slow one. With `max_batch` > 1 it hands over up to that many sources' frames at
once (the least recently served first), for one batched forward.

Overlapped: `process` may return a callable that finishes the frames (a forward it started and
what follows it). While fewer than `in_flight()` are unfinished the worker starts the next
frames first (a runtime that runs forwards side by side: OpenVINO's streams); it finishes the
oldest once it has ended (its `done()`, which `when_done` wakes the worker for; a callable
without them: at once) or once as many are in flight as allowed. In the order they started,
and all of them before a job or a stop.

Lazy: while `wanted(key)` is false (nobody subscribes to that camera's outputs) its frame is
held, not run; it runs as soon as someone listens, or is discarded once older than `hold`
seconds. Holding it covers a subscriber whose first frame arrives before the subscription is
matched. No rclpy and no torch here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import heapq
import itertools
import threading
import time
from typing import Callable


class FrameWorker:
    def __init__(
        self,
        process: Callable,
        on_error: Callable,
        wanted: Callable = lambda key: True,
        max_batch: int = 1,
        in_flight: Callable[[], int] = lambda: 1,
        hold: float = 1.0,
        poll: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        name: str = "depthclip-worker",
    ):
        """`process(frames)` runs on the worker thread with a list of (key, frame, arrival),
        at most `max_batch` long, and returns None or the callable that finishes them; if
        either raises, `on_error(exc, key)` is called for each key."""
        self._process, self._on_error, self._wanted = process, on_error, wanted
        self._max_batch, self._in_flight = max_batch, in_flight
        self._unfinished = collections.deque()  # (frames, finish): worker thread only
        self._hold, self._poll, self._clock = hold, poll, clock
        self._cv = threading.Condition()
        self._pending = {}  # key -> (frame, arrival)
        self._served = {}  # key -> serial number of its last frame run (fairness)
        self._jobs = collections.deque()
        self._timed = []  # heap of (due, serial, job): jobs that run once their time has come
        self._serial = itertools.count()
        self._running = True
        self.processed = 0  # frames run through `process`
        self.expired = 0  # frames discarded unrun: nobody listened within `hold`
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, frame, key=None) -> bool:
        """Make `frame` the next one of source `key`; True when it replaced an unprocessed
        frame of that source."""
        with self._cv:
            replaced = key in self._pending
            self._pending[key] = (frame, self._clock())
            self._cv.notify()
        return replaced

    def call(self, fn: Callable, *args, at: float | None = None) -> concurrent.futures.Future:
        """Run fn(*args) on the worker thread before the next frame; with `at` (the worker's
        clock), not before that time."""
        future = concurrent.futures.Future()
        with self._cv:
            if not self._running:
                future.set_exception(RuntimeError("the worker has stopped"))
                return future
            if at is None:
                self._jobs.append((future, fn, args))
            else:
                heapq.heappush(self._timed, (at, next(self._serial), (future, fn, args)))
            self._cv.notify()
        return future

    def discard_pending(self) -> None:
        with self._cv:
            self._pending.clear()

    def stop(self, timeout: float = 10.0) -> bool:
        """Finish the frame or job in progress, cancel the rest; True when the thread ended."""
        with self._cv:
            self._running = False
            self._pending.clear()
            for future, _, _ in [*self._jobs, *(job for _, _, job in self._timed)]:
                future.cancel()
            self._jobs.clear()
            self._timed.clear()
            self._cv.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next(self):
        """Block until there is a job, wanted frames, or a stop: ('job'|'frames'|'stop', item);
        ('finish', None) where frames are unfinished and a job waits, as many are in flight
        as allowed, or the oldest has ended with nothing to start beside it."""
        with self._cv:
            while True:
                if not self._running:
                    return "stop", None
                timed_due = bool(self._timed) and self._timed[0][0] <= self._clock()
                if self._unfinished and (
                    self._jobs or timed_due or len(self._unfinished) >= self._frames_in_flight()
                ):
                    return "finish", None
                if self._jobs:
                    return "job", self._jobs.popleft()
                if timed_due:
                    return "job", heapq.heappop(self._timed)[2]
                wanted = [k for k in self._pending if self._is_wanted(k)]
                for key in [k for k in self._pending if k not in wanted]:
                    if self._clock() - self._pending[key][1] > self._hold:
                        del self._pending[key]
                        self.expired += 1
                if wanted:
                    wanted.sort(key=lambda k: self._served.get(k, -1))
                    frames = []
                    for key in wanted[: self._max_batch]:
                        self._served[key] = self.processed + len(frames)
                        frames.append((key, *self._pending.pop(key)))
                    return "frames", frames
                if self._unfinished and self._oldest_done():
                    return "finish", None
                timeout = self._poll if self._pending else None  # someone may subscribe
                if self._timed:
                    due = max(self._timed[0][0] - self._clock(), 0.0)
                    timeout = due if timeout is None else min(timeout, due)
                self._cv.wait(timeout)

    def _is_wanted(self, key) -> bool:
        try:
            return bool(self._wanted(key))
        except Exception:  # e.g. the middleware shut down under it: nobody can want the frame
            return False

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def _oldest_done(self) -> bool:
        done = getattr(self._unfinished[0][1], "done", None)
        try:
            return done is None or bool(done())
        except Exception:  # its finish says what went wrong
            return True

    def _frames_in_flight(self) -> int:
        try:
            return max(int(self._in_flight()), 1)
        except Exception:  # e.g. the model being replaced: one at a time
            return 1

    def _finish_oldest(self) -> None:
        frames, finish = self._unfinished.popleft()
        try:
            finish()
        except Exception as exc:  # one bad frame must not stop the worker
            for key, _, _ in frames:
                self._on_error(exc, key)

    def _loop(self):
        while True:
            kind, item = self._next()
            if kind == "stop":
                while self._unfinished:  # in progress: finished, not lost
                    self._finish_oldest()
                return
            if kind == "finish":
                self._finish_oldest()
                continue
            if kind == "job":
                future, fn, args = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # handed to whoever waits on the future
                        future.set_exception(exc)
                continue
            self.processed += len(item)
            try:
                finish = self._process(item)
            except Exception as exc:  # one bad frame must not stop the worker
                for key, _, _ in item:
                    self._on_error(exc, key)
                continue
            if finish is not None:
                self._unfinished.append((item, finish))
                when_done = getattr(finish, "when_done", None)
                if when_done is not None:  # woken to finish it, unless a frame comes first
                    when_done(self._wake)
