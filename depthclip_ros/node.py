"""The `depthclip` ROS 2 node: RGB image (+ camera_info) in, metric depth and a point cloud out.

A thin layer over `DepthClip`: callbacks only store the newest frame; one worker
thread decodes, predicts and publishes, so a slow model drops frames instead of
building a backlog.
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
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, DurabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from . import conversions
from .config import (COLORMAPS, NODE_NAME, OUTPUT_DEFAULTS, ConfigError, DepthClipConfig, OutputSettings,
                     default_params_file, read_params_file)
from .core import DepthClip
from .model_loading import ModelLoadError
from .visualization import colorize

# REP 2003: sensor data in best effort, newest only; outputs reliable so every subscriber gets them.
SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST,
                        depth=1, durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5)

NODE_DEFAULTS = {**OUTPUT_DEFAULTS, "use_compressed": False, "diagnostics_period": 1.0}

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
}
RANGES = {
    "temperature": FloatingPointRange(from_value=1e-4, to_value=100.0, step=0.0),
    "diagnostics_period": FloatingPointRange(from_value=0.1, to_value=60.0, step=0.0),
    "input_width": IntegerRange(from_value=32, to_value=4096, step=32),
    "input_height": IntegerRange(from_value=32, to_value=4096, step=32),
    "cloud_stride": IntegerRange(from_value=0, to_value=64, step=1),
}


class Stats:
    """Bounded counters and timing windows for /diagnostics."""

    def __init__(self, window: int = 300):
        self.lock = threading.Lock()
        self.received = self.published = self.dropped = self.rejected = self.errors = 0
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


class DepthClipNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self._declare_parameters()
        params = self._param_values()
        self.settings = OutputSettings.from_params(params)
        config = DepthClipConfig.from_params(params)
        self.stats = Stats()
        self._cv = threading.Condition()
        self._pending = None
        self._config_request = None
        self._running = True
        self._camera_info = None
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
            raise self._start_error  # ModelLoadError / ConfigError end start-up in main()

        self.depth_pub = self.create_publisher(Image, "depth", OUTPUT_QOS)
        self.info_pub = self.create_publisher(CameraInfo, "depth/camera_info", OUTPUT_QOS)
        self.cloud_pub = self.create_publisher(PointCloud2, "points", OUTPUT_QOS)
        self.colored_pub = self.create_publisher(Image, "depth/colored", OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if params["use_compressed"]:
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, SENSOR_QOS)
        else:
            self.create_subscription(Image, "image", self._on_image, SENSOR_QOS)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, SENSOR_QOS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Wall-clock period: health reports keep coming while a replayed bag (use_sim_time) is paused.
        self.create_timer(params["diagnostics_period"], self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

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
    def _on_camera_info(self, msg: CameraInfo):
        self._camera_info = msg

    def _on_image(self, msg):
        """Never blocks: the newest frame replaces a pending one, which counts as dropped."""
        self.stats.count("received")
        with self._cv:
            if self._pending is not None:
                self.stats.count("dropped")
            self._pending = msg
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
    def _start(self, config, ready):
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
        if not self._start(config, ready):
            return
        while True:
            with self._cv:
                while self._pending is None and self._config_request is None and self._running:
                    self._cv.wait()
                if not self._running:
                    return
                request, self._config_request = self._config_request, None
                if request is None:
                    msg, self._pending = self._pending, None
            if request is not None:
                try:
                    self.estimator.update_config(request["config"])
                except Exception as exc:  # e.g. a prompt longer than CLIP's context
                    request["error"] = str(exc)
                request["done"].set()
                continue
            try:
                self.process(msg)
            except conversions.ImageDecodeError as exc:
                self.stats.count("rejected")
                self._warn_throttled(f"rejected: {exc}", f"image rejected: {exc}")
            except Exception as exc:  # one bad frame must not stop the node
                self.stats.count("errors")
                self._warn_throttled(f"error: {type(exc).__name__}",
                                     f"frame dropped, processing failed: {type(exc).__name__}: {exc}",
                                     error=True)

    def process(self, msg):
        rgb = conversions.decode_image(msg)
        t0 = time.perf_counter()
        result = self.estimator.predict(rgb)
        self.stats.inference_s.append(time.perf_counter() - t0)
        settings = self.settings
        info = self._camera_info
        out = conversions.frame_outputs(rgb, result, 0, info, settings.cloud_stride)
        header = msg.header
        self.depth_pub.publish(Image(header=header, **out.depth))
        if out.cloud is not None:
            self.info_pub.publish(CameraInfo(header=header, **out.camera_info))
            fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in out.cloud["fields"]]
            self.cloud_pub.publish(PointCloud2(header=header, **{**out.cloud, "fields": fields}))
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
            "camera_info": "received" if self._camera_info is not None else "missing",
        }
        level, message = DiagnosticStatus.OK, "ok"
        if self._camera_info is None:
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
    except (ModelLoadError, ConfigError) as exc:
        # One clear line, no traceback wall: what was wrong and how to fix it.
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
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
