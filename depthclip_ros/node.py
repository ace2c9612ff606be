"""The `depthclip` ROS 2 node: RGB image (+ camera_info) in, metric depth and a point cloud out.

A thin layer over `DepthClip`: inputs adapt their reliability to their publishers
(input_qos), each image is paired with the camera_info of its stamp (stamp_pairing),
callbacks only store the newest frame, and one worker thread decodes, predicts and
publishes, so a slow model drops frames instead of building a backlog.
"""
from __future__ import annotations

import collections
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, DurabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind
from rclpy.serialization import deserialize_message
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

from . import conversions, input_qos, topics
from .config import (COLORMAPS, NODE_NAME, OUTPUT_DEFAULTS, ConfigError, DepthClipConfig, OutputSettings,
                     default_params_file, read_params_file)
from .core import DepthClip
from .model_loading import ModelLoadError
from .stamp_pairing import StampPairing
from .visualization import colorize


def input_qos_profile(reliability: str) -> QoSProfile:
    """Inputs keep only the newest sample: the newest frame wins and nothing queues."""
    return QoSProfile(reliability=ReliabilityPolicy[reliability.upper()], history=HistoryPolicy.KEEP_LAST,
                      depth=1, durability=DurabilityPolicy.VOLATILE)


def output_qos_profile() -> QoSProfile:
    """Outputs reliable (every subscriber, reliable or best effort, connects), a few deep. A new
    profile per publisher: rclpy writes each publisher's QoS overrides into the profile it is given."""
    return QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5)


# Seconds between checks of the input publishers' QoS (rosbag2's recorder polls likewise).
QOS_CHECK_PERIOD = 0.5

NODE_DEFAULTS = {**OUTPUT_DEFAULTS, "use_compressed": False, "diagnostics_period": 1.0,
                 "camera_info_wait": 0.1}

DESCRIPTIONS = {
    "model": ("CLIP ResNet name (RN50, RN101, RN50x4, ...) or checkpoint path", True),
    "download_root": ("Folder of downloaded CLIP weights; empty = ~/.cache/clip", True),
    "device": ("auto | cpu | cuda | cuda:N", True),
    "precision": ("auto (fp16 on CUDA, fp32 on CPU) | fp16 | fp32", True),
    "cache_dir": ("Text-feature cache folder; empty = ~/.cache/depthclip_ros", True),
    "prompt_template": ("Prompt with {object} and {token} placeholders", False),
    "object_word": ("Word put in {object}", False),
    "depth_tokens": ("Depth words, near to far, one per bin", False),
    "depth_bins": ("Depth of each token in metres, strictly increasing", False),
    "temperature": ("Softmax temperature over bins (paper: 0.1)", False),
    "flip": ("Average with the mirrored image (paper protocol; doubles the cost)", False),
    "preprocessing": ("resize (any camera) | crop (NYU 640x480 reference box)", False),
    "input_width": ("Network input width for 'resize', multiple of 32", False),
    "input_height": ("Network input height for 'resize', multiple of 32", False),
    "normalization": ("imagenet (paper) | clip", False),
    "cloud_stride": ("One cloud point every N pixels; 0 = one per coarse grid cell", False),
    "use_compressed": ("Subscribe to image/compressed (JPEG/PNG) instead of image", True),
    "colormap": ("Colour map of depth/colored: " + " | ".join(COLORMAPS), False),
    "diagnostics_period": ("Seconds between /diagnostics messages", True),
    "camera_info_wait": ("Seconds an image waits (after its forward) for the camera_info with its "
                         "stamp before the latest one is used", False),
}
RANGES = {
    "temperature": FloatingPointRange(from_value=1e-4, to_value=100.0, step=0.0),
    "diagnostics_period": FloatingPointRange(from_value=0.1, to_value=60.0, step=0.0),
    "input_width": IntegerRange(from_value=32, to_value=4096, step=32),
    "input_height": IntegerRange(from_value=32, to_value=4096, step=32),
    "cloud_stride": IntegerRange(from_value=0, to_value=64, step=1),
    "camera_info_wait": FloatingPointRange(from_value=0.0, to_value=5.0, step=0.0),
}


class Stats:
    """Bounded counters and timing windows for /diagnostics."""

    def __init__(self, window: int = 300):
        self.lock = threading.Lock()
        self.received = self.published = self.dropped = self.rejected = self.errors = 0
        self.info_fallbacks = 0  # frames published with a camera_info of another stamp
        self.inference_s = collections.deque(maxlen=window)
        self.latency_s = collections.deque(maxlen=window)
        self.last = (time.monotonic(), 0, 0)

    def count(self, name: str):
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def rates(self):
        now = time.monotonic()
        with self.lock:
            t0, r0, p0 = self.last
            dt = max(now - t0, 1e-9)
            out = ((self.received - r0) / dt, (self.published - p0) / dt)
            self.last = (now, self.received, self.published)
        return out


