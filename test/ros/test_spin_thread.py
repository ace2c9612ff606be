"""SpinThread: stopped while a callback runs, its thread ends after that callback and only
then does the executor shut down (rclpy's Executor.shutdown destroys the guard condition a
spinning thread may be about to trigger: CI run 31's warning), with no exception in the
thread."""

import threading

import rclpy
from helpers import wait_until
from rclpy.executors import SingleThreadedExecutor

from depthclip_ros.tools.spin_thread import SpinThread


def test_stopped_mid_callback_the_thread_ends_before_the_executor_shuts_down(monkeypatch):
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    rclpy.init()
    try:
        node = rclpy.create_node("spin_thread_tester")
        entered, release, finished = threading.Event(), threading.Event(), []

        def tick():
            entered.set()
            release.wait(5.0)
            finished.append(True)

        node.create_timer(0.01, tick)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = SpinThread(executor)
        spinning_at_shutdown = []
        shutdown = executor.shutdown

        def noted_shutdown(*args, **kwargs):
            spinning_at_shutdown.append(spinner.thread.is_alive())
            return shutdown(*args, **kwargs)

        monkeypatch.setattr(executor, "shutdown", noted_shutdown)
        wait_until(entered.is_set)
        stopping = threading.Thread(target=spinner.stop)
        stopping.start()
        release.set()  # the callback in flight finishes while stop() waits for the thread
        stopping.join(10.0)
        assert not stopping.is_alive() and not spinner.thread.is_alive()
        assert finished and spinning_at_shutdown == [False] and failures == []
        node.destroy_node()
    finally:
        rclpy.shutdown()
