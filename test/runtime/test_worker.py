"""The newest-frame worker without DDS: frames, jobs handed over as futures, laziness."""

import threading
import time

import pytest
from helpers import wait_until

from depthclip_ros.estimator.result import ForwardEnd, Started, all_started
from depthclip_ros.runtime.worker import FrameWorker


class Recorder:
    def __init__(self, block=None):
        self.frames, self.errors, self.threads = [], [], set()
        self.block = block  # an Event the first frame waits on

    def process(self, frames):
        for _, frame, _ in frames:
            self.process_one(frame)

    def process_one(self, frame):
        self.threads.add(threading.get_ident())
        if self.block is not None and not self.frames:
            self.frames.append(frame)
            self.block.wait(10)
            return
        if frame == "bad":
            raise ValueError("bad frame")
        self.frames.append(frame)

    def on_error(self, exc, key=None):
        self.errors.append(str(exc))


def test_newest_frame_wins_while_busy_and_replacements_are_reported():
    release = threading.Event()
    rec = Recorder(block=release)
    worker = FrameWorker(rec.process, rec.on_error)
    try:
        assert worker.submit(0) is False
        wait_until(lambda: rec.frames == [0])  # frame 0 in progress, blocked
        replaced = [worker.submit(i) for i in range(1, 6)]
        assert replaced == [False, True, True, True, True]
        release.set()
        wait_until(lambda: rec.frames == [0, 5])
        assert worker.processed == 2
    finally:
        worker.stop()


def test_jobs_run_on_the_worker_thread_between_frames_and_return_futures():
    rec = Recorder()
    worker = FrameWorker(rec.process, rec.on_error)
    try:
        worker.submit("a")
        wait_until(lambda: rec.frames == ["a"])
        assert worker.call(threading.get_ident).result(5) in rec.threads
        assert worker.call(lambda x: x * 2, 21).result(5) == 42
        with pytest.raises(ZeroDivisionError):
            worker.call(lambda: 1 / 0).result(5)
        worker.submit("b")  # the worker survived the failed job
        wait_until(lambda: rec.frames == ["a", "b"])
    finally:
        worker.stop()


def test_a_failing_frame_is_reported_and_the_next_one_runs():
    rec = Recorder()
    worker = FrameWorker(rec.process, rec.on_error)
    try:
        worker.submit("bad")
        wait_until(lambda: rec.errors == ["bad frame"])
        worker.submit("good")
        wait_until(lambda: rec.frames == ["good"])
    finally:
        worker.stop()


class CountingWanted:
    """A `wanted` callable that counts the worker's questions: waits count polls, not seconds."""

    def __init__(self, answer):
        self.answer, self.calls = answer, 0

    def __call__(self, key=None):
        self.calls += 1
        return self.answer()


def test_unwatched_frames_are_held_not_run_and_run_when_someone_listens():
    rec, watched = Recorder(), threading.Event()
    wanted = CountingWanted(watched.is_set)
    worker = FrameWorker(rec.process, rec.on_error, wanted=wanted, hold=30.0, poll=0.01)
    try:
        for i in range(5):
            worker.submit(i)
        wait_until(lambda: wanted.calls >= 10)  # the worker asked ten times: nobody watches
        assert rec.frames == [] and worker.processed == 0
        watched.set()  # the first subscriber: the newest held frame runs at once
        wait_until(lambda: rec.frames == [4])
    finally:
        worker.stop()


def test_a_watch_check_that_raises_holds_the_frame_and_the_worker_goes_on():
    """At shutdown the middleware can fail under `wanted` (a publisher's subscription count
    with the context gone): the worker thread must survive to finish its jobs and stop."""
    rec, broken = Recorder(), threading.Event()

    def wanted(key):
        if broken.is_set():
            raise RuntimeError("publisher's context is invalid")
        return True

    worker = FrameWorker(rec.process, rec.on_error, wanted=wanted, hold=30.0, poll=0.01)
    try:
        worker.submit("a")
        wait_until(lambda: rec.frames == ["a"])
        broken.set()
        worker.submit("b")  # not wanted while the check fails
        assert worker.call(lambda: "job done").result(5) == "job done"
        assert rec.frames == ["a"]
        broken.clear()
        wait_until(lambda: rec.frames == ["a", "b"])
    finally:
        assert worker.stop()


def test_a_held_frame_expires_after_hold_seconds():
    now = [0.0]
    rec = Recorder()
    wanted = CountingWanted(lambda: False)
    worker = FrameWorker(
        rec.process, rec.on_error, wanted=wanted, hold=1.0, poll=0.01, clock=lambda: now[0]
    )
    try:
        worker.submit("old")
        now[0] = 0.9
        asked = wanted.calls
        wait_until(lambda: wanted.calls >= asked + 3)  # polled at 0.9 s: still held
        assert worker.expired == 0
        now[0] = 1.5
        wait_until(lambda: worker.expired == 1)
        assert rec.frames == [] and worker.processed == 0
    finally:
        worker.stop()


