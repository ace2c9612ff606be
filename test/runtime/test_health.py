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


def camera_feed(seconds, rate, answered, forward, clock, stats=None):
    """One camera's statistics: `rate` frames a second for `seconds`, every `rate / answered`-th
    taken by the model (a forward of `forward` s, then published), the others replaced while
    they waited (dropped)."""
    stats = stats or FrameStats(clock=clock)
    taken = 0.0
    for _ in range(int(round(seconds * rate))):
        stats.count("received")
        clock.now += 1.0 / rate
        taken += answered / rate
        if taken >= 1.0 - 1e-9:
            taken -= 1.0
            stats.timing("inference", forward)
            stats.count("published")
        else:
            stats.count("dropped")
    return stats


def load_of(seconds, rate, answered, forward, images_per_forward=1.0, in_flight=1):
    stats = camera_feed(seconds, rate, answered, forward, Clock())
    return health.model_load([stats.snapshot()], images_per_forward, in_flight)


def test_a_camera_faster_than_the_model_is_told_with_its_figures():
    # 8 s of a 15 Hz camera, 10 answered by a 90 ms forward: the model's forwards allow 11.1
    # Hz, and run 90 % of the time.
    load = load_of(8, 15, 10, 0.09)
    assert load.input_rate == pytest.approx(15) and load.answered_rate == pytest.approx(10)
    assert load.capacity == pytest.approx(1 / 0.09) and load.busy == pytest.approx(0.9)
    assert load.outpaced
    # Two forwards side by side, each 180 ms: as many frames a second, each stream as busy.
    two = load_of(8, 15, 10, 0.18, in_flight=2)
    assert two.capacity == pytest.approx(1 / 0.09) and two.busy == pytest.approx(0.9)
    assert two.outpaced
    # A node short of CPU answering 6 a second: the camera is still faster than the model.
    short = load_of(8, 15, 6, 0.09)
    assert short.busy == pytest.approx(0.54) and short.outpaced


def test_a_model_that_keeps_up_is_not_outpaced_whatever_the_node_drops():
    keeps_up = load_of(8, 15, 15, 0.03)
    assert keeps_up.busy == pytest.approx(0.45) and not keeps_up.outpaced
    at_its_rate = load_of(8, 10, 10, 0.1)  # busy all the time, no frame more than it answers
    assert at_its_rate.busy == pytest.approx(1.0) and not at_its_rate.outpaced
    # Forwards a second times their median over-estimates at full load: a share, capped at 1.
    assert load_of(8, 10, 10, 0.105).busy == 1.0
    # Frames dropped by a node whose time goes elsewhere (a loaded CI machine: a 10 Hz camera,
    # 7 frames received a second, 3.4 answered by a 68 ms forward): a faster model would not
    # answer more.
    loaded = load_of(8, 7, 3.4, 0.068)
    assert loaded.capacity == pytest.approx(1 / 0.068) and loaded.busy < 0.25
    assert not loaded.outpaced


def test_several_cameras_and_batches_share_one_model():
    # Three cameras at 5 Hz, each answered 3 Hz by batches of 3 images in 300 ms: 10 images a
    # second at most, 3 forwards a second, 90 % of the time; each camera alone keeps up.
    snaps = [camera_feed(8, 5, 3, 0.3, Clock()).snapshot() for _ in range(3)]
    load = health.model_load(snaps, images_per_forward=3.0, in_flight=1)
    assert load.input_rate == pytest.approx(15) and load.answered_rate == pytest.approx(9)
    assert load.capacity == pytest.approx(10) and load.busy == pytest.approx(0.9)
    assert load.outpaced
    alone = health.model_load(snaps[:1], images_per_forward=3.0, in_flight=1)
    assert alone.busy == pytest.approx(0.3) and not alone.outpaced


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
    clock.now += 3  # the camera stopped: the model idles since, its frames no longer come
    stopped = health.model_load([stats.snapshot()], 1.0, 1)
    assert stopped.busy == pytest.approx(0.9 * 5.2 / 8.2) and not stopped.outpaced
    silent = FrameStats(clock=clock)
    clock.now += 20
    assert health.model_load([silent.snapshot()], 1.0, 1) is None
