"""Frame counts and timings over a sliding window (the last 10 s), plus totals since start.

Levels in /diagnostics come from the window, so a burst of bad frames stops counting once it
is older than the window. No rclpy here; times are the caller's monotonic seconds.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

WINDOW = 10.0  # seconds
EVENTS = ("received", "published", "dropped", "rejected", "failed", "info_fallbacks")
# A frame's time in the node by stage (worker thread): decoding the image, the forward, the
# temporal filter and metric_scale on its result, making and publishing its outputs.
STAGES = ("decode", "inference", "after the model", "outputs")
TIMINGS = (*STAGES, "latency")


class FrameStats:
    def __init__(self, window: float = WINDOW, clock=time.monotonic):
        self.window, self._clock = window, clock
        self._lock = threading.Lock()
        self.started = clock()
        self.totals = dict.fromkeys(EVENTS, 0)
        self._events = {kind: collections.deque() for kind in EVENTS}  # times
        self._timings = {kind: collections.deque() for kind in TIMINGS}  # (time, seconds)
        self.last = dict.fromkeys(EVENTS)  # time of the newest event of each kind, or None

    def count(self, kind: str, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        with self._lock:
            self.totals[kind] += 1
            self._events[kind].append(now)
            self.last[kind] = now
            self._prune(now)

    def timing(self, kind: str, seconds: float, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        with self._lock:
            self._timings[kind].append((now, seconds))
            self._prune(now)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        for times in self._events.values():
            while times and times[0] <= cutoff:
                times.popleft()
        for values in self._timings.values():
            while values and values[0][0] <= cutoff:
                values.popleft()

    def snapshot(self, now: float | None = None) -> "Snapshot":
        now = self._clock() if now is None else now
        with self._lock:
            self._prune(now)
            counts = {kind: len(times) for kind, times in self._events.items()}
            first = {kind: times[0] if times else None for kind, times in self._events.items()}
            timings = {kind: [s for _, s in values] for kind, values in self._timings.items()}
            return Snapshot(
                now=now,
                window=self.window,
                span=min(self.window, max(now - self.started, 1e-9)),
                counts=counts,
                totals=dict(self.totals),
                last=dict(self.last),
                timings=timings,
                first=first,
            )


class Snapshot:
    """The window's counts at one instant, and what follows from them."""

    def __init__(self, now, window, span, counts, totals, last, timings, first):
        self.now, self.window, self.span = now, window, span
        self.counts, self.totals = counts, totals
        self.last, self.timings = last, timings
        self.first = first  # the time of the oldest event of each kind in the window, or None

    def rate(self, kind: str) -> float:
        """Events per second over the window (or since start, when that is shorter)."""
        return self.counts[kind] / self.span

    def since(self, kind: str) -> float | None:
        """Seconds since the newest event of `kind`; None when there was none."""
        return None if self.last[kind] is None else self.now - self.last[kind]

    def percentile_ms(self, kind: str, q: float) -> float:
        values = self.timings[kind]
        return float(np.percentile(values, q) * 1e3) if values else float("nan")
