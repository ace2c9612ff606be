"""The node's CPU time by thread, for /diagnostics: the share of one core each named thread (the
executor's, the worker's, the encoding thread's) and the whole process took since the last
reading. Where a frame's time goes under overload shows here: the executor receiving frames it
will drop, the worker's model and outputs, the encodings beside it. Each thread's own CPU clock
(POSIX `pthread_getcpuclockid`); no rclpy."""

from __future__ import annotations

import threading
import time


class ThreadCpu:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._threads = {}  # name -> Thread
        self._last = {}  # name -> CPU seconds at the last reading
        self._last_process = time.process_time()
        self._last_time = clock()

    def watch(self, name: str, thread: threading.Thread | None) -> None:
        """Count `thread` as `name` (None: forget the name)."""
        if thread is None:
            self._threads.pop(name, None)
        elif self._threads.get(name) is not thread:
            self._threads[name] = thread
            # Its CPU from now on counts in the next reading (its interval's share, a little
            # low when it was watched mid-interval).
            seconds = _thread_seconds(thread.ident) if thread.is_alive() else None
            if seconds is None:
                self._last.pop(name, None)
            else:
                self._last[name] = seconds

    def watch_current(self, name: str) -> None:
        """Count the calling thread as `name` (cheap once known: a callback calls it)."""
        thread = threading.current_thread()
        if self._threads.get(name) is not thread:
            self.watch(name, thread)

    def shares(self) -> dict:
        """{name: share of one core since the last reading} for each watched thread, and
        "process" for all of the process's threads."""
        now, process = self._clock(), time.process_time()
        elapsed = max(now - self._last_time, 1e-9)
        shares = {}
        for name, thread in list(self._threads.items()):
            # A thread's clock is read only while it runs: an ended thread's id is not its own.
            seconds = _thread_seconds(thread.ident) if thread.is_alive() else None
            if seconds is None:
                self._threads.pop(name, None)
                self._last.pop(name, None)
                continue
            if name in self._last:
                shares[name] = (seconds - self._last[name]) / elapsed
            self._last[name] = seconds
        shares["process"] = (process - self._last_process) / elapsed
        self._last_process, self._last_time = process, now
        return shares


def _thread_seconds(ident: int) -> float | None:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError, ValueError):  # not POSIX
        return None
