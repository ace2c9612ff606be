"""The `depthclip` ROS 2 lifecycle node: RGB image (+ camera_info) in, metric depth and a point
cloud out.

A thin adapter: `configure` validates the parameters (node/parameters), creates the cameras'
inputs and outputs (camera_pipeline) and loads the model on the worker thread (runtime/worker);
`activate` subscribes and enables the publishers; `deactivate` stops the inputs; `cleanup` frees
the model. /diagnostics come from the frame statistics (runtime/statistics, runtime/health).
"""

from __future__ import annotations

import functools
import socket
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos_overriding_options import InvalidQosOverridesError

from ..config.parameters import NODE_NAME
from ..errors import ConfigError, DepthClipError
from ..estimator.result import Started
from ..model_loading import load_estimator, return_freed_memory
from ..runtime.background import NewestOnly
from ..runtime.statistics import FrameStats
from ..runtime.thread_cpu import ThreadCpu
from ..runtime.worker import FrameWorker
from . import diagnostics, lifecycle_bond, parameters
from .camera_pipeline import CameraPipeline, process_frames
from .range_inputs import RangeInputs

# Errors of the node's own inputs: their message is the whole story, one line.
EXPECTED_ERRORS = (
    DepthClipError,
    InvalidParameterValueException,
    InvalidParameterTypeException,
    InvalidQosOverridesError,
)
# Seconds between checks of the input publishers' QoS (rosbag2's recorder polls likewise).
QOS_CHECK_PERIOD = 0.5
# Longest wait for the worker to finish the frame in progress (deactivate, cleanup).
WORKER_FLUSH_TIMEOUT = 30.0


