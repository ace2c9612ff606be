"""A camera driver stand-in, run as its own process: one or several cameras publish a rendered
frame at a fixed rate with camera_info in one of the patterns real drivers have, and it reports
what came back from the node as one JSON line. The tests and the benchmark drive the node
with it, as a robot's drivers do (reliable, REP 2003; the middleware's defaults).

  python -m depthclip_ros.tools.camera_driver --rate 30 --seconds 5 --info after \
      [--camera front ...]

camera_info patterns (`--info`):
  after   image, then its camera_info with the same stamp (image_transport's CameraPublisher)
  before  camera_info first, then the image
  1hz     camera_info once a second only (stamped like that second's image)
  offset  camera_info stamped 1 us after its image (a driver stamping twice)
  none    no camera_info publisher at all

Each frame's camera_info has its own fx, so the report tells which camera_info each published
depth/camera_info was built from: `own` (the frame's), `other` (a fallback), per camera; and,
per camera, the depths and depth/camera_infos the middleware reports lost on the way (a
reliable sample its writer no longer held when this process, stalled, asked for it again).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

try:  # Iron and later; Humble has them in rclpy.qos_event: it counts no losses there
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:
    SubscriptionEventCallbacks = UnsupportedEventTypeError = None

from ..messages.outputs import rgb8_image_fields
from ..messages.topics import OUTPUTS
from ..runtime.stamp_pairing import stamp_ns
from ..synthetic_scenes import render_scene, scene_camera_info_fields
from .spin_thread import SpinThread

INFO_PATTERNS = ("after", "before", "1hz", "offset", "none")
# The outputs beyond depth/image and depth/camera_info, and their types (--every-output).
MORE_OUTPUTS = {
    "std": Image,
    "colored": Image,
    "points": PointCloud2,
    "clearing": PointCloud2,
    "compressed_depth": CompressedImage,
}
OFFSET_NS = 1000  # the `offset` pattern: 1 us
ANSWERS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # the node's outputs


def frame_fx(serial: int) -> float:
    """The focal length of frame `serial`'s camera_info: tells a frame's own from another's."""
    return 500.0 + serial % 1000 * 0.01