def _percentile_ms(values, q):
    return float(np.percentile(np.asarray(values), q) * 1e3) if values else float("nan")


class StartupError(Exception):
    """Start-up failed; the reason was already logged under the node's name."""


class AdaptiveInput:
    """One input subscription whose reliability follows its publishers (see input_qos) unless the
    `qos_overrides.<topic>.subscription.reliability` parameter forces it."""

    def __init__(self, node: Node, msg_type, topic: str, callback, raw: bool = False):
        self.node, self.msg_type, self.callback, self.raw = node, msg_type, callback, raw
        self.topic = node.resolve_topic_name(topic)
        name = input_qos.override_parameter(self.topic)
        self.override = node.declare_parameter(name, input_qos.AUTO, ParameterDescriptor(
            description=f"Reliability of the {self.topic} subscription: auto (reliable when every "
                        "publisher offers reliable, else best effort) | reliable | best_effort",
            read_only=True)).value
        if self.override not in input_qos.CHOICES:
            raise ConfigError(name, self.override, f"must be one of {', '.join(input_qos.CHOICES)}")
        self.reliability = None
        self.subscription = None
        self.told = False

    def update(self):
        """(Re)subscribe when the publishers call for another reliability; log the choice once."""
        offered = [info.qos_profile.reliability.name.lower()
                   for info in self.node.get_publishers_info_by_topic(self.topic)]
        reliability, reason = input_qos.choose_reliability(self.override, offered)
        changed = reliability != self.reliability
        if changed:
            if self.subscription is not None:
                self.node.destroy_subscription(self.subscription)
            self.subscription = self.node.create_subscription(
                self.msg_type, self.topic, self.callback, input_qos_profile(reliability), raw=self.raw,
                qos_overriding_options=QoSOverridingOptions([QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH]))
            self.reliability = reliability
        # Told once the first publisher appears (the start-up choice is a guess), then on changes.
        if offered and (changed or not self.told):
            self.node.get_logger().info(f"{self.topic}: subscribed {reliability.replace('_', ' ')} "
                                        f"({reason})")
            self.told = True


class DepthClipNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self._worker = None
        try:
            self._start()
        except (ModelLoadError, ConfigError, InvalidParameterValueException,
                InvalidParameterTypeException) as exc:
            # One clear line under the node's own name (its namespace tells which camera).
            self.get_logger().fatal(str(exc))
            self.destroy_node()
            raise StartupError(str(exc)) from None

    def _start(self):
        self._declare_parameters()
        params = self._param_values()
        self.settings = OutputSettings.from_params(params)
        config = DepthClipConfig.from_params(params)
        # Every cheap check (parameters, QoS overrides) before the model load, which takes seconds.
        image_type, image_topic = ((CompressedImage, topics.COMPRESSED_IMAGE) if params["use_compressed"]
                                   else (Image, topics.IMAGE))
        # Images arrive serialized and only the frame the worker takes is deserialized: most frames
        # of a fast camera are replaced unread (newest frame wins), so they cost no conversion.
        self._image_type = image_type
        self.inputs = [AdaptiveInput(self, image_type, image_topic, self._on_image, raw=True),
                       AdaptiveInput(self, CameraInfo, topics.CAMERA_INFO, self._on_camera_info)]
        self.stats = Stats()
        self._cv = threading.Condition()
        self._pending = None
        self._config_request = None
        self._running = True
        self._camera_infos = StampPairing()
        self._warned = {}
        # One thread owns the model and runs all of its torch work: loading, warm-up, config
        # changes and frames. Torch work spread over two threads made each CPU forward 15-20 %
        # slower here (a second OpenMP thread team; measured with RN50 on 2 cores).
        self.get_logger().info(f"loading CLIP '{config.model}' on device '{config.device}' ...")
        self.estimator = None
        self._start_error = None
        ready = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(config, ready), name="depthclip-worker",
                                        daemon=True)
        self._worker.start()
        ready.wait()
        if self._start_error is not None:
            raise self._start_error

        options = QoSOverridingOptions.with_default_policies()
        publish = lambda msg_type, name: self.create_publisher(  # noqa: E731
            msg_type, name, output_qos_profile(), qos_overriding_options=options)
        self.depth_pub = publish(Image, topics.DEPTH_IMAGE)
        self.info_pub = publish(CameraInfo, topics.DEPTH_CAMERA_INFO)
        self.cloud_pub = publish(PointCloud2, topics.POINTS)
        self.colored_pub = publish(Image, topics.DEPTH_COLORED)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._update_inputs()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Wall-clock timers: QoS adaptation and health reports go on while a replayed bag is paused.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(QOS_CHECK_PERIOD, self._update_inputs, clock=steady)
        self.create_timer(params["diagnostics_period"], self._publish_diagnostics, clock=steady)

    # ----------------------------------------------------------------- parameters
    def _declare_parameters(self):
        try:  # one source of defaults: the shipped parameter file
            defaults = {**DepthClipConfig().to_params(), **NODE_DEFAULTS,
                        **read_params_file(default_params_file())}
        except (ConfigError, FileNotFoundError):
            defaults = {**DepthClipConfig().to_params(), **NODE_DEFAULTS}
        for name, (description, read_only) in DESCRIPTIONS.items():
            value = defaults[name]
            if name == "depth_bins":
                value = [float(v) for v in value]
            desc = ParameterDescriptor(description=description, read_only=read_only)
            rng = RANGES.get(name)
            if isinstance(rng, FloatingPointRange):
                desc.floating_point_range = [rng]
            elif isinstance(rng, IntegerRange):
                desc.integer_range = [rng]
            self.declare_parameter(name, value, desc)

    def _param_values(self) -> dict:
        return {name: self.get_parameter(name).value for name in DESCRIPTIONS}

    def _on_set_parameters(self, changes) -> SetParametersResult:
        params = self._param_values()
        params.update({p.name: p.value for p in changes})
        try:
            settings = OutputSettings.from_params(params)
            config = DepthClipConfig.from_params(params)
        except (ConfigError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if config != self.estimator.config:
            error = self._update_config_in_worker(config)  # takes effect from the next frame
            if error is not None:
                return SetParametersResult(successful=False, reason=error)
        self.settings = settings
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------- callbacks
    def _update_inputs(self):
        for subscription in self.inputs:
            subscription.update()

    def _on_camera_info(self, msg: CameraInfo):
        self._camera_infos.add(msg)

    def _on_image(self, msg: bytes):
        """Never blocks: the newest frame replaces a pending one, which counts as dropped."""
        self.stats.count("received")
        with self._cv:
            if self._pending is not None:
                self.stats.count("dropped")
            self._pending = (msg, time.monotonic())
            self._cv.notify()

    def _update_config_in_worker(self, config):
        """Hand a new config to the worker and wait (at most one frame) for it: None or the error."""
        request = {"config": config, "done": threading.Event(), "error": None}
        with self._cv:
            self._config_request = request
            self._cv.notify()
        if not request["done"].wait(timeout=60.0):
            return "timed out waiting for the worker to apply the change"
        return request["error"]

    # ----------------------------------------------------------------- worker
    def _load(self, config, ready):
        try:
            self.estimator = DepthClip(config)
            t0 = time.perf_counter()
            self.estimator.warm_up()  # the first camera frame then gets the steady-state latency
            self.get_logger().info(f"model {self.estimator.model_identity} on {self.estimator.device} "
                                   f"({str(self.estimator.dtype).replace('torch.', '')}), warm-up "
                                   f"{(time.perf_counter() - t0) * 1e3:.0f} ms")
            return True
        except Exception as exc:  # re-raised by the constructor, in the caller's thread
            self._start_error = exc
            return False
        finally:
            ready.set()

    def _work(self, config, ready):
        if not self._load(config, ready):
            return
        while True:
            with self._cv:
                while self._pending is None and self._config_request is None and self._running:
                    self._cv.wait()
                if not self._running:
                    return
                request, self._config_request = self._config_request, None
                if request is None:
                    (msg, arrival), self._pending = self._pending, None
            if request is not None:
                try:
                    self.estimator.update_config(request["config"])
                except Exception as exc:  # e.g. a prompt longer than CLIP's context
                    request["error"] = str(exc)
                request["done"].set()
                continue
            try:
                self.process(msg, arrival)
            except conversions.ImageDecodeError as exc:
                self.stats.count("rejected")
                self._warn_throttled(f"rejected: {exc}", f"image rejected: {exc}")
            except Exception as exc:  # one bad frame must not stop the node
                self.stats.count("errors")
                self._warn_throttled(f"error: {type(exc).__name__}",
                                     f"frame dropped, processing failed: {type(exc).__name__}: {exc}",
                                     error=True)

    def process(self, serialized: bytes, arrival: float):
        try:
            msg = deserialize_message(serialized, self._image_type)
        except Exception as exc:  # bytes that are not this message type: like any undecodable frame
            raise conversions.ImageDecodeError(f"cannot deserialize the message: {exc}") from None
        rgb = conversions.decode_image(msg)
        t0 = time.perf_counter()
        result = self.estimator.predict(rgb)
        self.stats.inference_s.append(time.perf_counter() - t0)
        settings = self.settings
        header = msg.header
        # Looked up after the forward: a camera_info logged right after its image has arrived by now.
        info = self._paired_camera_info(header, arrival + self.get_parameter("camera_info_wait").value)
        out = conversions.frame_outputs(rgb, result, 0, info, settings.cloud_stride)
        self.depth_pub.publish(Image(header=header, **out.depth))
        if out.cloud is not None:
            info_fields = dict(out.camera_info, roi=RegionOfInterest(**out.camera_info["roi"]))
            self.info_pub.publish(CameraInfo(header=header, **info_fields))
            fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in out.cloud["fields"]]
            self.cloud_pub.publish(PointCloud2(header=header, **{**out.cloud, "fields": fields}))
            if out.distorted:
                self._warn_throttled("distorted", "camera_info has non-zero distortion D: the point cloud "
                                     "assumes a rectified image; feed image_rect (image_proc)",
                                     period=float("inf"))
        elif info is None:
            self._warn_throttled("no camera_info", "no camera_info received yet: publishing depth "
                                 "without a point cloud", period=float("inf"))
        else:
            self._warn_throttled("bad camera_info", f"{out.problem}: no point cloud")
        if self.colored_pub.get_subscription_count() > 0:
            lo, hi = float(result.bins[0]), float(result.bins[-1])
            colored = colorize(result.depth[0], lo, hi, settings.colormap)
            self.colored_pub.publish(Image(header=header, **conversions.rgb8_image_fields(colored)))
        latency = (self.get_clock().now() - Time.from_msg(header.stamp)).nanoseconds * 1e-9
        self.stats.latency_s.append(latency)
        self.stats.count("published")

    def _paired_camera_info(self, header, deadline):
        """The camera_info with the image's stamp (waiting until `deadline`), else the latest."""
        expected = self.count_publishers(self.inputs[1].topic) > 0
        info, exact = self._camera_infos.lookup(header.stamp, deadline, expected)
        if info is None:
            return None
        if not exact:
            self.stats.count("info_fallbacks")
            stamp = info.header.stamp
            self._warn_throttled("info fallback", f"no camera_info with the image's stamp "
                                 f"{header.stamp.sec}.{header.stamp.nanosec:09d} within camera_info_wait; "
                                 f"using the latest ({stamp.sec}.{stamp.nanosec:09d})")
        if info.header.frame_id != header.frame_id:
            self._warn_throttled("frame ids", f"camera_info frame_id '{info.header.frame_id}' differs from "
                                 f"the image's '{header.frame_id}'; outputs keep the image's",
                                 period=float("inf"))
        return info

    def _warn_throttled(self, key, text, period=5.0, error=False):
        now = time.monotonic()
        if now - self._warned.get(key, -float("inf")) < period:
            return
        self._warned[key] = now
        (self.get_logger().error if error else self.get_logger().warning)(text)

    # ----------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self):
        s = self.stats
        in_rate, out_rate = s.rates()
        inf = list(s.inference_s)
        lat = list(s.latency_s)
        values = {
            "input rate (Hz)": f"{in_rate:.2f}", "output rate (Hz)": f"{out_rate:.2f}",
            "frames received": str(s.received), "frames published": str(s.published),
            "dropped frames": str(s.dropped), "rejected frames": str(s.rejected),
            "failed frames": str(s.errors),
            "inference median (ms)": f"{_percentile_ms(inf, 50):.1f}",
            "inference p95 (ms)": f"{_percentile_ms(inf, 95):.1f}",
            "latency median (ms)": f"{_percentile_ms(lat, 50):.1f}",
            "latency p95 (ms)": f"{_percentile_ms(lat, 95):.1f}",
            "device": str(self.estimator.device), "model": self.estimator.model_identity,
            "camera_info": "received" if self._camera_infos.latest is not None else "missing",
            "frames paired with another stamp's camera_info": str(s.info_fallbacks),
            **{f"{i.topic} reliability": str(i.reliability) for i in self.inputs},
        }
        level, message = DiagnosticStatus.OK, "ok"
        if self._camera_infos.latest is None:
            level, message = DiagnosticStatus.WARN, "no camera_info: no point cloud"
        if s.rejected or s.errors:
            level, message = DiagnosticStatus.WARN, f"{s.rejected} rejected, {s.errors} failed frames"
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: depth estimation", message=message,
                                  hardware_id=str(self.estimator.device),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self.diag_pub.publish(DiagnosticArray(header=self._stamp_header(), status=[status]))

    def _stamp_header(self):
        return Header(stamp=self.get_clock().now().to_msg())

    def destroy_node(self):
        if self._worker is not None:
            with self._cv:
                self._running = False
                self._cv.notify()
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None):
    rclpy.init(args=args)
    node = None
    try:
        node = DepthClipNode()
        rclpy.spin(node)
    except StartupError:  # already logged, one line, under the node's name
        return 1
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
