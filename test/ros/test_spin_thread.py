"""SpinThread: stopped while a callback runs, its thread ends after that callback and only
then does the executor shut down (rclpy's Executor.shutdown destroys the guard condition a
spinning thread may be about to trigger: CI run 31's warning), with no exception in the
thread; an entity destroyed from another thread while the wait set is built does not end it."""

import threading

import rclpy
from helpers import wait_until
from rclpy.exceptions import InvalidHandle
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


def test_an_entity_destroyed_while_the_wait_set_is_built_does_not_end_the_thread(monkeypatch):
    """rclpy raises InvalidHandle from spin_once when a publisher's event handler is destroyed
    by another thread between its check and its add to the wait set (CI run 90: the test's
    thread died); raised here on the first spin, the thread spins on and callbacks run."""
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    rclpy.init()
    try:
        node = rclpy.create_node("spin_thread_tester")
        ticks = []
        node.create_timer(0.01, lambda: ticks.append(True))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin_once, raised = executor.spin_once, []

        def destroyed_while_built(*args, **kwargs):
            if not raised:
                raised.append(True)
                raise InvalidHandle("cannot use Destroyable because destruction was requested")
            return spin_once(*args, **kwargs)

        monkeypatch.setattr(executor, "spin_once", destroyed_while_built)
        spinner = SpinThread(executor)
        wait_until(lambda: len(ticks) >= 3)
        assert raised and spinner.thread.is_alive() and failures == []
        spinner.stop()
        node.destroy_node()
    finally:
        rclpy.shutdown()