class DepthClipNode(LifecycleNode):
    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self._fatal_on_failure = False  # autostart: a failed transition ends the process
        parameters.declare_parameters(self)
        self.params = None  # Parameters while configured
        self.estimator = None  # DepthClip while configured; owned by the worker thread
        self.worker = None
        self._encoder = None  # the thread beside the worker for output encodings
        self.cameras = {}  # name ("" for the one unnamed camera) -> CameraPipeline, configured
        self.ranges = None  # metric_scale's RangeInputs (scan, anchors/points), configured
        self._diagnostics = None
        self._our_timers = {}  # rclpy's Node uses _timers
        self._activated_at = None
        self.forwards = (0, 0)  # (images, forwards) since activation: max_batch at work
        self._outpaced_told = False  # "input faster than the model" logged this activation
        self.thread_cpu = ThreadCpu()  # the executor's, worker's and encoder's CPU shares
        self._hardware_id = socket.gethostname()
        self._bond = None  # LifecycleBond, made at the first activation under a manager
        self.add_on_set_parameters_callback(self._check_changes)
        if hasattr(self, "add_post_set_parameters_callback"):  # Iron and later
            self.add_post_set_parameters_callback(self._apply_changes)
        else:  # Humble stores an accepted change when its public setters return: apply after
            self._apply_after_setters = True

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
        params = parameters.read_parameters(parameters.parameter_values(self))
        for name in params.node.cameras or ("",):
            on_image = functools.partial(self._on_image, name)
            self.cameras[name] = CameraPipeline(
                self, params.node.use_compressed, on_image, self._defer, self._beside, name
            )
        self.ranges = RangeInputs(self)
        self.params = params
        self._encoder = NewestOnly(self._encoding_failed)
        self.worker = FrameWorker(
            self._process,
            self._frame_failed,
            wanted=self._watched,
            max_batch=params.node.max_batch,
            in_flight=self._frames_in_flight,
        )
        self.thread_cpu.watch("worker", self.worker.thread)
        self.thread_cpu.watch("encoding", self._encoder.thread)
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
            for camera in self.cameras.values():
                camera.stats = FrameStats()
            self.forwards = (0, 0)
            self._outpaced_told = False
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
        for camera in self.cameras.values():
            depth_topic = camera.outputs["depth"].topic_name
            self.get_logger().info(f"active: {camera.image_topic} -> {depth_topic}")
        self._start_bond()
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._end_bond()
        self._stop_inputs()
        self._activated_at = None
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._end_bond()
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self._end_bond()
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured

    def _start_bond(self):
        """Under a lifecycle manager (autostart false), the bond Nav2's manager expects of
        the nodes it activates; a node that starts itself has no manager to bond with."""
        if self.get_parameter("autostart").value:
            return
        if not lifecycle_bond.available():
            self.get_logger().info(
                "no bond with a lifecycle manager: bond/msg is not installed (a manager that "
                "bonds, as nav2_lifecycle_manager does, needs bond_timeout: 0.0)",
                once=True,
            )
            return
        if self._bond is None:
            self._bond = lifecycle_bond.LifecycleBond(self)
        self._bond.start()

    def _end_bond(self):
        if self._bond is not None:
            self._bond.stop()

    def _transition_failed(self, transition: str, reason: str):
        if not self.context.ok():  # stopped (SIGINT, SIGTERM) while it ran: what failed is moot
            return
        if self._fatal_on_failure:  # the process ends: today's one FATAL line
            self.get_logger().fatal(reason)
        else:  # a lifecycle manager may fix parameters and try again
            self.get_logger().error(f"{transition} failed: {reason}")

    def _stop_inputs(self):
        """No new frames; the one in progress finishes (its outputs go out) before returning."""
        timer = self._our_timers.pop("inputs", None)
        if timer is not None:
            self.destroy_timer(timer)
        for camera in self.cameras.values():
            camera.close_inputs()
        if self.ranges is not None:
            self.ranges.close()
        if self.worker is not None:
            self.worker.discard_pending()
            if not self.context.ok():  # shut down (SIGINT, SIGTERM): nothing can go out now
                return
            cameras = list(self.cameras.values())

            def flush():  # worker thread; the next activation starts without depth history
                for camera in cameras:
                    camera.flush_waiting()
                    camera.temporal.reset("deactivated")
                    camera.scale.reset()

            try:
                self.worker.call(flush).result(WORKER_FLUSH_TIMEOUT)
            except Exception as exc:  # e.g. the context shut down while they went out
                if self.context.ok():
                    self.get_logger().warning(f"clouds waiting for camera_info not sent: {exc}")

    def _release(self):
        """Undo configure: publishers, timers, worker and model; the memory goes back."""
        if self._encoder is not None:  # what it holds is published before the outputs close
            self._encoder.stop()
            self._encoder = None
        for name in list(self._our_timers):
            self.destroy_timer(self._our_timers.pop(name))
        for camera in self.cameras.values():
            camera.destroy()
        self.cameras = {}
        if self.ranges is not None:
            self.ranges.close()
            self.ranges = None
        if self._diagnostics is not None:
            self.destroy_publisher(self._diagnostics)
            self._diagnostics = None
        if self.worker is not None:
            device = self.estimator.device if self.estimator is not None else None
            try:
                self.worker.call(self._drop_model).result(WORKER_FLUSH_TIMEOUT)
            finally:  # the thread ends whatever the model did: the process can exit
                self.worker.stop()
                self.worker = None
            if device is not None:
                return_freed_memory(device)
                if self.context.ok():  # after a shutdown rcl could not send it to /rosout
                    self.get_logger().info("model unloaded")
        self.params = None

    # ----------------------------------------------------------------- parameters
    # Without post-set callbacks (Humble): every way a change arrives (the parameter services,
    # `ros2 param load`, in-process calls) goes through these two public setters.
    _apply_after_setters = False  # rclpy's constructor may set parameters before ours runs
    _accepted = None  # Parameters of the change _check_changes accepted last

    def set_parameters(self, parameter_list, *args, **kwargs):
        results = super().set_parameters(parameter_list, *args, **kwargs)
        if self._apply_after_setters and any(r.successful for r in results):
            self._apply_changes(parameter_list)
        return results

    def set_parameters_atomically(self, parameter_list, *args, **kwargs):
        result = super().set_parameters_atomically(parameter_list, *args, **kwargs)
        if self._apply_after_setters and result.successful:
            self._apply_changes(parameter_list)
        return result

    def _check_changes(self, changes) -> SetParametersResult:
        """Before a change is stored: the schema's checks and the loaded model's, once; what
        passes is what _apply_changes applies."""
        try:
            params = parameters.read_changes(parameters.parameter_values(self), changes)
            if params is not None and self.estimator is not None:
                self.estimator.check_config(params.config)  # what the model can run
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        # Kept until applied: Humble's set_parameters checks a list one parameter at a time and
        # applies once after (a later refused or non-schema one leaves it as it is).
        if params is not None:
            self._accepted = params
        return SetParametersResult(successful=True)

    def _apply_changes(self, changes) -> None:
        """After a change is stored: the worker takes the new config before its next frame."""
        params, self._accepted = self._accepted, None
        if params is None or self.params is None or self.worker is None:
            return  # no schema parameter changed, or unconfigured: configure reads them
        self.params = params
        if params.config != self.estimator.config:
            future = self.worker.call(self.estimator.update_config, params.config)
            future.add_done_callback(self._config_applied)

    def _config_applied(self, future):
        if not future.cancelled() and future.exception() is not None:  # e.g. text encoding
            self.get_logger().error(
                f"parameter change not applied, still running the previous "
                f"config: {future.exception()}"
            )

    # ----------------------------------------------------------------- frames
    @property
    def camera(self):
        """The first (for most set-ups the only) camera, None while unconfigured."""
        return next(iter(self.cameras.values()), None)

    def _update_inputs(self):
        for camera in self.cameras.values():
            camera.update_inputs()
        if self.ranges is not None and self.params is not None:
            self.ranges.update(self.params.outputs)

    def _watched(self, name) -> bool:
        camera = self.cameras.get(name)
        return camera is not None and camera.watched()

    def _on_image(self, name, serialized: bytes):
        """Never blocks: the newest frame replaces a pending one, which counts as dropped."""
        self.thread_cpu.watch_current("executor")
        camera = self.cameras[name]
        camera.stats.count("received")
        if self.worker is None:
            return
        replaced = self.worker.submit(serialized, key=name)
        if replaced:
            camera.stats.count("dropped")
        if self.ranges is not None:
            self.ranges.image_arrived(name, serialized, replaced)

    def _process(self, frames) -> Started:  # worker thread
        batch = [(self.cameras[name], serialized, arrival) for name, serialized, arrival in frames]
        started = process_frames(batch, self.params, self.estimator)

        def publish():  # worker thread, once the forwards end
            forwards = [images for images in started() if images]
            self.forwards = (self.forwards[0] + sum(forwards), self.forwards[1] + len(forwards))

        return Started(publish, started.done, started.when_done)

    def _frames_in_flight(self) -> int:  # worker thread
        """The forwards the model runs side by side (OpenVINO's streams; else 1)."""
        return getattr(self.estimator, "frames_in_flight", 1)

    def _defer(self, fn, *args, at=None):
        """fn(*args) on the worker thread (not before `at`, time.monotonic()); a failure is
        logged, the node goes on."""
        if self.worker is not None:
            self.worker.call(fn, *args, at=at).add_done_callback(self._deferred_done)

    def _beside(self, key, fn, *args):
        """fn(*args) on the encoding thread, beside the worker (newest job per `key`)."""
        if self._encoder is not None:
            self._encoder.submit(key, fn, *args)

    def _encoding_failed(self, exc: Exception, key):  # encoding thread
        if not self.context.ok():  # shut down while it went out: not a failure
            return
        self.get_logger().error(
            f"compressedDepth not published: {type(exc).__name__}: {exc}",
            throttle_duration_sec=5.0,
        )

    def _deferred_done(self, future):
        if not future.cancelled() and future.exception() is not None and self.context.ok():
            exc = future.exception()
            self.get_logger().error(
                f"point cloud not published: {type(exc).__name__}: {exc}",
                throttle_duration_sec=5.0,
            )

    def _frame_failed(self, exc: Exception, name):  # worker thread
        self.cameras[name].frame_failed(exc)

    def prepare_image_size(self, height: int, width: int):  # worker thread
        """A camera's image size, known from its camera_info: on CUDA its graphs (TensorRT: its
        engine) for every batch up to max_batch are made now, not on its first frames (which
        would wait for the capture and its check, or the engine's build)."""
        estimator = self.estimator
        if estimator is None or not estimator.prepares_image_sizes:
            return
        try:
            estimator.warm_up((height, width), self.params.node.max_batch)
        except Exception as exc:  # the frame of that size will say it again, and go on
            self.get_logger().warning(
                f"no warm-up at {width}x{height}: {type(exc).__name__}: {exc}"
            )

    def _load_model(self, config):  # worker thread
        estimator = load_estimator(config, self.params.node.max_batch)
        t0 = time.perf_counter()
        estimator.warm_up()  # the first camera frame then gets the steady-state latency
        figure = getattr(estimator, "depth_figure_words", None)  # graphs and bf16 measure one
        self.get_logger().info(
            f"model {estimator.model_identity} on {estimator.device} "
            f"({estimator.precision_detail}, {estimator.runtime}), warm-up "
            f"{(time.perf_counter() - t0) * 1e3:.0f} ms"
            + (f"; depth vs fp32 here: {figure}" if figure else "")
        )
        return estimator

    def _drop_model(self):  # worker thread
        self.estimator = None

    # ----------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self):
        load = None
        if self._activated_at is not None:
            load = diagnostics.model_load(self.cameras, self.estimator, self.forwards)
        if load is not None and load.outpaced and not self._outpaced_told:
            detail = diagnostics.outpaced_detail(load, self.params, self.estimator)
            self.get_logger().info(f"input faster than the model: {detail}")
            self._outpaced_told = True
        self._diagnostics.publish(
            diagnostics.diagnostic_array(
                self.get_fully_qualified_name(),
                self.cameras,
                self.params,
                self.estimator,
                self._activated_at,
                self._hardware_id,
                self.get_clock().now().to_msg(),
                self.forwards,
                self.thread_cpu.shares(),
                load,
            )
        )

    def destroy_node(self):
        try:
            self._stop_inputs()
        finally:
            self._release()
        destroyed = super().destroy_node()
        # rclpy's LifecycleNode (Humble to Rolling) leaves its state machine, which holds the
        # node's handle: the node and its lifecycle services stayed in the graph, answering
        # nothing, for as long as this object lived.
        self._state_machine.destroy_when_not_in_use()
        return destroyed


def _steady() -> Clock:
    return Clock(clock_type=ClockType.STEADY_TIME)
