"""The `depthclip` ROS 2 lifecycle node: RGB image (+ camera_info) in, metric depth and a point
cloud out.

ROS wiring only: `configure` validates the parameters (config.Parameters) and loads the model on
the worker (frame_worker), `activate` subscribes (inputs adapt their reliability, input_qos) and
enables the publishers, `deactivate` stops both, `cleanup` frees the model. Each image is paired
with the camera_info of its stamp (stamp_pairing); /diagnostics come from frame_stats via health.
"""

from __future__ import annotations

import socket
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import (
    InvalidQosOverridesError,
    QoSOverridingOptions,
    QoSPolicyKind,
)
from rclpy.serialization import deserialize_message
from rclpy.time import Time
from sensor_msgs.msg import (
    CameraInfo,
    CompressedImage,
    Image,
    PointCloud2,
    PointField,
    RegionOfInterest,
)
from std_msgs.msg import Header

from . import conversions, health, input_qos, topics
from .config import NODE_NAME, ConfigError, Parameters, constraints_text, parameter_fields
from .core import DepthClip
from .frame_stats import FrameStats
from .frame_worker import FrameWorker
from .model_loading import ModelLoadError, return_freed_memory
from .stamp_pairing import StampPairing
from .text_features import tokenize
from .visualization import colorize

# Errors of the node's own inputs: their message is the whole story, one line.
EXPECTED_ERRORS = (
    ModelLoadError,
    ConfigError,
    InvalidParameterValueException,
    InvalidParameterTypeException,
    InvalidQosOverridesError,
)

# Seconds between checks of the input publishers' QoS (rosbag2's recorder polls likewise).
QOS_CHECK_PERIOD = 0.5
# Longest wait for the worker to finish the frame in progress (deactivate, cleanup).
WORKER_FLUSH_TIMEOUT = 30.0


def input_qos_profile(reliability: str) -> QoSProfile:
    """Inputs keep only the newest sample: the newest frame wins and nothing queues."""
    return QoSProfile(
        reliability=ReliabilityPolicy[reliability.upper()],
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos_profile() -> QoSProfile:
    """Outputs reliable (every subscriber, reliable or best effort, connects), a few deep. A new
    profile per publisher: rclpy writes each publisher's QoS overrides into the profile it is
    given."""
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5
    )


def parameter_descriptor(field) -> ParameterDescriptor:
    """A field of the schema as ROS describes it. Typing and limits are checked by the node's
    validation (the schema's, same message as the tools'), so the descriptor carries them as
    text and accepts an integer where a number is expected (`ros2 param set ... temperature 1`)."""
    return ParameterDescriptor(
        description=field.metadata["description"],
        additional_constraints=constraints_text(field),
        read_only=field.metadata["read_only"],
        dynamic_typing=True,
    )


class AdaptiveInput:
    """One input subscription whose reliability follows its publishers (see input_qos) unless the
    `qos_overrides.<topic>.subscription.reliability` parameter forces it."""

    def __init__(self, node, msg_type, topic: str, callback, raw: bool = False):
        self.node, self.msg_type, self.callback, self.raw = node, msg_type, callback, raw
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
                input_qos_profile(reliability),
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


