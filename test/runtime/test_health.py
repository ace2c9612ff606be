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
