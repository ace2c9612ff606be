"""The bond a lifecycle manager keeps with the node while it is active: bond/msg/Status
heartbeats on `bond`, the node's name as the bond's id, as Nav2's servers keep theirs. Once it
has activated a node, nav2_lifecycle_manager (its default `bond_timeout` 4 s) waits half that for
the node's first heartbeat, failing the bring-up without one, and resets the nodes it manages
when they stop for `bond_timeout`. Only the node's side: the heartbeats while active, then one
status saying it left.

bond/msg comes with a ROS install that has Nav2 (bondcpp's messages); the PyPI wheels have none.
Without it the node has no bond, and a lifecycle manager that bonds needs `bond_timeout: 0.0`
(docs/nav2.md)."""

from __future__ import annotations

import uuid

from rclpy.clock import Clock, ClockType

try:
    from bond.msg import Status
except ImportError:  # no ROS install with Nav2
    Status = None

TOPIC = "bond"
# Nav2's servers' figures (nav2_util::LifecycleNode): a heartbeat each 0.1 s, declared broken
# after 4 s of silence.
HEARTBEAT_PERIOD = 0.1
HEARTBEAT_TIMEOUT = 4.0


def available() -> bool:
    return Status is not None


class LifecycleBond:
    """The node's side of its bonds: a new bond (a new instance id) each activation, as bondcpp
    makes one, on one publisher for the node's life, so that the last status of one bond still
    goes out while the next is made. Heartbeats on a steady-clock timer: a paused bag (sim
    time) must not stop them."""

    def __init__(self, node):
        self._node = node
        self._publisher = node.create_publisher(Status, TOPIC, 5)  # bondcpp's: reliable, 5
        self._clock = Clock(clock_type=ClockType.STEADY_TIME)
        self._instance_id = None
        self._timer = None

    def start(self):
        self._instance_id = str(uuid.uuid4())
        self._timer = self._node.create_timer(HEARTBEAT_PERIOD, self._beat, clock=self._clock)
        self._beat()  # the manager waits for the first from activation on

    def _status(self, active: bool):
        msg = Status(
            id=self._node.get_name(),
            instance_id=self._instance_id,
            active=active,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            heartbeat_period=HEARTBEAT_PERIOD,
        )
        msg.header.stamp = self._clock.now().to_msg()
        return msg

    def _beat(self):
        # A tick the executor took before `stop` destroyed the timer (the EventsExecutor queues
        # timer events) comes after the status that ended the bond: it must not revive it.
        if self._timer is None:
            return
        self._publisher.publish(self._status(True))

    def stop(self):
        """The node leaves the bond: no more heartbeats, one status saying so (a manager that
        still holds the bond sees it broken at once instead of after the timeout). Nothing
        when no bond was started."""
        if self._timer is None:
            return
        self._node.destroy_timer(self._timer)
        self._timer = None
        if self._node.context.ok():
            self._publisher.publish(self._status(False))
