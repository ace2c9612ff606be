"""The encoding thread beside the worker (NewestOnly): a camera's encoding that still waits is
replaced by its newer one; every camera's newest runs."""

import threading

from depthclip_ros.runtime.background import NewestOnly

WAIT = 10.0  # seconds; only reached when the code under test is broken


def test_a_waiting_job_is_replaced_by_its_cameras_newer_one():
    gate, started = threading.Event(), threading.Event()
    done = []

    def first():
        started.set()
        gate.wait(WAIT)
        done.append("a0")

    thread = NewestOnly(lambda exc, key: None)
    thread.submit("a", first)
    assert started.wait(WAIT)
    thread.submit("a", done.append, "a1")
    thread.submit("b", done.append, "b1")
    thread.submit("a", done.append, "a2")  # replaces a1, which never started
    gate.set()
    thread.stop(WAIT)
    assert sorted(done) == ["a0", "a2", "b1"]
    assert thread.dropped == 1


def test_a_failed_encoding_is_reported_with_its_camera_and_the_thread_goes_on():
    done, errors = [], []

    def fails():
        raise ValueError("depth_max must be positive")

    thread = NewestOnly(lambda exc, key: errors.append((key, str(exc))))
    thread.submit("front", fails)
    thread.submit("rear", done.append, "rear")
    thread.stop(WAIT)  # runs what waits, then ends
    assert errors == [("front", "depth_max must be positive")]
    assert done == ["rear"]  # the job after the failed one ran
    assert not thread.thread.is_alive()
    thread.submit("front", done.append, 1)  # after the stop: not run
    assert done == ["rear"]
