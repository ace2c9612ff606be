"""Run the real depthclip node and a tester node over DDS in this process."""

import contextlib
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from depthclip_ros.node.lifecycle_node import DepthClipNode
from depthclip_ros.node.process import start
from depthclip_ros.tools.spin_thread import SpinThread

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class Tester:
    def __init__(self, node, listen=True):
        self.node = node
        self.lock = threading.Lock()
        self.received = {
            "depth/image": [],
            "points": [],
            "depth/camera_info": [],
            "depth/colored": [],
            "/diagnostics": [],
        }
        self.output_subscriptions = []
        node.create_subscription(
            DiagnosticArray, "/diagnostics", self._store("/diagnostics"), RELIABLE
        )
        if listen:
            self.listen()
        self.image_pub = node.create_publisher(Image, "image", RELIABLE)
        self.compressed_pub = node.create_publisher(CompressedImage, "image/compressed", RELIABLE)
        self.info_pub = node.create_publisher(CameraInfo, "camera_info", RELIABLE)

    def listen(self):
        """Subscribe to the node's depth, cloud and camera_info outputs."""
        for topic, typ in (
            ("depth/image", Image),
            ("points", PointCloud2),
            ("depth/camera_info", CameraInfo),
        ):
            self.output_subscriptions.append(
                self.node.create_subscription(typ, topic, self._store(topic), RELIABLE)
            )

    def stop_listening(self):
        for subscription in self.output_subscriptions:
            self.node.destroy_subscription(subscription)
        self.output_subscriptions = []

    def _store(self, topic):
        def cb(msg):
            with self.lock:
                self.received[topic].append(msg)

        return cb

    def subscribe_colored(self):
        self.node.create_subscription(Image, "depth/colored", self._store("depth/colored"), 10)

    def clear(self):
        with self.lock:
            for v in self.received.values():
                v.clear()

    def wait_for(self, topic, count=1, timeout=20.0, predicate=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                msgs = [m for m in self.received[topic] if predicate is None or predicate(m)]
            if len(msgs) >= count:
                return msgs
            time.sleep(0.01)
        raise TimeoutError(f"{topic}: got {len(msgs)} of {count} messages in {timeout}s")

    def wait_connected(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                self.image_pub.get_subscription_count()
                + self.compressed_pub.get_subscription_count()
                > 0
            ):
                return
            time.sleep(0.02)
        raise TimeoutError("the depthclip node never subscribed")


@contextlib.contextmanager
def running_node(checkpoint, cache_dir, remappings=None, listen=True, **params):
    """Start DepthClipNode with the tiny checkpoint; yield (node, tester); always clean up.

    As `ros2 run` does: configured and activated unless `autostart=False` is passed. With
    `listen=False` the tester does not subscribe to the outputs (the node stays idle)."""
    rclpy.init()
    overrides = {
        "model": checkpoint,
        "device": "cpu",
        "cache_dir": str(cache_dir),
        "temperature": 1.0,
    }
    overrides.update(params)
    remaps = [
        arg for name, target in (remappings or {}).items() for arg in ("-r", f"{name}:={target}")
    ]
    node = DepthClipNode(
        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
        cli_args=["--ros-args", *remaps] if remaps else None,
    )
    if overrides.get("autostart", True) and not start(node):
        node.destroy_node()
        rclpy.shutdown()
        raise RuntimeError("the depthclip node did not start; its log says why")
    tester_node = rclpy.create_node("tester")
    tester = Tester(tester_node, listen)
    # Each node spins on its own single-threaded executor, as `rclpy.spin(node)` runs the real
    # node.
    executors = [SingleThreadedExecutor(), SingleThreadedExecutor()]
    executors[0].add_node(node)
    executors[1].add_node(tester_node)
    spinners = [SpinThread(e) for e in executors]
    try:
        if not remappings and not params.get("cameras") and overrides.get("autostart", True):
            tester.wait_connected()
        yield node, tester
    finally:
        # The spin threads end, then the executors and the nodes go: a thread still spinning
        # would meet a destroyed handle.
        for spinner in spinners:
            spinner.stop()
        node.destroy_node()
        tester_node.destroy_node()
        rclpy.shutdown()


@contextlib.contextmanager
def client_node():
    """A node of this process (not the depthclip node's) spinning on its own thread."""
    rclpy.init()
    node = rclpy.create_node("graph_tester")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = SpinThread(executor)
    try:
        yield node
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.shutdown()


RESEND_AFTER = 10.0  # seconds without a reply before a repeatable request goes again


def call(send, *args, timeout=30.0):
    """The first reply to `send(*args)` (a client's call_async, an AsyncParameterClient
    method), the request sent again each RESEND_AFTER seconds without one.

    A reply can be lost between processes, and nothing sends it again: DDS services race at
    discovery, and a server that has not matched the client's reply reader within 100 ms
    (rmw_fastrtps) drops the reply ('failed to send response (timeout)' on its stderr). Only
    for requests whose repetition changes nothing: queries, or setting the same values."""
    deadline = time.monotonic() + timeout
    sent = []
    while True:
        sent.append(send(*args))
        resend = min(deadline, time.monotonic() + RESEND_AFTER)
        while time.monotonic() < resend:
            for future in sent:
                if future.done():
                    return future.result()
            time.sleep(0.02)
        assert time.monotonic() < deadline, f"no reply to {len(sent)} requests in {timeout} s"


def change_state(node, transition_id, goal, timeout=60.0):
    """Whether the depthclip node's lifecycle transition `transition_id` succeeded, asked as a
    lifecycle manager asks, from a state other than `goal`. A transition is not repeatable, so
    a reply lost as `call` says counts as success once get_state reports the `goal` state."""
    change = node.create_client(ChangeState, "/depthclip/change_state")
    get_state = node.create_client(GetState, "/depthclip/get_state")
    try:
        assert change.wait_for_service(timeout_sec=timeout)
        future = change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        deadline = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < deadline, f"transition {transition_id}: no reply"
            state = call(get_state.call_async, GetState.Request(), timeout=timeout)
            if state.current_state.label == goal:
                return True
            time.sleep(0.2)
        return future.result().success
    finally:
        node.destroy_client(change)
        node.destroy_client(get_state)


def remote_values(client, names) -> dict:
    response = call(client.get_parameters, names)
    return {n: parameter_value_to_python(v) for n, v in zip(names, response.values)}