class Camera:
    """One camera's publishers and what came back for it."""

    def __init__(
        self, node, name: str, pattern: str, rate: float, compressed=False, every_output=False
    ):
        def topic(base):
            return f"{name}/{base}" if name else base

        self.name, self.pattern = name, pattern
        self.frames_per_second = max(1, round(rate))
        # A camera driver's QoS (REP 2003: reliable, system default depth); the node adapts.
        self.image_pub = node.create_publisher(Image, topic("image"), 10)
        self.info_pub = (
            None
            if pattern == "none"
            else node.create_publisher(CameraInfo, topic("camera_info"), 10)
        )
        self.lock = threading.Lock()
        self.fx_of = {}  # stamp (ns) -> fx of that frame's camera_info
        self.depth_arrivals, self.latencies, self.infos = [], [], {"own": 0, "other": 0}
        self.answered_stamps, self.info_stamps = set(), set()  # of the measured frames
        self.lost = {"depth": 0, "camera_info": 0}  # as the middleware reports them
        self.answers = [
            self._subscribe_counting_losses(node, Image, topic, "depth", self._on_depth),
            self._subscribe_counting_losses(node, CameraInfo, topic, "camera_info", self._on_info),
        ]
        # The outputs asked for beyond the depth and its camera_info: their measured frames.
        more = MORE_OUTPUTS if every_output else {}
        if compressed:
            more = {**more, "compressed_depth": CompressedImage}
        self.more_arrivals = {key: 0 for key in more}
        for key, msg_type in more.items():
            self.answers.append(
                node.create_subscription(
                    msg_type, topic(OUTPUTS[key]), self._arrival_counter(key), ANSWERS_QOS
                )
            )

    def connected(self) -> bool:
        """The node takes this camera's images and camera_infos, and its answers reach this
        camera. The node makes an output only for the subscribers it sees: one not matched
        yet would count as answers lost; and it subscribes to camera_info once it sees its
        clouds or depth/camera_info asked for, after the images: a frame before that match
        gets no camera_info at all (seen under a saturated CPU, CI run 52)."""
        infos = self.info_pub is None or self.info_pub.get_subscription_count() > 0
        return (
            infos
            and self.image_pub.get_subscription_count() > 0
            and all(answer.get_publisher_count() > 0 for answer in self.answers)
        )

    def answered(self) -> bool:
        """A frame of this camera has been answered, with a camera_info where it sends them:
        every match the node must see (its inputs, its outputs' subscribers) is made on its
        side too, which `connected` cannot see from this one."""
        with self.lock:
            infos = self.info_pub is None or sum(self.infos.values()) > 0
            return bool(self.depth_arrivals) and infos

    def _on_depth(self, msg):
        now = time.time()
        key = stamp_ns(msg.header.stamp)
        with self.lock:
            if key in self.fx_of:  # a frame of the measured run
                self.depth_arrivals.append(now)
                self.latencies.append(now - key * 1e-9)
                self.answered_stamps.add(key)

    def _subscribe_counting_losses(self, node, msg_type, topic, output: str, callback):
        """A reliable subscription to `output` (a key of OUTPUTS); the messages the middleware
        reports lost are counted in `lost` (a middleware or rclpy without that event: none
        counted)."""
        name = topic(OUTPUTS[output])

        def count(event):
            with self.lock:
                self.lost[output] += event.total_count_change

        if SubscriptionEventCallbacks is not None:
            losses = SubscriptionEventCallbacks(message_lost=count)
            try:
                return node.create_subscription(
                    msg_type, name, callback, ANSWERS_QOS, event_callbacks=losses
                )
            except UnsupportedEventTypeError:
                pass
        return node.create_subscription(msg_type, name, callback, ANSWERS_QOS)

    def _arrival_counter(self, output: str):
        def count(msg):
            key = stamp_ns(msg.header.stamp)
            with self.lock:
                if key in self.fx_of:
                    self.more_arrivals[output] += 1

        return count

    def _on_info(self, msg):
        key = stamp_ns(msg.header.stamp)
        with self.lock:
            if key in self.fx_of:
                own = abs(self.fx_of[key] - msg.k[0]) < 1e-6
                self.infos["own" if own else "other"] += 1
                self.info_stamps.add(key)

    def publish(self, image, info, serial: int, now_ns: int):
        image.header.stamp.sec, image.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
        image.header.frame_id = f"{self.name or 'camera'}_optical_frame"
        with self.lock:
            self.fx_of[now_ns] = frame_fx(serial)
        if self.info_pub is None:
            self.image_pub.publish(image)
            return
        info_ns = now_ns + (OFFSET_NS if self.pattern == "offset" else 0)
        info.header.stamp.sec, info.header.stamp.nanosec = divmod(info_ns, 1_000_000_000)
        info.header.frame_id = image.header.frame_id
        info.k[0] = info.p[0] = frame_fx(serial)
        send_info = self.pattern != "1hz" or serial % self.frames_per_second == 0
        if self.pattern == "before" and send_info:
            self.info_pub.publish(info)
        self.image_pub.publish(image)
        if self.pattern != "before" and send_info:
            self.info_pub.publish(info)

    def clear(self):
        """Forget the frames sent so far: only the measured run's frames are counted."""
        with self.lock:
            self.depth_arrivals.clear(), self.latencies.clear(), self.fx_of.clear()
            self.more_arrivals = dict.fromkeys(self.more_arrivals, 0)
            self.infos = {"own": 0, "other": 0}
            self.answered_stamps, self.info_stamps = set(), set()
            self.lost = dict.fromkeys(self.lost, 0)

    def report(self, sent: int) -> dict:
        with self.lock:
            without_info = self.answered_stamps - self.info_stamps
            return {
                "sent": sent,
                "received": len(self.depth_arrivals),
                "latencies": list(self.latencies),
                "camera_infos": dict(self.infos),
                # Which of the frames sent (0: the first) were answered without camera_info.
                "answered without camera_info": [
                    i for i, key in enumerate(sorted(self.fx_of)) if key in without_info
                ]
                if self.info_pub is not None
                else [],
                "outputs": dict(self.more_arrivals),
                "lost on the way": dict(self.lost),
            }


def stream(cameras, image, info, rate, phase, duration, serial) -> int:
    """Each camera at `rate` for `duration` seconds; the frames sent. `staggered`: camera k a
    k/n period after the first, as independent drivers are; `same`: all in one instant, as
    hardware-synchronised ones."""
    sent, t0 = 0, time.time()
    shift = 1.0 / len(cameras) if phase == "staggered" else 0.0
    while time.time() - t0 < duration:
        for k, camera in enumerate(cameras):
            time.sleep(max(0.0, t0 + (sent + k * shift) / rate - time.time()))
            camera.publish(image, info, serial + sent, time.time_ns())
        sent += 1
        time.sleep(max(0.0, t0 + sent / rate - time.time()))
    return sent


# How long after the last answer a depth's camera_info is still waited for: the node sends it
# when the frame's own camera_info comes or its camera_info_wait ends, and a saturated CPU
# delays it further (CI run 43: two of a camera's 16 still on their way after 1.5 s).
INFO_PATIENCE = 5.0