def test_a_timed_job_runs_once_its_time_has_come_and_frames_go_on_meanwhile():
    now = [0.0]
    rec = Recorder()
    worker = FrameWorker(rec.process, rec.on_error, poll=0.01, clock=lambda: now[0])
    try:
        later = worker.call(lambda: "given up", at=0.5)
        sooner = worker.call(lambda: "first", at=0.2)
        worker.submit("frame 1")
        wait_until(lambda: rec.frames == ["frame 1"])  # a waiting job holds no frame
        assert not later.done() and not sooner.done()
        now[0] = 0.3
        assert sooner.result(timeout=5) == "first"
        worker.submit("frame 2")
        wait_until(lambda: rec.frames == ["frame 1", "frame 2"])
        assert not later.done()
        now[0] = 0.6
        assert later.result(timeout=5) == "given up"
        cancelled = worker.call(lambda: None, at=99.0)
    finally:
        worker.stop()
    assert cancelled.cancelled()  # stop cancels jobs not yet due


def test_stop_finishes_the_frame_in_progress_and_cancels_queued_jobs():
    release = threading.Event()
    rec = Recorder(block=release)
    worker = FrameWorker(rec.process, rec.on_error)
    worker.submit("slow")
    wait_until(lambda: rec.frames == ["slow"])
    queued = worker.call(lambda: "never")
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    wait_until(queued.cancelled)  # stop() has begun while the frame is still in progress
    release.set()
    stopper.join(10)
    assert queued.cancelled()
    assert worker.call(lambda: 1).exception(1) is not None  # a stopped worker takes no job
    worker.submit("late")
    assert rec.frames == ["slow"]


def test_sources_are_served_fairly_and_each_keeps_its_newest_frame():
    """A source submitting all the time does not starve the others: the one served least
    recently goes first, and each source keeps only its newest frame."""
    release = threading.Event()
    rec = Recorder(block=release)
    seen = []
    worker = FrameWorker(
        lambda frames: [seen.append((k, f)) or rec.process_one(f) for k, f, _ in frames],
        rec.on_error,
    )
    try:
        worker.submit("fast-0", key="fast")
        wait_until(lambda: seen == [("fast", "fast-0")])  # busy on it: the rest waits
        for i in range(1, 6):
            worker.submit(f"fast-{i}", key="fast")
        worker.submit("slow-a", key="slow")
        worker.submit("slow-b", key="slow")  # replaces slow-a
        worker.submit("other", key="other")
        release.set()
        wait_until(lambda: len(seen) == 4)
        # fast was served last: the two never-served sources first, then fast's newest frame.
        assert seen[1:] == [("slow", "slow-b"), ("other", "other"), ("fast", "fast-5")]
    finally:
        worker.stop()


def test_laziness_is_per_source():
    rec, watched = Recorder(), {"a": True, "b": False}
    seen = []
    worker = FrameWorker(
        lambda frames: seen.extend(k for k, _, _ in frames),
        rec.on_error,
        wanted=lambda key: watched[key],
        hold=30.0,
        poll=0.01,
    )
    try:
        worker.submit(1, key="b")
        worker.submit(2, key="a")
        wait_until(lambda: seen == ["a"])
        assert worker.processed == 1  # b's frame is held while nobody watches b
        watched["b"] = True
        wait_until(lambda: seen == ["a", "b"])
    finally:
        worker.stop()


def test_max_batch_hands_over_several_sources_least_recently_served_first():
    gates = {"a0": threading.Event(), "a2": threading.Event()}  # frames that hold the worker
    batches, errors = [], []

    def process(frames):
        batches.append([(k, f) for k, f, _ in frames])
        for _, frame, _ in frames:
            if frame in gates:
                gates[frame].wait(10)
        if any(f == "bad" for _, f, _ in frames):
            raise ValueError("bad frame")

    worker = FrameWorker(process, lambda exc, key: errors.append((key, str(exc))), max_batch=2)
    try:
        worker.submit("a0", key="a")
        wait_until(lambda: len(batches) == 1)  # busy on a's frame: the rest waits
        worker.submit("a1", key="a")
        worker.submit("b0", key="b")
        worker.submit("c0", key="c")
        gates["a0"].set()
        wait_until(lambda: len(batches) == 3)
        # b and c were never served: one batch of two; then a, alone.
        assert batches == [[("a", "a0")], [("b", "b0"), ("c", "c0")], [("a", "a1")]]
        assert worker.processed == 4
        worker.submit("a2", key="a")
        wait_until(lambda: len(batches) == 4)
        worker.submit("bad", key="b")
        worker.submit("c1", key="c")
        gates["a2"].set()
        wait_until(lambda: len(errors) == 2)
        # A batch that fails is reported once per source in it.
        assert batches[4] == [("b", "bad"), ("c", "c1")]
        assert sorted(errors) == [("b", "bad frame"), ("c", "bad frame")]
    finally:
        worker.stop()


