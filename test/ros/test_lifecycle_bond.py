"""The node under a lifecycle manager that bonds, as nav2_lifecycle_manager does: bond/msg/Status
built from its definition (support/bond_messages.py), the node as its own process on the
default middleware, driven through its lifecycle services, its statuses heard on `bond` as
bondcpp hears them (reliable, keep last 100). The manager forms the bond on the node's first
active status and declares it broken after `heartbeat_timeout` without one."""

import math
import time

import bond_messages
import pytest
from helpers import built_once, camera_info, encode, stamp, structured_image, wait_until
from lifecycle_msgs.msg import Transition
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import change_state, client_node
from sensor_msgs.msg import CameraInfo, Image

from depthclip_ros.config.params_files import default_params_file
from depthclip_ros.node import lifecycle_bond
from depthclip_ros.tools.node_process import start_node_process

pytestmark = pytest.mark.slow
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
IMAGE = encode(structured_image(120, 160), "rgb8")


@pytest.fixture(scope="session")
def bond_prefix(tmp_path_factory):
    """bond/msg built once for the run (the pytest-xdist workers share it)."""
    why = bond_messages.missing_tools()
    if why:
        pytest.skip(why)
    return built_once(tmp_path_factory, "bond-messages", bond_messages.build) / "install"


def node_with_bond_messages(prefix, checkpoint, tmp_path, **overrides):
    params = {"model": checkpoint, "device": "cpu", "cache_dir": tmp_path / "cache", **overrides}
    log = tmp_path / "node.log"
    env = bond_messages.environment(prefix)
    return start_node_process(default_params_file(), params, env, log), log


def stream_until_answered(node, frames, log):
    """Frames at 10 Hz until `frames` depths came back: the model at work beside the bond."""
    images = node.create_publisher(Image, "image", RELIABLE)
    infos = node.create_publisher(CameraInfo, "camera_info", RELIABLE)
    answered = []
    depth = node.create_subscription(Image, "depth/image", answered.append, RELIABLE)
    sec = [0]

    def enough():
        sec[0] += 1
        infos.publish(stamp(camera_info(width=160, height=120), sec[0]))
        images.publish(stamp(IMAGE, sec[0]))
        return len(answered) >= frames

    wait_until(enough, timeout=60, interval=0.1)
    for entity in (images, infos):
        node.destroy_publisher(entity)
    node.destroy_subscription(depth)
    return answered


def test_under_a_lifecycle_manager_the_node_keeps_the_bond_while_active(
    bond_prefix, tiny_checkpoint, tmp_path, monkeypatch
):
    """autostart false: no status before activation; from it, heartbeats with the node's name
    as id, one instance id, Nav2's servers' period and timeout, never as far apart as the
    timeout while the node answers frames; deactivated: one status saying it left, then none;
    activated again: a new bond (a new instance id)."""
    status_type = bond_messages.import_status(bond_prefix, monkeypatch)
    proc, log = node_with_bond_messages(bond_prefix, tiny_checkpoint, tmp_path, autostart=False)
    try:
        with client_node() as node:
            heard = []
            node.create_subscription(
                status_type, "bond", lambda m: heard.append((time.monotonic(), m)), RELIABLE
            )
            configured = change_state(node, Transition.TRANSITION_CONFIGURE, "inactive")
            assert configured, log.read_text()[-2000:]
            time.sleep(0.5)  # five heartbeat periods
            assert heard == []
            assert change_state(node, Transition.TRANSITION_ACTIVATE, "active")
            wait_until(lambda: heard, timeout=30)
            assert stream_until_answered(node, 20, log)
            assert change_state(node, Transition.TRANSITION_DEACTIVATE, "inactive")
            wait_until(lambda: not heard[-1][1].active, timeout=30)
            first = list(heard)
            time.sleep(1.0)  # ten heartbeat periods: none may follow the status that ended it
            assert heard == first
            assert change_state(node, Transition.TRANSITION_ACTIVATE, "active")
            wait_until(lambda: len(heard) > len(first), timeout=30)
            second = heard[len(first) :]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    alive = [msg for _, msg in first if msg.active]
    assert len(alive) == len(first) - 1 and not first[-1][1].active
    assert {msg.id for _, msg in first + second} == {"depthclip"}
    assert {msg.instance_id for _, msg in first} == {alive[0].instance_id}
    assert {msg.instance_id for _, msg in second} != {alive[0].instance_id}
    assert all(msg.active for _, msg in second)
    for _, msg in first + second:
        assert math.isclose(msg.heartbeat_period, lifecycle_bond.HEARTBEAT_PERIOD, rel_tol=1e-6)
        assert math.isclose(msg.heartbeat_timeout, lifecycle_bond.HEARTBEAT_TIMEOUT, rel_tol=1e-6)
    arrivals = [at for at, _ in first]
    # What the manager checks: the bond breaks after heartbeat_timeout without a status.
    assert max(b - a for a, b in zip(arrivals, arrivals[1:])) < lifecycle_bond.HEARTBEAT_TIMEOUT
    assert "Traceback" not in log.read_text()


def test_a_node_that_starts_itself_has_no_bond(
    bond_prefix, tiny_checkpoint, tmp_path, monkeypatch
):
    """autostart true (the default): no lifecycle manager, so no bond, with the bond messages
    installed as much as without."""
    status_type = bond_messages.import_status(bond_prefix, monkeypatch)
    proc, log = node_with_bond_messages(bond_prefix, tiny_checkpoint, tmp_path)
    try:
        with client_node() as node:
            heard = []
            node.create_subscription(status_type, "bond", heard.append, RELIABLE)
            assert stream_until_answered(node, 3, log), log.read_text()[-2000:]
            time.sleep(1.0)  # ten heartbeat periods
            assert heard == [] and node.count_publishers("/bond") == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_tick_taken_before_the_bond_ended_does_not_revive_it(monkeypatch):
    """The EventsExecutor queues timer events: a heartbeat tick taken before the deactivation
    destroyed the timer runs after the status that ended the bond, and sent nothing (CI saw
    one revive a bond on Jazzy)."""
    import types

    sent = []
    node = types.SimpleNamespace(
        create_publisher=lambda *args: types.SimpleNamespace(publish=sent.append),
        create_timer=lambda period, callback, clock=None: callback,
        destroy_timer=lambda timer: None,
        get_name=lambda: "depthclip",
        context=types.SimpleNamespace(ok=lambda: True),
    )
    monkeypatch.setattr(
        lifecycle_bond,
        "Status",
        lambda **fields: types.SimpleNamespace(header=types.SimpleNamespace(stamp=None), **fields),
    )
    bond = lifecycle_bond.LifecycleBond(node)
    bond.start()
    tick = bond._timer  # the timer's callback, as the executor took it from its queue
    bond.stop()
    tick()
    assert [status.active for status in sent] == [True, False]
