"""An input subscription whose reliability follows its publishers (the policy is input_qos's).

ROS wiring of the node's inputs: keep-last subscriptions of the depth the caller gives, and
`qos_overrides.<topic>.subscription.reliability` may force the reliability.
"""

from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind

from ..errors import ConfigError
from ..runtime import input_qos


def input_qos_profile(reliability: str, depth: int = 1) -> QoSProfile:
    return QoSProfile(
        reliability=ReliabilityPolicy[reliability.upper()],
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        durability=DurabilityPolicy.VOLATILE,
    )


class AdaptiveInput:
    """One input topic; `update()` (re)subscribes when its publishers call for another
    reliability."""

    def __init__(self, node, msg_type, topic: str, callback, depth: int, raw: bool = False):
        self.node, self.msg_type, self.callback, self.raw = node, msg_type, callback, raw
        self.depth = depth
        self.topic = node.resolve_topic_name(topic)
        name = input_qos.override_parameter(self.topic)
        if not node.has_parameter(name):  # a second configure finds it declared
            node.declare_parameter(
                name,
                input_qos.AUTO,
                ParameterDescriptor(
                    description=f"Reliability of the {self.topic} subscription: auto "
                    "(reliable when every publisher offers reliable, else best effort) | "
                    "reliable | best_effort",
                    read_only=True,
                ),
            )
        self.override = node.get_parameter(name).value
        if self.override not in input_qos.CHOICES:
            raise ConfigError(
                name, self.override, f"must be one of {', '.join(input_qos.CHOICES)}"
            )
        self.reliability = None
        self.subscription = None
        self.told = False

    def update(self):
        """(Re)subscribe when the publishers call for another reliability; log the choice once."""
        offered = [
            info.qos_profile.reliability.name.lower()
            for info in self.node.get_publishers_info_by_topic(self.topic)
        ]
        reliability, reason = input_qos.choose_reliability(self.override, offered)
        changed = reliability != self.reliability
        if changed:
            self.close()
            self.subscription = self.node.create_subscription(
                self.msg_type,
                self.topic,
                self.callback,
                input_qos_profile(reliability, self.depth),
                raw=self.raw,
                qos_overriding_options=QoSOverridingOptions(
                    [QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH]
                ),
            )
            self.reliability = reliability
        # Told once the first publisher appears (the start-up choice is a guess), then on changes.
        if offered and (changed or not self.told):
            self.node.get_logger().info(
                f"{self.topic}: subscribed {reliability.replace('_', ' ')} ({reason})"
            )
            self.told = True

    def close(self):
        if self.subscription is not None:
            self.node.destroy_subscription(self.subscription)
            self.subscription = None
        self.reliability = None