class DepthClipNode(LifecycleNode):
    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self._fatal_on_failure = False  # autostart: a failed transition ends the process
        for _, field in parameter_fields():
            self.declare_parameter(
                field.name, _ros_value(field.default), parameter_descriptor(field)
            )
        self.params = None  # Parameters while configured
        self.estimator = None  # DepthClip while configured; owned by the worker thread
        self.worker = None
        self.inputs = []
        self.outputs = {}  # topic -> LifecyclePublisher
        self._our_timers = {}
        self._image_type = Image
        self.stats = FrameStats()
        self._camera_infos = StampPairing()
        self._activated_at = None
        self._hardware_id = socket.gethostname()
        self.add_on_set_parameters_callback(self._validate_changes)
        self.add_post_set_parameters_callback(self._apply_changes)

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
            return TransitionCallbackReturn.SUCCESS
        except EXPECTED_ERRORS as exc:
            self._transition_failed("configure", str(exc))
        except Exception as exc:  # anything else still fails the transition, in one line
            self._transition_failed("configure", f"{type(exc).__name__}: {exc}")
        self._release()
        return TransitionCallbackReturn.FAILURE

    def _configure(self):
        # Every cheap check (parameters, topics, QoS overrides) before the model load (seconds).
        params = Parameters.from_params(self._param_values())
        tokenize(params.config.prompts)
        image_type, image_topic = (
            (CompressedImage, topics.COMPRESSED_IMAGE)
            if params.node.use_compressed
            else (Image, topics.IMAGE)
        )
        # Images arrive serialized and only the frame the worker takes is deserialized: most
        # frames of a fast camera are replaced unread (newest frame wins), so they cost nothing.
        self._image_type = image_type
        self.inputs = [
            AdaptiveInput(self, image_type, image_topic, self._on_image, raw=True),
            AdaptiveInput(self, CameraInfo, topics.CAMERA_INFO, self._on_camera_info),
        ]
        options = QoSOverridingOptions.with_default_policies()
        for msg_type, topic in (
            (Image, topics.DEPTH_IMAGE),
            (CameraInfo, topics.DEPTH_CAMERA_INFO),
            (PointCloud2, topics.POINTS),
            (Image, topics.DEPTH_COLORED),
        ):
            self.outputs[topic] = self.create_lifecycle_publisher(
                msg_type, topic, output_qos_profile(), qos_overriding_options=options
            )
        self.params = params
        self.worker = FrameWorker(self._process, self._on_frame_error, wanted=self._watched)
        self.get_logger().info(
            f"loading CLIP '{params.config.model}' on device '{params.config.device}' ..."
        )
        self.estimator = self.worker.call(self._load_model, params.config).result()
        self._hardware_id = f"{socket.gethostname()}/{self.estimator.device}"
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Wall-clock timers: health reports and QoS adaptation go on while a bag is paused.
        self._our_timers["diagnostics"] = self.create_timer(
            params.node.diagnostics_period, self._publish_diagnostics, clock=_steady()
        )

    def on_activate(self, state) -> TransitionCallbackReturn:
        try:
            self.stats = FrameStats()
            self._activated_at = time.monotonic()
            self._update_inputs()
            self._our_timers["inputs"] = self.create_timer(
                QOS_CHECK_PERIOD, self._update_inputs, clock=_steady()
            )
        except Exception as exc:  # e.g. an input's QoS override rclpy cannot apply
            reason = (
                str(exc) if isinstance(exc, EXPECTED_ERRORS) else f"{type(exc).__name__}: {exc}"
            )
            self._transition_failed("activate", reason)
            self._stop_inputs()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(
            f"active: {self.inputs[0].topic} -> {self.resolve_topic_name(topics.DEPTH_IMAGE)}"
        )
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._activated_at = None
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured

    def _transition_failed(self, transition: str, reason: str):
        if self._fatal_on_failure:  # the process ends: today's one FATAL line
            self.get_logger().fatal(reason)
        else:  # a lifecycle manager may fix parameters and try again
            self.get_logger().error(f"{transition} failed: {reason}")

    def _stop_inputs(self):
        """No new frames; the one in progress finishes (its outputs go out) before returning."""
        timer = self._our_timers.pop("inputs", None)
        if timer is not None:
            self.destroy_timer(timer)
        for subscription in self.inputs:
            subscription.close()
        if self.worker is not None:
            self.worker.discard_pending()
            self.worker.call(lambda: None).result(WORKER_FLUSH_TIMEOUT)

    def _release(self):
        """Undo configure: publishers, timers, worker and model; the memory goes back."""
        for name in list(self._our_timers):
            self.destroy_timer(self._our_timers.pop(name))
        for publisher in self.outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self.outputs = {}
        if getattr(self, "_diagnostics", None) is not None:
            self.destroy_publisher(self._diagnostics)
            self._diagnostics = None
        self.inputs = []
        if self.worker is not None:
            device = self.estimator.device if self.estimator is not None else None
            self.worker.call(self._drop_model).result(WORKER_FLUSH_TIMEOUT)
            self.worker.stop()
            self.worker = None
            if device is not None:
                return_freed_memory(device)
                self.get_logger().info("model unloaded")
        self.params = None
        self._camera_infos = StampPairing()

    # ----------------------------------------------------------------- parameters
    def _param_values(self) -> dict:
        return {
            field.name: self.get_parameter(field.name).value for _, field in parameter_fields()
        }

    def _validate_changes(self, changes) -> SetParametersResult:
        """Runs before a change is stored: the schema's checks, with the schema's message."""
        names = {field.name for _, field in parameter_fields()}
        if not any(p.name in names for p in changes):
            return SetParametersResult(successful=True)
        params = self._param_values()
        params.update({p.name: p.value for p in changes})
        try:
            tokenize(Parameters.from_params(params).config.prompts)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_changes(self, changes) -> None:
        """After a change is stored: the worker takes the new config before its next frame."""
        if self.params is None or self.worker is None:
            return  # unconfigured: configure reads the parameters
        params = Parameters.from_params(self._param_values())
        self.params = params
        if params.config != self.estimator.config:
            future = self.worker.call(self.estimator.update_config, params.config)
            future.add_done_callback(self._config_applied)

    def _config_applied(self, future):
        if future.cancelled():
            return
        if future.exception() is not None:  # e.g. the text-feature encoding failed
            self.get_logger().error(
                f"parameter change not applied, still running the previous "
                f"config: {future.exception()}"
            )

    # ----------------------------------------------------------------- callbacks
    def _update_inputs(self):
        for subscription in self.inputs:
            subscription.update()

    def _watched(self) -> bool:
        return any(p.get_subscription_count() > 0 for p in self.outputs.values())

    def _on_camera_info(self, msg: CameraInfo):
        self._camera_infos.add(msg)

    def _on_image(self, msg: bytes):
        """Never blocks: the newest frame replaces a pending one, which counts as dropped."""
        self.stats.count("received")
        if self.worker is not None and self.worker.submit(msg):
            self.stats.count("dropped")

    # ----------------------------------------------------------------- worker thread
    def _load_model(self, config) -> DepthClip:
        estimator = DepthClip(config)
        t0 = time.perf_counter()
        estimator.warm_up()  # the first camera frame then gets the steady-state latency
        self.get_logger().info(
            f"model {estimator.model_identity} on {estimator.device} "
            f"({str(estimator.dtype).replace('torch.', '')}), warm-up "
            f"{(time.perf_counter() - t0) * 1e3:.0f} ms"
        )
        return estimator

    def _drop_model(self):
        self.estimator = None

    def _on_frame_error(self, exc: Exception):
        if isinstance(exc, conversions.ImageDecodeError):
            self.stats.count("rejected")
            self.get_logger().warning(f"image rejected: {exc}", throttle_duration_sec=5.0)
        else:  # one bad frame must not stop the node
            self.stats.count("failed")
            self.get_logger().error(
                f"frame dropped, processing failed: {type(exc).__name__}: {exc}",
                throttle_duration_sec=5.0,
            )

    def _process(self, serialized: bytes, arrival: float):
        try:
            msg = deserialize_message(serialized, self._image_type)
        except Exception as exc:  # bytes that are not this message type: an undecodable frame
            raise conversions.ImageDecodeError(f"cannot deserialize the message: {exc}") from None
        rgb = conversions.decode_image(msg)
        params, estimator = self.params, self.estimator
        t0 = time.perf_counter()
        result = estimator.predict(rgb)
        self.stats.timing("inference", time.perf_counter() - t0)
        header = msg.header
        # Looked up after the forward: a camera_info logged right after its image is here by now.
        info = self._paired_camera_info(header, arrival + params.node.camera_info_wait)
        out = conversions.frame_outputs(rgb, result, 0, info, params.outputs.cloud_stride)
        self.outputs[topics.DEPTH_IMAGE].publish(Image(header=header, **out.depth))
        if out.cloud is not None:
            info_fields = dict(out.camera_info, roi=RegionOfInterest(**out.camera_info["roi"]))
            self.outputs[topics.DEPTH_CAMERA_INFO].publish(
                CameraInfo(header=header, **info_fields)
            )
            fields = [
                PointField(name=n, offset=o, datatype=d, count=c)
                for n, o, d, c in out.cloud["fields"]
            ]
            self.outputs[topics.POINTS].publish(
                PointCloud2(header=header, **{**out.cloud, "fields": fields})
            )
            if out.distorted:
                self.get_logger().warning(
                    "camera_info has non-zero distortion D: the point cloud assumes a rectified "
                    "image; feed image_rect (image_proc)",
                    once=True,
                )
        elif info is None:
            self.get_logger().warning(
                "no camera_info received yet: publishing depth without a point cloud", once=True
            )
        else:
            self.get_logger().warning(f"{out.problem}: no point cloud", throttle_duration_sec=5.0)
        colored = self.outputs[topics.DEPTH_COLORED]
        if colored.get_subscription_count() > 0:
            lo, hi = float(result.bins[0]), float(result.bins[-1])
            image = colorize(result.depth[0], lo, hi, params.outputs.colormap)
            colored.publish(Image(header=header, **conversions.rgb8_image_fields(image)))
        latency = (self.get_clock().now() - Time.from_msg(header.stamp)).nanoseconds * 1e-9
        self.stats.timing("latency", latency)
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
            self.get_logger().warning(
                f"no camera_info with the image's stamp {header.stamp.sec}."
                f"{header.stamp.nanosec:09d} within camera_info_wait; using the latest "
                f"({stamp.sec}.{stamp.nanosec:09d})",
                throttle_duration_sec=5.0,
            )
        if info.header.frame_id != header.frame_id:
            self.get_logger().warning(
                f"camera_info frame_id '{info.header.frame_id}' differs from the image's "
                f"'{header.frame_id}'; outputs keep the image's",
                once=True,
            )
        return info

    # ----------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self):
        active = self._activated_at is not None
        state = health.NodeState(
            active=active,
            watched=active and self._watched(),
            camera_info_received=self._camera_infos.latest is not None,
            active_for=time.monotonic() - self._activated_at if active else 0.0,
            image_topic=self.inputs[0].topic if self.inputs else topics.IMAGE,
        )
        level, message, values = health.evaluate(self.stats.snapshot(), self.params.node, state)
        estimator = self.estimator
        values.update(
            {
                "device": str(estimator.device) if estimator else "none",
                "model": estimator.model_identity if estimator else "none",
            }
        )
        values.update({f"{i.topic} reliability": str(i.reliability) for i in self.inputs})
        status = DiagnosticStatus(
            level=bytes([level]),
            name=f"{self.get_fully_qualified_name()}: depth estimation",
            message=message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        self._diagnostics.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
        )

    def destroy_node(self):
        self._stop_inputs()
        self._release()
        return super().destroy_node()


def _steady() -> Clock:
    return Clock(clock_type=ClockType.STEADY_TIME)


def _ros_value(default):
    return list(default) if isinstance(default, tuple) else default


def start(node: DepthClipNode) -> bool:
    """autostart: configure and activate now, as a lifecycle manager would; False on failure
    (already logged, one FATAL line)."""
    node._fatal_on_failure = True
    try:
        for transition in (node.trigger_configure, node.trigger_activate):
            if transition() != TransitionCallbackReturn.SUCCESS:
                return False
        return True
    finally:
        node._fatal_on_failure = False


def main(args=None):
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = DepthClipNode()
        autostart = node.get_parameter("autostart").value
        if not isinstance(autostart, bool):
            node.get_logger().fatal(
                str(ConfigError("autostart", autostart, "must be true or false"))
            )
            code = 1
        elif autostart and not start(node):
            code = 1
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
