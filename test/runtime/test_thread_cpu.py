"""ThreadCpu: each watched thread's share of a core is its own CPU clock over the reading's
interval (a fake wall clock), a thread that ended is dropped, the process is always read."""

import threading
import time

import pytest

from depthclip_ros.runtime.thread_cpu import ThreadCpu


def test_a_threads_share_is_its_own_cpu_time_over_the_interval():
    now = [0.0]
    cpu = ThreadCpu(clock=lambda: now[0])
    go, spun, stop = threading.Event(), threading.Event(), threading.Event()
    spent = []

    def busy():
        go.wait()
        start = time.thread_time()
        while time.thread_time() - start < 0.05:  # burn 50 ms of this thread's CPU
            pass
        spent.append(time.thread_time() - start)
        spun.set()
        stop.wait()  # idle (no CPU) while it is read

    thread = threading.Thread(target=busy)
    thread.start()
    cpu.watch("busy", thread)  # its CPU from now on
    go.set()
    assert spun.wait(10)
    now[0] = 2.0
    shares = cpu.shares()
    assert shares["busy"] == pytest.approx(spent[0] / 2.0, abs=5e-4)
    assert shares["process"] >= shares["busy"] - 5e-4
    stop.set()
    thread.join()
    now[0] = 3.0
    assert "busy" not in cpu.shares() and "process" in cpu.shares()


def test_the_calling_thread_is_watched_under_its_name():
    cpu = ThreadCpu()
    cpu.watch_current("executor")
    cpu.shares()
    assert "executor" in cpu.shares()
