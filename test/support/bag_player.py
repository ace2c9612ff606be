"""Replay a rosbag2 over rclpy the way `ros2 bag play --clock` does (rosbag2 is not on PyPI).

Publishes /clock with the bag's log time (40 Hz, and at every message) and each message's
recorded bytes, unchanged, at its recorded time scaled by 1/rate; a topic whose recorded
publishers all offered transient local (/tf_static) is played transient local, as rosbag2
adapts its offers to the recorded ones.
"""

import importlib
import time

from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

CLOCK_PERIOD_S = 1 / 40  # ros2 bag play --clock's default rate


def message_class(msgtype: str):
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _time(ns: int) -> Time:
    sec, nanosec = divmod(ns, 10**9)
    return Time(sec=sec, nanosec=nanosec)


def play(
    node, bag_path, rate=1.0, wait_for_subscribers=("/cam/image_raw",), delay=1.0, timeout=10.0
):
    """Play the whole bag from `node`; returns the number of messages published.

    Like `ros2 bag play --delay`, waits `delay` s after the subscribers match: DDS discovery
    completes on the subscriber's side a little after the publisher sees the match.
    """
    from rosbags.rosbag2 import Reader

    clock_pub = node.create_publisher(Clock, "/clock", 10)
    with Reader(bag_path) as reader:
        pubs = {
            c.topic: node.create_publisher(message_class(c.msgtype), c.topic, _qos_of(c))
            for c in reader.connections
        }
        deadline = time.monotonic() + timeout
        while any(pubs[t].get_subscription_count() == 0 for t in wait_for_subscribers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {wait_for_subscribers}")
            time.sleep(0.05)
        time.sleep(delay)
        start_ns = reader.start_time
        clock_pub.publish(Clock(clock=_time(start_ns)))
        wall0 = time.monotonic()
        count = 0
        for conn, log_ns, raw in reader.messages():
            due = wall0 + (log_ns - start_ns) * 1e-9 / rate
            while (now := time.monotonic()) < due:  # the clock keeps ticking between messages
                time.sleep(min(CLOCK_PERIOD_S, due - now))
                bag_now = start_ns + int(min(time.monotonic() - wall0, due - wall0) * rate * 1e9)
                clock_pub.publish(Clock(clock=_time(bag_now)))
            clock_pub.publish(Clock(clock=_time(log_ns)))
            pubs[conn.topic].publish(bytes(raw))
            count += 1
        return count


def _qos_of(connection) -> QoSProfile:
    offers = getattr(connection.ext, "offered_qos_profiles", None) or []
    latched = bool(offers) and all(o.durability.name == "TRANSIENT_LOCAL" for o in offers)
    return QoSProfile(
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )
