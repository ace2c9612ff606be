"""Which reliability an input subscription asks for: adapted to the publishers, or forced.

A best-effort subscription loses a whole large frame whenever one of its UDP fragments is lost
(measured on a default Fast DDS set-up: 1 of 15 VGA frames from a reliable publisher arrived;
a reliable subscription got 15 of 15). So, like rosbag2's recorder, an input subscribes
reliable when every publisher offers reliable, and best effort when any publisher is best effort
(a reliable subscription would not match it). Pure logic; the node does the ROS wiring.
"""

from __future__ import annotations

AUTO = "auto"
RELIABLE = "reliable"
BEST_EFFORT = "best_effort"
CHOICES = (AUTO, RELIABLE, BEST_EFFORT)


def override_parameter(resolved_topic: str) -> str:
    """rclpy's QoS-override parameter name for a subscription's reliability."""
    return f"qos_overrides.{resolved_topic}.subscription.reliability"


def choose_reliability(override: str, offered: list) -> tuple:
    """(reliability, reason) for a subscription, given the override parameter's value and the
    reliability each publisher offers ('reliable' / 'best_effort' / anything else)."""
    if override != AUTO:
        return override, f"forced by {override} in the QoS override parameter"
    if not offered:
        return RELIABLE, "no publisher yet; camera drivers publish reliable (REP 2003)"
    best_effort = sum(1 for policy in offered if policy == BEST_EFFORT)
    if best_effort:
        return BEST_EFFORT, f"{best_effort} of {len(offered)} publishers offer best effort"
    return RELIABLE, f"all {len(offered)} publishers offer reliable"
