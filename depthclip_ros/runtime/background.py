"""Work beside the model: one thread that runs output encodings (compressedDepth's PNG) so the
worker thread, which owns the model, never waits for them. Newest job per key: a job that
still waits when a newer one of its key (a camera) arrives is dropped, as a slow subscriber's
frames are. No rclpy.
"""

from __future__ import annotations

import threading


class NewestOnly:
    def __init__(self, on_error, name: str = "depthclip-encoder"):
        """`on_error(exc, key)` is told of a job that raised (the thread goes on)."""
        self._on_error = on_error
        self._jobs = {}  # key -> (fn, args), the newest waiting job of each key
        self._wake = threading.Condition()
        self._stopped = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, key, fn, *args) -> None:
        """Run fn(*args) on the thread; replaces a job of `key` that has not started."""
        with self._wake:
            if self._stopped:
                return
            self.dropped += key in self._jobs
            self._jobs[key] = (fn, args)
            self._wake.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Run what waits, then end the thread."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self):
        while True:
            with self._wake:
                while not self._jobs and not self._stopped:
                    self._wake.wait()
                if not self._jobs:
                    return
                key = next(iter(self._jobs))
                fn, args = self._jobs.pop(key)
            try:
                fn(*args)
            except Exception as exc:  # one failed encoding must not end the thread
                self._on_error(exc, key)
