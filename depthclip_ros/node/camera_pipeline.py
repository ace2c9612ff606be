"""One camera through the node: its input subscriptions, stamp pairing, output publishers and
frame statistics; and frames, of one camera or several, turned into published outputs.

The node owns the lifecycle, the parameters, the model and the worker; a CameraPipeline owns
everything that is per camera. `process_frames` runs on the worker thread.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from rclpy.time import Time
from sensor_msgs.msg import (
    CameraInfo,
    CompressedImage,
    Image,
    PointCloud2,
)

from ..errors import ImageDecodeError
from ..estimator.result import Started, all_started
from ..estimator.temporal_filter import TemporalFilter
from ..messages import topics
from ..messages.camera_model import PinholeCamera
from ..messages.decoding import decode_image
from ..messages.outputs import (
    CLOUD_OUTPUTS,
    MessageBuilder,
    PendingFrame,
    colored_image_fields,
    compressed_depth_fields,
    depth_image_fields,
    fine_arrays,
)
from ..metric_scale.camera_scale import CameraScale, arrays_to_fetch
from ..runtime.batching import by_image_size
from ..runtime.scene_hysteresis import SceneChoice, SceneHysteresis
from ..runtime.stamp_pairing import CameraInfoPairing, pairing_warnings, stamp_ns
from ..runtime.statistics import FrameStats
from .adaptive_input import AdaptiveInput

OUTPUT_TYPES = {
    "depth": Image,
    "std": Image,
    "camera_info": CameraInfo,
    "points": PointCloud2,
    "clearing": PointCloud2,
    "colored": Image,
    "compressed_depth": CompressedImage,
}
# Keep last 10 images, though only the newest is run (the worker keeps one frame a camera and
# the callback only stores the serialized bytes): measured on the default middleware, a
# reliable keep-last-1 reader of 900 KB frames from another process collapsed to 3 of 100
# frames/s at 100 Hz (fragments of the next frame evict the one being reassembled); 2 held at
# 100 Hz and collapsed at 300 Hz; 10 received 91 % at 300 Hz (docs/node.md).
IMAGE_DEPTH = 10
MESSAGES = MessageBuilder.from_ros()


def output_qos_profile() -> QoSProfile:
    """Outputs reliable (every subscriber, reliable or best effort, connects), a few deep. A new
    profile per publisher: rclpy writes each publisher's QoS overrides into the profile it is
    given."""
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5
    )


class CameraPipeline:
    def __init__(self, node, use_compressed: bool, on_image, defer, beside, name: str = ""):
        """Inputs (not yet subscribed: `update_inputs` does) and lifecycle publishers, named
        relative to the node's namespace, under `name/` for a named camera. `on_image(serialized)`
        receives each image, still serialized; `defer(fn, *args, at=None)` runs fn on the worker
        thread (at a time of time.monotonic(), if given); `beside(key, fn, *args)` on the thread
        beside the worker (encodings that must not hold the model)."""
        self.node, self.name, self._defer, self._beside = node, name, defer, beside
        # Images arrive serialized and only the frame the worker takes is deserialized: most
        # frames of a fast camera are replaced unread (newest frame wins), so they cost nothing.
        self.image_type = CompressedImage if use_compressed else Image
        image_topic = topics.COMPRESSED_IMAGE if use_compressed else topics.IMAGE

        def named(topic):
            return f"{name}/{topic}" if name else topic

        self.stats = FrameStats()
        # Kept serialized, each deserialized where a frame uses it (CameraInfoPairing: memory).
        self.camera_infos = CameraInfoPairing(
            decode=lambda kept: deserialize_message(kept, CameraInfo)
        )
        self._sizes_announced = set()  # image sizes camera_infos announced (a CUDA warm-up)
        self.scene = SceneHysteresis()  # scene_bins auto: this camera's current scene
        self.temporal = TemporalFilter()  # temporal_filter: this camera's fused distributions
        self.scale = CameraScale()  # metric_scale: this camera's scale fitted to range data
        self.inputs = [
            AdaptiveInput(
                node, self.image_type, named(image_topic), on_image, IMAGE_DEPTH, raw=True
            ),
            # Measured: keep-last 1 lost half the camera_infos a driver sent just before each
            # VGA image (reliable, default middleware); 10 lost none.
            AdaptiveInput(
                node, CameraInfo, named(topics.CAMERA_INFO), self._on_camera_info, 10, raw=True
            ),
        ]
        options = QoSOverridingOptions.with_default_policies()
        self.outputs = {
            key: node.create_lifecycle_publisher(
                msg_type,
                named(topics.OUTPUTS[key]),
                output_qos_profile(),
                qos_overriding_options=options,
            )
            for key, msg_type in OUTPUT_TYPES.items()
        }

    @property
    def image_topic(self) -> str:
        return self.inputs[0].topic

    def update_inputs(self):
        for subscription in self.inputs:
            subscription.update()

    def close_inputs(self):
        for subscription in self.inputs:
            subscription.close()

    def destroy(self):
        self.close_inputs()
        for publisher in self.outputs.values():
            self.node.destroy_lifecycle_publisher(publisher)
        self.outputs = {}

    def watched(self) -> bool:
        return any(self._wanted(key) for key in self.outputs)

    def _wanted(self, key: str) -> bool:
        return self.outputs[key].get_subscription_count() > 0

    def subscribed(self) -> set:
        """Keys of the outputs someone subscribes to now."""
        return {key for key in self.outputs if self._wanted(key)}

    def frame_failed(self, exc: Exception):
        if not self.node.context.ok():  # shut down mid-frame (SIGINT, SIGTERM): not a failure
            return
        log = self.node.get_logger()
        if isinstance(exc, ImageDecodeError):
            self.stats.count("rejected")
            log.warning(f"image rejected: {exc}", throttle_duration_sec=5.0)
        else:  # one bad frame must not stop the node
            self.stats.count("failed")
            log.error(
                f"frame dropped, processing failed: {type(exc).__name__}: {exc}",
                throttle_duration_sec=5.0,
            )

    def decode(self, serialized: bytes) -> tuple:
        """(message, uint8 RGB) of one serialized image; ImageDecodeError when it has none."""
        try:
            msg = deserialize_message(serialized, self.image_type)
        except Exception as exc:  # bytes that are not this message type: an undecodable frame
            raise ImageDecodeError(f"cannot deserialize the message: {exc}") from None
        return msg, decode_image(msg)

    def calibrate(self, result, index: int, msg, rgb, stamp: float, params) -> None:
        """metric_scale: image `index` of `result` in the scale fitted to the range data near
        its stamp (the node's RangeInputs), in place."""
        settings = params.outputs
        if settings.metric_scale == "off":
            self.scale.reset()
            return
        size = rgb.shape[:2]
        pairing = self._camera_infos(params)
        info = pairing.find(msg.header.stamp) or pairing.fallback((size[1], size[0]))
        self.node.ranges.wait_for_anchors(self.name, msg.header, settings)
        sources = self.node.ranges.sources
        points, k, problems = sources.anchors(msg.header, info, size, settings, self.name)
        self.scale.apply(result, index, points, k, stamp, settings, problems)
        if self.scale.reason:
            self.node.get_logger().warning(
                f"metric_scale: frame not fitted: {self.scale.reason}", throttle_duration_sec=5.0
            )

    def _camera_infos(self, params) -> CameraInfoPairing:
        """The camera's camera_infos, paired within the camera_info_slop in force (the first
        frame's too: metric_scale pairs before the clouds do)."""
        self.camera_infos.slop = params.outputs.camera_info_slop
        return self.camera_infos

    def publish_result(self, msg, rgb, result, index: int, arrival: float, params):
        """Publish image `index` of `result`: the depth at once; the cloud and the depth's
        camera_info once the camera_info of its stamp is here, waiting for it (without holding
        the worker) until `camera_info_wait` after the image arrived."""
        header = msg.header
        self.outputs["depth"].publish(
            MESSAGES.image(header, depth_image_fields(result.depth[index]))
        )
        if self._wanted("std") and result.depth_std is not None:  # lazy
            std = depth_image_fields(result.depth_std[index])
            self.outputs["std"].publish(MESSAGES.image(header, std))
        if self._wanted("colored"):
            fields = colored_image_fields(
                result.depth[index], result.bins_of(index), params.outputs.colormap
            )
            self.outputs["colored"].publish(MESSAGES.image(header, fields))
        if self._wanted("compressed_depth"):  # PNG encoding: beside the model
            self._beside(self.name, self._publish_compressed, header, result, index, params)
        now = self.node.get_clock().now()
        self.stats.timing("latency", (now - Time.from_msg(header.stamp)).nanoseconds * 1e-9)
        self.stats.count("published")
        if not any(self._wanted(key) for key in CLOUD_OUTPUTS):
            return
        if self.scale.withholds_clouds(params.outputs):  # metric_scale_require, no fit yet
            return

        frame = PendingFrame(header, rgb, params.outputs, result=result, index=index)
        pairing = self._camera_infos(params)
        info = pairing.find(header.stamp)
        if info is not None:
            self._publish_cloud(frame, info, exact=True)
            return
        size = (rgb.shape[1], rgb.shape[0])
        if self.node.count_publishers(self.inputs[1].topic) == 0:  # none can come: no wait
            self._publish_cloud(frame, pairing.fallback(size), exact=False)
            return
        ticket, ready = pairing.wait(header.stamp, size, frame)
        for ready_frame, ready_info, exact in ready:
            self._publish_cloud(ready_frame, ready_info, exact)
        if ticket is not None:
            self._defer(self._give_up, ticket, at=arrival + params.node.camera_info_wait)

    def _publish_compressed(self, header, result, index, params):  # encoding thread
        fields = compressed_depth_fields(result.depth[index], params.outputs)
        self.outputs["compressed_depth"].publish(MESSAGES.compressed_image(header, fields))

    def _on_camera_info(self, serialized: bytes):  # executor thread
        info = deserialize_message(serialized, CameraInfo)
        for frame, paired in self.camera_infos.add(info, serialized):
            self._defer(self._publish_cloud, frame, paired, True)
        camera = PinholeCamera.from_camera_info(info)  # the image's size: ROI and binning
        size = (camera.height, camera.width)
        if size not in self._sizes_announced and min(size) > 0:
            self._sizes_announced.add(size)  # the camera's frames will have this size
            self._defer(self.node.prepare_image_size, *size)

    def _give_up(self, ticket):  # worker thread, camera_info_wait after the image arrived
        waiting = self.camera_infos.give_up(ticket)
        if waiting is not None:
            self._publish_cloud(*waiting, exact=False)

    def flush_waiting(self):
        """Every frame still waiting gets its cloud now, with the fallback camera_info (before
        the outputs close: output already computed is not lost)."""
        for frame, info in self.camera_infos.give_up_all():
            self._publish_cloud(frame, info, exact=False)

    def _publish_cloud(self, frame, info, exact: bool):  # worker thread
        log = self.node.get_logger()
        header = frame.header
        warnings = pairing_warnings(header, info, exact)
        if warnings.fallback:
            self.stats.count("info_fallbacks")
            log.warning(warnings.fallback, throttle_duration_sec=5.0)
        if warnings.frame_id:
            log.warning(warnings.frame_id, once=True)
        # Each only while subscribed: a depth/camera_info subscriber costs no cloud.
        out = frame.cloud(info, self._wanted("points"), self._wanted("clearing"))
        for key, message in MESSAGES.cloud_messages(header, out).items():
            self.outputs[key].publish(message)
        if out.warning:
            log.warning(out.warning, throttle_duration_sec=5.0)


def process_frames(frames, params, estimator) -> Started:
    """[(camera, serialized image, arrival)] -> their forwards started (worker thread); the
    Started publishes each camera's outputs and gives the number of images in each forward.

    Images of one size go through one batched forward; a frame that fails is counted and
    logged by its camera and does not stop the others.
    """
    decoded = []
    for camera, serialized, arrival in frames:
        t0 = time.perf_counter()
        try:
            decoded.append((camera, *camera.decode(serialized), arrival))
        except Exception as exc:
            camera.frame_failed(exc)
            continue
        camera.stats.timing("decode", time.perf_counter() - t0)
    begun = []
    for group in by_image_size(decoded, lambda frame: frame[2]).values():
        cameras = [camera for camera, _, _, _ in group]
        scenes = SceneChoice([camera.scene for camera in cameras], params.node.scene_switch_frames)
        # Only the arrays the subscribed outputs are made of leave the GPU.
        subscribed = [camera.subscribed() for camera in cameras]
        arrays = arrays_to_fetch(set().union(*subscribed), params.outputs)
        t0 = time.perf_counter()
        try:
            images = np.stack([rgb for _, _, rgb, _ in group])
            started = estimator.begin_predict(images, scenes=scenes, arrays=arrays)
        except Exception as exc:
            for camera in cameras:
                camera.frame_failed(exc)
            continue
        begun.append((group, subscribed, started, t0))
    return all_started(
        [started for _, _, started, _ in begun],
        lambda: [_publish_group(*each, params) for each in begun],
    )


def _publish_group(group, subscribed, started, t0, params) -> int:
    """One forward's frames, its result waited for, through the temporal filter and metric
    scale and published; the number of images it ran (0: it failed)."""
    cameras = [camera for camera, _, _, _ in group]
    try:
        result = started()
    except Exception as exc:
        for camera in cameras:
            camera.frame_failed(exc)
        return 0
    seconds = time.perf_counter() - t0
    for index, (camera, msg, rgb, arrival) in enumerate(group):
        camera.stats.timing("inference", seconds)
        try:
            t0 = time.perf_counter()
            stamp = stamp_ns(msg.header.stamp) * 1e-9
            fine = fine_arrays(subscribed[index], params.outputs)
            camera.temporal.apply(result, index, rgb, stamp, params.outputs, fine)
            camera.calibrate(result, index, msg, rgb, stamp, params)
            t1 = time.perf_counter()
            camera.publish_result(msg, rgb, result, index, arrival, params)
            camera.stats.timing("after the model", t1 - t0)
            camera.stats.timing("outputs", time.perf_counter() - t1)
        except Exception as exc:
            camera.frame_failed(exc)
    return len(group)