def wait_for_last_answers(cameras) -> None:
    """Until the last frames' answers are in (a slow model answers seconds later): quiet for
    longer than twice the slowest answer so far, so that a model that takes seconds a frame
    (several nodes sharing a CPU) still gets its last frames counted, and for INFO_PATIENCE
    while a depth of a camera that sends camera_infos lacks its own (one the middleware
    reported lost is not waited for); 30 s at most."""
    answered, quiet_since, give_up = -1, time.time(), time.time() + 30.0

    def quiet_needed():
        slowest = max((max(c.latencies, default=0.0) for c in cameras), default=0.0)
        owed = any(  # a camera_info the middleware reported lost is not coming
            c.info_pub is not None
            and len(c.depth_arrivals) > sum(c.infos.values()) + c.lost["camera_info"]
            for c in cameras
        )
        return max(1.5, 2.0 * slowest, INFO_PATIENCE if owed else 0.0)

    def waiting():  # a camera not answered yet, or answers still coming
        unanswered = any(not c.depth_arrivals for c in cameras)
        return unanswered or time.time() - quiet_since < quiet_needed()

    while time.time() < give_up and waiting():
        time.sleep(0.1)
        now_answered = sum(len(c.depth_arrivals) + sum(c.infos.values()) for c in cameras)
        if now_answered != answered:
            answered, quiet_since = now_answered, time.time()


def run(
    rate: float,
    seconds: float,
    pattern: str,
    names,
    warmup: float,
    phase: str,
    compressed: bool = False,
    every_output: bool = False,
) -> dict:
    rclpy.init()
    node = rclpy.create_node("camera_driver")
    diagnostics, heard = {}, [0.0]  # heard: when the last /diagnostics came
    # The first /diagnostics after the measured stream: its window is the stream's end.
    stream_end, at_end = [float("inf")], {}

    def on_diagnostics(msg):
        now = time.time()
        for status in msg.status:
            diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
        if now >= stream_end[0] and not at_end:
            at_end.update(diagnostics)
        heard[0] = now

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    cameras = [Camera(node, name, pattern, rate, compressed, every_output) for name in names]
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = SpinThread(executor)
    deadline = time.time() + 120
    while time.time() < deadline and not all(c.connected() for c in cameras):
        time.sleep(0.05)
    rgb, _ = render_scene("corridor")
    image = Image(**rgb8_image_fields(rgb))  # built once: a driver does not pay for messages
    info = CameraInfo(**scene_camera_info_fields())
    frames = (image, info, rate, phase)
    serial = stream(cameras, *frames, warmup, 0) if warmup > 0 else 0  # steady state first
    # ... and on until each camera is answered with a camera_info: every match made, both
    # ways, before the measured run.
    give_up = time.time() + 60.0
    while warmup > 0 and time.time() < give_up and not all(c.answered() for c in cameras):
        serial += stream(cameras, *frames, 0.5, serial)
    time.sleep(0.5)
    for camera in cameras:
        camera.clear()
    diagnostics.clear()
    start = time.time()
    sent = stream(cameras, *frames, seconds, serial)
    end = stream_end[0] = time.time()
    # The node's last status while the stream ran: its CPU figures cover the stream, not the
    # idle second after it (the last status of all counts every frame of the run).
    streaming = dict(diagnostics)
    wait_for_last_answers(cameras)
    # The report's figures come from a status sent after the stream: a node loaded beyond its
    # diagnostics_period may send it late (10 s at most; a node that sends none has none). The
    # last one heard counts every frame; the first after the stream judges the stream's rates
    # (the last may come seconds later, its window mostly idle).
    give_up = time.time() + 10.0
    while heard[0] < end and time.time() < give_up:
        time.sleep(0.05)
    report = {
        "rate": rate,
        "seconds": end - start,
        "start": start,
        "end": end,
        "info": pattern,
        "phase": phase,
        "cameras": {c.name: c.report(sent) for c in cameras},
        "diagnostics": dict(diagnostics),
        "diagnostics while streaming": streaming or dict(diagnostics),
        "diagnostics at the stream's end": dict(at_end) or dict(diagnostics),
    }
    spinning.stop()
    node.destroy_node()
    rclpy.shutdown()
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second per camera")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds streamed before it")
    parser.add_argument("--info", choices=INFO_PATTERNS, default="after", help="see above")
    parser.add_argument(
        "--camera",
        action="append",
        default=[],
        help="camera name (repeat for several: NAME/image, ...); none: image, camera_info",
    )
    parser.add_argument(
        "--phase",
        choices=("staggered", "same"),
        default="staggered",
        help="several cameras: staggered over the period (independent drivers, default) or all "
        "in the same instant (synchronised cameras)",
    )
    parser.add_argument(
        "--compressed-depth",
        action="store_true",
        help="also subscribe to depth/image/compressedDepth and count what arrives",
    )
    parser.add_argument(
        "--every-output",
        action="store_true",
        help="subscribe to every output (depth/std, depth/colored, points, points/clearing, "
        "compressedDepth too) and count what arrives of each",
    )
    args = parser.parse_args(argv)
    report = run(
        args.rate,
        args.seconds,
        args.info,
        args.camera or [""],
        args.warmup,
        args.phase,
        args.compressed_depth,
        args.every_output,
    )
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