class Forwards:
    """A model that runs forwards side by side: process starts one per frame (a Started whose
    end the test sets) and its finish waits for that end and records the frame, as the node
    publishes it."""

    def __init__(self):
        self.started, self.finished, self.errors = [], [], []
        self.ends = {}

    def process(self, frames):
        ((_, frame, _),) = frames
        self.started.append(frame)
        end = self.ends[frame] = ForwardEnd()

        def finish():
            wait_until(end.is_set)
            if frame == "bad":
                raise ValueError("bad forward")
            self.finished.append(frame)

        return Started(finish, end.is_set, end.when_set)

    def on_error(self, exc, key=None):
        self.errors.append(str(exc))


def not_within(condition, seconds=0.3) -> bool:
    time.sleep(seconds)
    return not condition()


def test_frames_in_flight_start_before_the_earlier_end_and_finish_in_order():
    forwards = Forwards()
    worker = FrameWorker(forwards.process, forwards.on_error, in_flight=lambda: 2)
    try:
        worker.submit("a")
        wait_until(lambda: forwards.started == ["a"])
        worker.submit("b")  # "a" still running: "b" starts beside it
        wait_until(lambda: forwards.started == ["a", "b"])
        worker.submit("c")  # two in flight: "c" waits for "a" to finish
        forwards.ends["b"].set()  # "b" ends first, but "a" is published first
        assert not_within(lambda: forwards.finished or len(forwards.started) > 2)
        forwards.ends["a"].set()
        wait_until(lambda: forwards.finished == ["a", "b"] and forwards.started[-1] == "c")
        job = worker.call(lambda: list(forwards.finished))  # a job waits for "c" to finish
        assert not_within(job.done)
        forwards.ends["c"].set()
        assert job.result(5) == ["a", "b", "c"]
        worker.submit("bad")  # a forward that fails is its frame's error; the next runs
        wait_until(lambda: "bad" in forwards.ends)
        forwards.ends["bad"].set()
        wait_until(lambda: forwards.errors == ["bad forward"])
        worker.submit("d")  # alone in flight: finished once it ends, no frame after it needed
        wait_until(lambda: "d" in forwards.ends)
        forwards.ends["d"].set()
        wait_until(lambda: forwards.finished[-1] == "d")
        worker.submit("in flight at stop")
        wait_until(lambda: "in flight at stop" in forwards.ends)
        stopping = threading.Thread(target=worker.stop)
        stopping.start()
        assert not_within(lambda: "in flight at stop" in forwards.finished)
        forwards.ends["in flight at stop"].set()
        stopping.join(10)
        # Stopping finishes what is in flight: output already computed is not lost.
        assert forwards.finished == ["a", "b", "c", "d", "in flight at stop"]
    finally:
        assert worker.stop()


def test_one_frame_in_flight_finishes_each_before_the_next_starts():
    forwards = Forwards()
    worker = FrameWorker(forwards.process, forwards.on_error)  # in_flight: 1
    try:
        worker.submit("a")
        wait_until(lambda: forwards.started == ["a"])
        worker.submit("b")
        assert not_within(lambda: len(forwards.started) > 1)
        forwards.ends["a"].set()
        wait_until(lambda: forwards.started == ["a", "b"] and forwards.finished == ["a"])
        forwards.ends["b"].set()
        wait_until(lambda: forwards.finished == ["a", "b"])
    finally:
        worker.stop()


def test_all_started_ends_when_every_part_has_ended():
    """The node's frames of several image sizes (one forward each), or a batch split over
    streams: one Started, done once every part is; none at all (every frame failed its
    decoding) is done at once, so the worker never waits for it."""
    ends = [ForwardEnd(), ForwardEnd()]
    both = all_started(
        [Started(lambda i=i: i, end.is_set, end.when_set) for i, end in enumerate(ends)],
        lambda: "published",
    )
    woken = []
    both.when_done(lambda: woken.append(1))
    ends[1].set()
    assert not both.done() and woken == [1]  # each part's end wakes whoever waits
    ends[0].set()
    assert both.done() and woken == [1, 1] and both() == "published"
    none = all_started([], lambda: "nothing to publish")
    none.when_done(lambda: woken.append(2))
    assert none.done() and woken[-1] == 2 and none() == "nothing to publish"
