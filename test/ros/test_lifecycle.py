"""The managed node over real rclpy and the default transport: lifecycle services, laziness,
memory returned by cleanup, run-time parameter checks and diagnostics that recover."""

import contextlib
import time

import pytest
import rclpy
from helpers import camera_info, encode, stamp, structured_image, wait_until
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from ros_harness import running_node

from depthclip_ros.config.params_files import load_config
from depthclip_ros.errors import ConfigError
from depthclip_ros.tools.random_clip import save_random_checkpoint

RGB = structured_image()


def call(tester, srv_type, name, request, timeout=60.0):
    client = tester.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=10.0), name
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, f"{name}: no answer"
        time.sleep(0.01)
    tester.node.destroy_client(client)
    return future.result()


def change_state(tester, transition_id):
    return call(
        tester,
        ChangeState,
        "/depthclip/change_state",
        ChangeState.Request(transition=Transition(id=transition_id)),
    ).success


def state(tester):
    return call(tester, GetState, "/depthclip/get_state", GetState.Request()).current_state.id


def set_parameter(tester, name, value):
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return call(tester, SetParameters, "/depthclip/set_parameters", request).results[0]


def send(tester, sec):
    tester.image_pub.publish(stamp(encode(RGB, "rgb8"), sec))


def answered(tester, sec, timeout=20.0):
    return tester.wait_for(
        "depth/image", predicate=lambda m: m.header.stamp.sec == sec, timeout=timeout
    )


def stamps_answered(tester):
    return {m.header.stamp.sec for m in tester.received["depth/image"]}


def go(tester, transition_id, expected_state):
    """One transition through the service; it succeeds and lands in `expected_state`."""
    assert change_state(tester, transition_id)
    assert state(tester) == expected_state


def activated_and_answering(tester, sec):
    go(tester, Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
    tester.wait_connected()
    send(tester, sec)
    answered(tester, sec)


def test_transitions_through_the_lifecycle_services(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, autostart=False) as (node, tester):
        assert state(tester) == State.PRIMARY_STATE_UNCONFIGURED
        assert node.estimator is None and node.worker is None
        go(tester, Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)
        assert node.estimator is not None
        # Inactive: not subscribed, so a frame cannot reach it; nothing processed or published.
        assert tester.image_pub.get_subscription_count() == 0
        send(tester, 1)
        activated_and_answering(tester, 2)
        assert 1 not in stamps_answered(tester) and node.worker.processed == 1
        go(tester, Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE)
        wait_until(lambda: tester.image_pub.get_subscription_count() == 0)
        send(tester, 3)
        go(tester, Transition.TRANSITION_CLEANUP, State.PRIMARY_STATE_UNCONFIGURED)
        assert node.estimator is None and node.worker is None
        # Configured again from scratch: the same parameters, a fresh model.
        go(tester, Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)
        activated_and_answering(tester, 4)
        assert 3 not in stamps_answered(tester)
        go(tester, Transition.TRANSITION_ACTIVE_SHUTDOWN, State.PRIMARY_STATE_FINALIZED)
        assert node.estimator is None and node.worker is None


def test_a_failing_configure_leaves_the_node_up_and_fixable(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, autostart=False, temperature=150.0) as (
        node,
        tester,
    ):
        assert not change_state(tester, Transition.TRANSITION_CONFIGURE)
        assert state(tester) == State.PRIMARY_STATE_UNCONFIGURED
        assert node.estimator is None and node.worker is None
        # A lifecycle manager (or `ros2 param set`) fixes the value; configure then succeeds.
        assert set_parameter(tester, "temperature", 1.0).successful
        go(tester, Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)


def test_a_missing_model_fails_configure_with_the_reason(tmp_path, tiny_checkpoint):
    with running_node(str(tmp_path / "missing.pt"), tmp_path, autostart=False) as (node, tester):
        assert not change_state(tester, Transition.TRANSITION_CONFIGURE)
        assert state(tester) == State.PRIMARY_STATE_UNCONFIGURED
        assert node.worker is None


def test_run_time_changes_are_checked_by_the_schema_with_its_message(node_and_tester):
    node, tester = node_and_tester
    with pytest.raises(ConfigError) as tools_say:
        load_config(overrides={"temperature": 150.0})
    result = set_parameter(tester, "temperature", 150.0)
    assert not result.successful and result.reason == str(tools_say.value)
    result = set_parameter(tester, "object_word", "word " * 80)
    assert not result.successful and "too long for CLIP" in result.reason
    assert not set_parameter(tester, "model", "RN101").successful  # read-only
    # An integer where a number is expected is taken, as the tools take it.
    assert set_parameter(tester, "temperature", 2).successful
    wait_until(lambda: node.estimator.config.temperature == 2.0)
    send(tester, 5)
    answered(tester, 5)


def test_no_inference_while_nobody_listens(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, listen=False) as (node, tester):
        for sec in range(1, 11):
            send(tester, sec)
            time.sleep(0.1)
        wait_until(lambda: node.camera.stats.snapshot().totals["received"] == 10)
        wait_until(lambda: node.worker.expired >= 1)  # the held frame lives 1 s, then expires
        assert node.worker.processed == 0
        status = tester.wait_for(
            "/diagnostics", predicate=lambda m: "idle" in m.status[0].message
        )[-1]
        assert status.status[0].message.endswith("idle: no subscribers")
        # The first subscriber: frames run again, the first sent right away included.
        tester.listen()
        send(tester, 20)
        answered(tester, 20)
        assert node.worker.processed >= 1


@pytest.mark.slow
def test_cleanup_gives_the_model_memory_back(tmp_path):
    checkpoint = save_random_checkpoint(tmp_path / "rn50.pt", "RN50", seed=0)
    with running_node(checkpoint, tmp_path, autostart=False) as (node, tester):
        before = rss_mb()
        assert change_state(tester, Transition.TRANSITION_CONFIGURE)
        params = (
            sum(
                p.numel() * p.element_size() for p in node.estimator.loaded.clip_model.parameters()
            )
            / 2**20
        )
        loaded = rss_mb()
        assert change_state(tester, Transition.TRANSITION_CLEANUP)
        after = rss_mb()
    print(
        f"RSS {before:.0f} -> configured {loaded:.0f} -> cleaned up {after:.0f} MB; "
        f"parameters {params:.0f} MB"
    )
    assert loaded - before > 0.8 * params
    assert loaded - after > 0.8 * params


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.slow
def test_diagnostics_recover_to_ok_after_a_burst_of_bad_frames(tiny_checkpoint, tmp_path):
    with running_node(tiny_checkpoint, tmp_path, input_timeout=5.0) as (node, tester):
        tester.info_pub.publish(camera_info())
        for i in range(20):
            bad = encode(RGB, "rgb8")
            bad.encoding = "16UC1"
            tester.image_pub.publish(stamp(bad, 100 + i))
            time.sleep(0.005)
        warned = tester.wait_for(
            "/diagnostics",
            predicate=lambda m: m.status[0].level == b"\x01" and "rejected" in m.status[0].message,
        )[-1].status[0]
        assert warned.name == "/depthclip: depth estimation"
        assert warned.hardware_id.endswith("/cpu")
        # Good frames for longer than the 10 s window: the level comes back to OK.
        deadline = time.monotonic() + 14.0
        sec = 200
        while time.monotonic() < deadline:
            send(tester, sec)
            sec += 1
            time.sleep(0.5)
        status = tester.received["/diagnostics"][-1].status[0]
        assert (status.level, status.message) == (b"\x00", "ok")
        values = {kv.key: kv.value for kv in status.values}
        assert values["rejected frames (last 10 s)"] == "0"
        assert int(values["rejected frames (since activation)"]) >= 1


@contextlib.contextmanager
def observer_node():
    """A node in a context of its own, which outlives the depthclip node's."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("observer", context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("autostart", [False, True])
def test_a_destroyed_node_leaves_the_graph(autostart, tiny_checkpoint, tmp_path):
    """rclpy's LifecycleNode keeps its state machine, which holds the node: destroyed, the node
    stayed in the graph with its lifecycle services for as long as the object lived (here the
    test holds it). A client then found /depthclip/get_state served by a node answering
    nothing, and sent its request before the next node of that name was discovered."""

    def in_graph(observer):
        return ("depthclip", "/") in observer.get_node_names_and_namespaces()

    with observer_node() as observer:
        # `node` stays bound after the block: the object lives on, as in an application.
        with running_node(tiny_checkpoint, tmp_path, autostart=autostart) as (node, _):
            wait_until(lambda: in_graph(observer), timeout=10)
        wait_until(lambda: not in_graph(observer), timeout=10)
        services = [name for name, _ in observer.get_service_names_and_types()]
        assert not [name for name in services if name.startswith("/depthclip/")], services
