"""Windowed statistics and the diagnostics levels they give, without DDS (a fake clock)."""

import pytest

from depthclip_ros.config.settings import NodeSettings
from depthclip_ros.runtime import health
from depthclip_ros.runtime.statistics import FrameStats


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def active(**changes):
    state = dict(
        active=True,
        watched=True,
        camera_info_received=True,
        active_for=100.0,
        image_topic="/cam/image",
    )
    state.update(changes)
    return health.NodeState(**state)


def run(stats, clock, seconds, rate, kinds=("received", "published")):
    """`rate` frames a second for `seconds`, each counted as every kind in `kinds`."""
    for _ in range(int(seconds * rate)):
        clock.now += 1.0 / rate
        for kind in kinds:
            stats.count(kind)


def test_rates_and_counts_are_over_the_last_window_totals_since_start():
    clock = Clock()
    stats = FrameStats(window=10.0, clock=clock)
    run(stats, clock, 30, 5)
    run(stats, clock, 10, 2)
    snap = stats.snapshot()
    assert snap.counts["received"] == 20 and snap.totals["received"] == 170
    assert snap.rate("received") == pytest.approx(2.0)
    assert snap.since("received") == pytest.approx(0.0)
    assert snap.since("failed") is None


def test_early_rates_use_the_time_since_start():
    clock = Clock()
    stats = FrameStats(window=10.0, clock=clock)
    run(stats, clock, 2, 5)
    assert stats.snapshot().rate("received") == pytest.approx(5.0)


def test_a_burst_of_bad_frames_warns_then_recovers_to_ok_after_the_window():
    clock = Clock()
    stats = FrameStats(clock=clock)
    settings = NodeSettings()
    run(stats, clock, 5, 10)
    assert health.evaluate(stats.snapshot(), settings, active())[:2] == (health.OK, "ok")
    run(stats, clock, 1, 20, kinds=("received", "rejected"))
    level, message, values = health.evaluate(stats.snapshot(), settings, active())
    assert level == health.WARN and message == "20 rejected, 0 failed frames in the last 10 s"
    assert values["rejected frames (last 10 s)"] == "20"
    run(stats, clock, 10.5, 10)  # good frames for longer than the window
    level, message, values = health.evaluate(stats.snapshot(), settings, active())
    assert (level, message) == (health.OK, "ok")
    assert values["rejected frames (since activation)"] == "20"


def test_only_failures_in_the_window_is_an_error():
    clock = Clock()
    stats = FrameStats(clock=clock)
    run(stats, clock, 3, 5, kinds=("received", "failed"))
    level, message, _ = health.evaluate(stats.snapshot(), NodeSettings(), active())
    assert level == health.ERROR and "15 failed" in message


def test_a_silent_camera_warns_after_input_timeout():
    clock = Clock()
    stats = FrameStats(clock=clock)
    settings = NodeSettings(input_timeout=2.0)
    run(stats, clock, 5, 10)
    clock.now += 1.9
    assert health.evaluate(stats.snapshot(), settings, active())[0] == health.OK
    clock.now += 0.2
    level, message, _ = health.evaluate(stats.snapshot(), settings, active())
    assert level == health.WARN and message == "no image on /cam/image for 2.1 s"
    fresh = FrameStats(clock=clock)  # never a frame: counted from activation
    level, message, _ = health.evaluate(fresh.snapshot(), settings, active(active_for=3.0))
    assert level == health.WARN and message == "no image on /cam/image since activation 3 s ago"
    assert health.evaluate(fresh.snapshot(), settings, active(active_for=1.0))[0] == health.OK


def test_missing_camera_info_warns_for_as_long_as_it_is_missing():
    clock = Clock()
    stats = FrameStats(clock=clock)
    for _ in range(3):
        run(stats, clock, 10, 5)
        level, message, values = health.evaluate(
            stats.snapshot(), NodeSettings(), active(camera_info_received=False)
        )
        assert level == health.WARN and "no camera_info received" in message
        assert values["camera_info"] == "missing"


def test_input_rate_is_checked_against_its_bounds_once_the_window_is_full():
    clock = Clock()
    settings = NodeSettings(expected_input_rate=30.0, rate_tolerance=0.5)
    assert health.rate_bounds(settings) == (15.0, 45.0)
    assert health.rate_bounds(NodeSettings()) is None
    stats = FrameStats(clock=clock)
    run(stats, clock, 5, 10)  # 10 Hz, window not yet full: not judged
    assert health.evaluate(stats.snapshot(), settings, active())[0] == health.OK
    run(stats, clock, 6, 10)
    level, message, values = health.evaluate(stats.snapshot(), settings, active())
    assert level == health.WARN and message == "input rate 10.00 Hz outside 15.00 to 45.00 Hz"
    assert values["expected input rate (Hz)"] == "15.00 to 45.00"
    run(stats, clock, 11, 30)
    assert health.evaluate(stats.snapshot(), settings, active())[0] == health.OK


def test_output_rate_floor_applies_only_while_watched():
    clock = Clock()
    stats = FrameStats(clock=clock)
    settings = NodeSettings(min_output_rate=2.0)
    run(stats, clock, 11, 10, kinds=("received",))
    for _ in range(10):
        stats.count("published")
    level, message, _ = health.evaluate(stats.snapshot(), settings, active())
    assert level == health.WARN and message == "output rate 1.00 Hz below 2.00 Hz"
    level, message, values = health.evaluate(stats.snapshot(), settings, active(watched=False))
    assert (level, message) == (health.OK, health.IDLE) and values["state"] == health.IDLE


