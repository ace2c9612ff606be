"""The input QoS choice and the stamp pairing, without DDS."""

import threading
import time
import types

from depthclip_ros.input_qos import choose_reliability, override_parameter
from depthclip_ros.stamp_pairing import StampPairing


def test_reliability_adapts_to_the_publishers_like_rosbag2():
    assert choose_reliability("auto", [])[0] == "reliable"
    assert choose_reliability("auto", ["reliable", "reliable"]) == (
        "reliable",
        "all 2 publishers offer reliable",
    )
    policy, reason = choose_reliability("auto", ["reliable", "best_effort"])
    assert policy == "best_effort" and reason == "1 of 2 publishers offer best effort"
    assert choose_reliability("best_effort", ["reliable"])[0] == "best_effort"
    assert choose_reliability("reliable", ["best_effort"])[0] == "reliable"
    assert override_parameter("/cam/image") == "qos_overrides./cam/image.subscription.reliability"


def info(sec, nanosec=0, fx=1.0):
    return types.SimpleNamespace(
        header=types.SimpleNamespace(stamp=types.SimpleNamespace(sec=sec, nanosec=nanosec)), fx=fx
    )


def test_exact_stamp_wins_over_the_latest():
    pairing = StampPairing(keep=3)
    for sec in (1, 2, 3):
        pairing.add(info(sec, fx=sec))
    found, exact = pairing.lookup(info(2).header.stamp, time.monotonic())
    assert exact and found.fx == 2
    pairing.add(info(4, fx=4))  # keeps 3: stamp 1 is forgotten, the latest (4) stands in
    found, exact = pairing.lookup(info(1).header.stamp, time.monotonic())
    assert not exact and found.fx == 4
    found, exact = pairing.lookup(info(4, nanosec=1).header.stamp, time.monotonic())
    assert not exact  # stamps match exactly or not at all


def test_lookup_waits_for_a_camera_info_that_arrives_later():
    pairing = StampPairing()
    threading.Timer(0.1, pairing.add, args=[info(7, fx=7)]).start()
    found, exact = pairing.lookup(info(7).header.stamp, time.monotonic() + 5.0)
    assert exact and found.fx == 7


def test_nothing_to_wait_for_without_a_publisher():
    pairing = StampPairing()
    waits = []
    pairing._cv.wait = lambda timeout=None: waits.append(timeout)  # records instead of sleeping
    assert pairing.lookup(info(1).header.stamp, time.monotonic() + 60.0, expected=False) == (
        None,
        False,
    )
    assert waits == []  # returned without waiting for a camera_info that cannot come
    assert pairing.lookup(info(1).header.stamp, time.monotonic() + 0.05, expected=True) == (
        None,
        False,
    )
    assert waits  # with a publisher it waited (until the deadline)
