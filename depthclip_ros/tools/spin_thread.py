"""An rclpy executor spun on a thread of its own, its thread ended before the executor shuts
down: rclpy's `Executor.shutdown` (Jazzy's 7.1, Kilted's 9.1) destroys the executor's guard
condition without waiting for a callback in flight, and a thread still in `spin` then dies on
the destroyed handle ("cannot use Destroyable because destruction was requested")."""

from __future__ import annotations

import threading

from rclpy.exceptions import InvalidHandle


class SpinThread:
    """Spins `executor` (its nodes added) on a daemon thread until `stop()`."""

    def __init__(self, executor, period: float = 0.05):
        self.executor = executor
        self._period = period
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stopping.is_set() and self.executor.context.ok():
            try:
                self.executor.spin_once(timeout_sec=self._period)
            except InvalidHandle:
                # An entity destroyed from another thread while this one built its wait set:
                # rclpy skips a handle already destroyed, but not a publisher's event handler
                # destroyed between that check and its add (CI run 90's warning, the tester's
                # thread dead). The next spin_once builds the set without it.
                continue

    def stop(self, timeout: float = 5.0) -> None:
        """The thread ends (after the callback in flight), then the executor shuts down."""
        self._stopping.set()
        self.thread.join(timeout)
        self.executor.shutdown()