def test_inactive_reports_inactive_and_no_problems():
    stats = FrameStats(clock=Clock())
    level, message, values = health.evaluate(
        stats.snapshot(), NodeSettings(), active(active=False, camera_info_received=False)
    )
    assert (level, message, values["state"]) == (health.OK, "inactive", "inactive")


def camera_feed(seconds, rate, answered, forward, clock, stats=None, around=0.002):
    """One camera's statistics: `rate` frames a second for `seconds`, every `rate / answered`-th
    taken by the model (a forward of `forward` s, then published; decoding and the outputs
    `around` s more), the others replaced while they waited (dropped)."""
    stats = stats or FrameStats(clock=clock)
    taken = 0.0
    for _ in range(int(round(seconds * rate))):
        stats.count("received")
        clock.now += 1.0 / rate
        taken += answered / rate
        if taken >= 1.0 - 1e-9:
            taken -= 1.0
            stats.timing("decode", around / 2)
            stats.timing("inference", forward)
            stats.timing("after the model", 0.0)
            stats.timing("outputs", around / 2)
            stats.count("published")
        else:
            stats.count("dropped")
    return stats


def test_a_camera_faster_than_the_model_is_told_with_its_figures():
    # 8 s of a 15 Hz camera, 10 answered by a 90 ms forward (2 ms more a frame around it): the
    # model runs 90 % of the time, a third of the frames replaced while they waited.
    clock = Clock()
    stats = camera_feed(8, 15, 10, 0.09, clock)
    load = health.model_load([stats.snapshot()], images_per_forward=1.0, in_flight=1)
    assert load.input_rate == pytest.approx(15) and load.answered_rate == pytest.approx(10)
    assert load.dropped_share == pytest.approx(1 / 3) and load.busy == pytest.approx(0.9)
    assert load.model_share == pytest.approx(0.09 / 0.092) and load.outpaced
    # Two forwards side by side, each 180 ms: each stream as busy as the one above.
    two = health.model_load([camera_feed(8, 15, 10, 0.18, Clock()).snapshot()], 1.0, 2)
    assert two.busy == pytest.approx(0.9) and two.outpaced
    # A node short of CPU: the same forwards, 6 answered a second (the worker waiting its turn
    # between them), still the model's frames.
    short = health.model_load([camera_feed(8, 15, 6, 0.09, Clock()).snapshot()], 1.0, 1)
    assert short.busy == pytest.approx(0.54) and short.outpaced


def test_a_model_that_keeps_up_or_a_node_that_drops_for_other_reasons_is_not_outpaced():
    keeps_up = health.model_load([camera_feed(8, 15, 15, 0.03, Clock()).snapshot()], 1.0, 1)
    assert keeps_up.busy == pytest.approx(0.45) and keeps_up.dropped_share == 0
    assert not keeps_up.outpaced
    # At the model's own rate: busy all the time, nothing waiting long enough to be replaced.
    at_its_rate = health.model_load([camera_feed(8, 10, 10, 0.1, Clock()).snapshot()], 1.0, 1)
    assert at_its_rate.busy == pytest.approx(1.0) and not at_its_rate.outpaced
    # Frames dropped while the node spends most of a frame around the model (decoding and
    # outputs 60 ms, a 20 ms forward): a faster model would not answer many more.
    feed = camera_feed(8, 30, 12, 0.02, Clock(), around=0.06)
    elsewhere = health.model_load([feed.snapshot()], 1.0, 1)
    assert elsewhere.dropped_share == pytest.approx(0.6) and elsewhere.model_share == 0.25
    assert not elsewhere.outpaced


def test_several_cameras_and_batches_share_one_model():
    # Three cameras at 5 Hz, each answered 3 Hz by batches of 3 images in 300 ms: 3 forwards a
    # second, 90 % of the time; every camera alone would look idle.
    snaps = [camera_feed(8, 5, 3, 0.3, Clock()).snapshot() for _ in range(3)]
    load = health.model_load(snaps, images_per_forward=3.0, in_flight=1)
    assert load.input_rate == pytest.approx(15) and load.answered_rate == pytest.approx(9)
    assert load.busy == pytest.approx(0.9) and load.model_share == pytest.approx(0.3 / 0.306)
    assert load.outpaced
    alone = health.model_load(snaps[:1], images_per_forward=3.0, in_flight=1)
    assert alone.busy == pytest.approx(0.3)


def test_the_model_is_judged_over_the_seconds_frames_came_in():
    clock = Clock()
    stats = FrameStats(clock=clock)
    clock.now += 6  # active, no camera yet: not a model idle
    camera_feed(4, 15, 10, 0.09, clock, stats)  # 4 s of frames: the first forwards are slow
    assert health.model_load([stats.snapshot()], 1.0, 1) is None
    camera_feed(1.2, 15, 10, 0.09, clock, stats)
    load = health.model_load([stats.snapshot()], 1.0, 1)
    assert load.input_rate == pytest.approx(15) and load.busy == pytest.approx(0.9)
    assert load.outpaced
    clock.now += 3  # the camera stopped: the model idles since
    stopped = health.model_load([stats.snapshot()], 1.0, 1)
    assert stopped.busy == pytest.approx(0.9 * 5.2 / 8.2) and stopped.input_rate < 10
    silent = FrameStats(clock=clock)
    clock.now += 20
    assert health.model_load([silent.snapshot()], 1.0, 1) is None
