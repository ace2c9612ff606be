"""Processing a recorded bag: a copy of it with the depth outputs of its image topics added.

Every camera of the bag goes through one model in one pass; frames of one size share batched
forwards, whichever camera they come from. Frames go through the same DepthClip core and the
same message builder as the live node. Output is written to a staging folder and moved into
place only when complete. No rclpy.
"""

from __future__ import annotations

import collections
import math
import sqlite3
import time

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..config.settings import OutputSettings
from ..errors import AnchorError, BagError, ImageDecodeError, ImageSizeError
from ..estimator.temporal_filter import TemporalFilter
from ..files import atomic_directory, cannot_write
from ..messages.decoding import decode_image
from ..messages.outputs import (
    MessageBuilder,
    PendingFrame,
    fine_arrays,
)
from ..metric_scale.camera_scale import CameraScale, arrays_to_fetch
from ..metric_scale.range_sources import RangeSources
from ..runtime.batching import by_image_size
from ..runtime.scene_hysteresis import SceneChoice, SceneHysteresis
from ..runtime.stamp_pairing import CameraInfoIndex, pairing_warnings, stamp_ns
from ..transforms import transform_from_stamped
from .pipeline import ahead, decode_threads, model_leaves_cpu_free, run_stages
from .plan import BagPlan, PlannedCamera
from .reading import (
    CAMERA_INFO,
    COMPRESSED,
    read_messages,
)
from .warnings import BagWarnings

# metric_scale's range data in a bag, by default where a robot's drivers publish them.
RANGE_TOPICS = {"scan": "/scan", "points": "/anchors/points", "depth": "/anchors/depth"}
RANGE_TYPES = {
    "scan": "sensor_msgs/msg/LaserScan",
    "points": "sensor_msgs/msg/PointCloud2",
    "depth": "sensor_msgs/msg/Image",
}
TF, TF_STATIC, TF_MESSAGE = "/tf", "/tf_static", "tf2_msgs/msg/TFMessage"

# rosbag2 metadata version of OUT: 8 writes offered_qos_profiles as a YAML string, the form
# Humble's rosbag2 parses (version 9 writes a list, which Humble refuses); Iron and later read 8.
OUTPUT_BAG_VERSION = 8
# A chunk closes early once this many bytes of other messages wait in it (bounded memory).
MAX_BUFFERED_BYTES = 64 << 20


class _Camera:
    """One image topic of the bag as it is processed: its camera_info, its output topics, its
    temporal filter and scene, and its counts."""

    def __init__(self, planned: PlannedCamera):
        self.image_topic, self.image_type = planned.image_topic, planned.image_type
        self.info_topic, self.outputs = planned.info_topic, planned.outputs
        self.infos_by_stamp = CameraInfoIndex()  # every camera_info of the bag, by stamp
        self.logged_infos = CameraInfoIndex(keep=1)  # the latest of each size logged so far
        self.connections = {}  # output name -> connection, added on first use (no empty topics)
        self.temporal = TemporalFilter()  # temporal_filter: this camera's fused distributions
        self.scene = SceneHysteresis()  # scene_bins auto: this camera's scene, as the node's
        self.scale = CameraScale()  # metric_scale: this camera's scale, as the node's
        self.stats = dict.fromkeys(("frames", "depth", "clouds", "rejected", "info_fallbacks"), 0)


class _OutputTopic:
    """An output message's topic until it is written: OUT's connections are added on the
    thread that writes (sqlite3 refuses any other)."""

    __slots__ = ("camera", "name", "msgtype")

    def __init__(self, camera: _Camera, name: str, msgtype: str):
        self.camera, self.name, self.msgtype = camera, name, msgtype


class _Chunk:
    """Messages copied from IN and the decoded frames among them, written together once the
    frames' predictions are in: the unit handed from reading to the model to writing."""

    __slots__ = ("messages", "images", "frames", "predictions")

    def __init__(self):
        self.images = 0  # image messages read, decodable or not (the progress bar's count)
        self.messages = []  # (output connection or _OutputTopic, log time, raw bytes)
        self.frames = []  # decoded frames waiting for the model
        self.predictions = []  # (frames of one image size, their begun DepthResult)


class BagProcessor:
    """Copies every message of IN to the writer and adds the depth outputs of each camera.

    The model (`estimator.begin_predict`, any object with the core's) runs beside reading
    and writing where it leaves the CPU free (bag/pipeline.py); the output is the same
    messages in the same order either way."""

    def __init__(
        self,
        estimator,
        settings: OutputSettings,
        typestore,
        batch_size=1,
        scene_switch_frames=1,
        range_topics=None,
        decode_threads=None,
    ):
        self.estimator = estimator
        self.decode_threads = decode_threads  # None: as the cores allow (pipeline.decode_threads)
        # metric_scale: the range data read so far (log order, as the node receives them)
        self.ranges = RangeSources()
        # bag topic -> (source, the image topic of the camera it serves, None: every camera)
        self.range_topics = {}
        if settings.metric_scale != "off":
            topics = {**RANGE_TOPICS, **(range_topics or {})}
            for name in settings.metric_scale_sources:
                given = topics.get(name)  # (the source ground has none)
                if not given:
                    continue
                each = given.items() if isinstance(given, dict) else [(None, given)]
                self.range_topics.update({topic: (name, camera) for camera, topic in each})
        self.settings = settings
        self.scene_switch_frames = scene_switch_frames
        self.typestore = typestore
        self.builder = MessageBuilder.from_typestore(typestore)
        self.batch_size = batch_size
        self.copied = 0
        self.warnings = BagWarnings()
        self.prepared_sizes: set = set()
        self.preparing_seconds = 0.0  # spent preparing image sizes (CUDA graphs, TensorRT)

    def run(self, reader, writer, in_path, cameras, definitions, frames_written=None):
        """Write the cameras' outputs to `writer` and, with `definitions` (bag/definitions.py;
        None: outputs only), every message of `reader`, each input topic with its definition;
        `frames_written(n)` is told of each n image messages done."""
        out_conns = {}
        copied = reader.connections if definitions is not None else ()
        for c in copied:  # every input connection, unchanged
            key = (c.topic, c.msgtype, c.ext.serialization_format)
            if key in out_conns:
                continue
            msgdef, rihs01 = definitions[c.id]
            out_conns[key] = writer.add_connection(
                c.topic,
                c.msgtype,
                msgdef=msgdef,
                rihs01=rihs01,
                serialization_format=c.ext.serialization_format,
                offered_qos_profiles=c.ext.offered_qos_profiles,
            )
        self._writer, self._frames_written = writer, frames_written
        by_info = {}
        for camera in cameras:
            by_info.setdefault(camera.info_topic, []).append(camera)
        by_info.pop(None, None)
        for info_topic, info_cameras in by_info.items():
            index = self._index_camera_infos(reader, in_path, info_topic)
            for camera in info_cameras:
                camera.infos_by_stamp = index
        if self.range_topics:
            self._read_static_transforms(reader, in_path)
        read = None  # every connection
        if definitions is None:  # only what the outputs are made of
            needed = set(by_info) | {camera.image_topic for camera in cameras}
            needed |= set(self.range_topics) | ({TF} if self.range_topics else set())
            read = [c for c in reader.connections if c.topic in needed]
        chunks = self._read_chunks(reader, in_path, cameras, by_info, out_conns, read)
        overlap = model_leaves_cpu_free(self.estimator.device, self.estimator.cpu_threads)
        run_stages(
            chunks,
            self._predict_chunk,
            self._write_chunk,
            finish_step=self._finish_chunk,
            overlap=overlap,
        )

    def _read_chunks(self, reader, in_path, cameras, by_info, out_conns, connections=None):
        """Chunks of IN in log order (of `connections` only, if given); a chunk closes when
        frames of one size fill a batch, or when its other messages reach MAX_BUFFERED_BYTES
        (bounded memory), and goes on once each of its frames' range data is decided (the
        node's rule, RangeSources: the log read on to metric_scale_slop past the frame's log
        time). Messages are copied when `out_conns` has their connection."""
        by_image = {camera.image_topic: camera for camera in cameras}
        chunk, chunk_bytes = _Chunk(), 0
        closed = collections.deque()  # full chunks whose frames' range data is not decided yet
        # Compressed images are decoded on threads ahead of this loop where cores are free
        # (bag/pipeline.py); a raw image's decoding (a view, or a channel copy) costs less than
        # handing it over.
        compressed = {c.image_topic for c in cameras if c.image_type == COMPRESSED}
        workers = self.decode_threads if compressed else 0
        if workers is None:
            workers = decode_threads(self.estimator.device, self.estimator.cpu_threads)
        wanted = self.batch_size * getattr(self.estimator, "forwards_side_by_side", 1)
        messages = ahead(
            read_messages(reader, in_path, connections or ()),
            self._decode,
            lambda item: item[0].topic in compressed and item[0].msgtype == COMPRESSED,
            workers,
            window=2 * workers + wanted,
        )
        for (conn, timestamp, raw), decoded in messages:
            out_conn = out_conns.get((conn.topic, conn.msgtype, conn.ext.serialization_format))
            if out_conn is not None:
                chunk.messages.append((out_conn, timestamp, raw))
                chunk_bytes += len(raw)
                self.copied += 1
            if conn.topic in by_info and conn.msgtype == CAMERA_INFO:
                info = self._deserialize(raw, conn, timestamp)
                for camera in by_info[conn.topic]:
                    camera.logged_infos.add(info, (conn, timestamp, raw))
            elif conn.topic in self.range_topics and conn.msgtype == RANGE_TYPES.get(
                self.range_topics[conn.topic][0]
            ):
                msg = self._deserialize(raw, conn, timestamp)
                name, camera = self.range_topics[conn.topic]
                self.ranges.add(name, msg, camera=camera, arrival=timestamp * 1e-9)
            elif self.range_topics and conn.topic == TF and conn.msgtype == TF_MESSAGE:
                msg = self._deserialize(raw, conn, timestamp)
                self._take_transforms(TF, msg, self.ranges.moving.add, timestamp)
            elif conn.topic in by_image:
                chunk.images += 1
                self._add_frame(chunk, by_image[conn.topic], *decoded(), timestamp)
            batches = by_image_size(chunk.frames, lambda f: f.rgb).values()
            # A model that runs forwards side by side (OpenVINO's streams) gets one batch each.
            full = any(len(batch) >= wanted for batch in batches)
            if full or chunk_bytes > MAX_BUFFERED_BYTES:
                closed.append(chunk)
                chunk, chunk_bytes = _Chunk(), 0
            now = timestamp * 1e-9
            self._take_anchors([*closed, chunk], now)
            while closed and self._anchored(closed[0]):
                yield closed.popleft()
        self._take_anchors([*closed, chunk], math.inf)  # the log ended: nothing more comes
        yield from closed
        yield chunk

    def _anchored(self, chunk) -> bool:
        """Whether the chunk's frames have what they are calibrated with (their anchors)."""
        return self.settings.metric_scale == "off" or all(
            frame.anchors is not None for frame in chunk.frames
        )

    def _take_anchors(self, chunks, now: float) -> None:
        """The anchors of each frame of `chunks` whose range data is settled at log time `now`
        (seconds: metric_scale_slop past the image's log time, the rule's deadline, so what
        decided it and the /tf about its stamp are read), in log order."""
        if self.settings.metric_scale == "off":
            return
        for chunk in chunks:
            for frame in chunk.frames:
                if frame.anchors is not None:
                    continue
                camera = frame.owner.image_topic
                if not self.ranges.settled(camera, stamp_ns(frame.header.stamp), now):
                    return  # later frames settle later
                size = frame.rgb.shape[:2]
                frame.anchors = self.ranges.anchors(
                    frame.header, frame.info, size, self.settings, camera
                )
                frame.motion = self.ranges.motion.get(camera, "")

    def _read_static_transforms(self, reader, in_path) -> None:
        """The bag's /tf_static, for metric_scale's frames (after static_transforms)."""
        connections = [
            c for c in reader.connections if c.topic == TF_STATIC and c.msgtype == TF_MESSAGE
        ]
        if not connections:  # (none given reads every connection)
            return
        for conn, timestamp, raw in read_messages(reader, in_path, connections):
            msg = self._deserialize(raw, conn, timestamp)
            self._take_transforms(TF_STATIC, msg, self._add_static, timestamp)

    def _add_static(self, stamped) -> None:
        self.ranges.add_transform(transform_from_stamped(stamped))

    def _take_transforms(self, topic: str, msg, add, timestamp) -> None:
        """Each transform of a TFMessage to `add`; one that cannot be used (a quaternion that
        is no rotation) is a warning naming its frames, the others taken."""
        for stamped in msg.transforms:
            try:
                add(stamped)
            except AnchorError as exc:
                frames = f"{stamped.header.frame_id} -> {stamped.child_frame_id}"
                self.warnings.add(f"{topic}: {frames}: {exc}", timestamp)

    def _index_camera_infos(self, reader, in_path, info_topic) -> CameraInfoIndex:
        """Every camera_info by stamp, (connection, log time, raw) each: pairing by stamp makes the
        log order (image first, as image_transport publishes, or camera_info first) irrelevant."""
        connections = [
            c for c in reader.connections if c.topic == info_topic and c.msgtype == CAMERA_INFO
        ]
        index = CameraInfoIndex()
        for conn, timestamp, raw in read_messages(reader, in_path, connections):
            index.add(self._deserialize(raw, conn, timestamp), (conn, timestamp, raw))
        return index

    def _camera_info_for(self, camera, image, timestamp, size):
        """The camera_info of the image's stamp (within camera_info_slop); else the last one of
        the image's size logged before it (counted): the node's rule and warnings
        (stamp_pairing)."""
        found = camera.infos_by_stamp.nearest(image.header.stamp, self.settings.camera_info_slop)
        exact = found is not None
        if not exact:
            found = camera.logged_infos.latest_for(size)
        if found is None:
            return None
        info = self._deserialize(found[2], found[0], found[1])
        warnings = pairing_warnings(image.header, info, exact)
        camera.stats["info_fallbacks"] += warnings.fallback is not None
        for warning in warnings:
            if warning:
                self.warnings.add(f"{camera.image_topic}: {warning}", timestamp)
        return info

    def _deserialize(self, raw, conn, timestamp):
        try:
            return self.typestore.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:  # any failure to decode CDR means the bytes are damaged
            raise BagError(
                f"message on {conn.topic} at log time {timestamp} ns cannot be deserialized as "
                f"{conn.msgtype}: {type(exc).__name__}: {exc}"
            ) from None

    def _decode(self, item) -> tuple:
        """(image message, its RGB or the ImageDecodeError saying why it has none) of a
        (connection, log time, raw) image message; BagError when its CDR is damaged."""
        conn, timestamp, raw = item
        msg = self._deserialize(raw, conn, timestamp)
        try:
            return msg, decode_image(msg)
        except ImageDecodeError as exc:
            return msg, exc

    def _add_frame(self, chunk, camera, msg, rgb, timestamp):
        camera.stats["frames"] += 1
        if isinstance(rgb, ImageDecodeError):  # like the node: skip the frame, say why
            camera.stats["rejected"] += 1
            self.warnings.add(f"{camera.image_topic}: rejected: {rgb}", timestamp)
            return
        info = self._camera_info_for(camera, msg, timestamp, (rgb.shape[1], rgb.shape[0]))
        frame = PendingFrame(
            msg.header, rgb, self.settings, info=info, owner=camera, log_time=timestamp
        )
        if self.settings.metric_scale != "off":  # its range data decided as the node's
            self.ranges.expect(
                camera.image_topic,
                stamp_ns(msg.header.stamp),
                arrival=timestamp * 1e-9,
                slop=self.settings.metric_scale_slop,
            )
        chunk.frames.append(frame)

    def _predict_chunk(self, chunk):
        """The chunk's frames through the model, one forward per image size, begun: a model
        with frames in flight (CUDA graphs) replays them while the previous chunk's arrays come
        back and are written (_write_chunk takes them)."""
        for shape, frames in by_image_size(chunk.frames, lambda f: f.rgb).items():
            wanted = {key for f in frames for key in f.owner.outputs}
            try:
                self._prepare(shape[:2])
                started = self.estimator.begin_predict(
                    np.stack([f.rgb for f in frames]),
                    scenes=SceneChoice([f.owner.scene for f in frames], self.scene_switch_frames),
                    arrays=arrays_to_fetch(wanted, self.settings),
                )
            except ImageSizeError as exc:  # e.g. preprocessing 'crop' on a camera not 640x480
                raise _size_refused(frames, exc) from None
            chunk.predictions.append((frames, started))
        return chunk

    def _prepare(self, size: tuple) -> None:
        """A new image size's CUDA graphs (TensorRT: its engine) for batches up to the batch
        size, made before its first forward as the node makes them at a camera's camera_info,
        and timed apart: the processing seconds are the frames' own."""
        if size in self.prepared_sizes or not getattr(
            self.estimator, "prepares_image_sizes", False
        ):
            return
        self.prepared_sizes.add(size)
        started = time.monotonic()
        self.estimator.warm_up(size, self.batch_size)
        self.preparing_seconds += time.monotonic() - started

    def _finish_chunk(self, chunk):
        """The chunk's predictions taken and made into its output messages (serialized, each
        with its camera and output name), in each camera's log order."""
        for frames, started in chunk.predictions:
            try:
                result = started()
            except ImageSizeError as exc:  # a model elsewhere (the fleet's) says so only here
                raise _size_refused(frames, exc) from None
            for i, frame in enumerate(frames):
                # In each camera's log order, as its frames were recorded (the node's rule).
                stamp = stamp_ns(frame.header.stamp) * 1e-9
                fine = fine_arrays(frame.owner.outputs, self.settings)
                frame.owner.temporal.apply(result, i, frame.rgb, stamp, self.settings, fine)
                self._calibrate(frame, result, i, stamp)
                frame.result, frame.index = result, i
                self._add_outputs(chunk, frame)
        return chunk

    def _write_chunk(self, chunk):
        """The chunk's output messages beside its copied ones, into OUT in log-time order, on
        the thread that opened OUT (its topics added on first use)."""
        for i, (conn, timestamp, raw) in enumerate(chunk.messages):
            if isinstance(conn, _OutputTopic):
                chunk.messages[i] = (self._connection(conn), timestamp, raw)
        # Log-time order in the output file; outputs follow their image (stable sort).
        chunk.messages.sort(key=lambda item: item[1])
        for conn, timestamp, raw in chunk.messages:
            self._writer.write(conn, timestamp, raw)
        if self._frames_written is not None:
            self._frames_written(chunk.images)

    def _calibrate(self, frame, result, index: int, stamp: float) -> None:
        """metric_scale: the frame in its camera's scale (the node's rule), its reasons kept."""
        scale = frame.owner.scale
        if self.settings.metric_scale == "off":
            return
        points, k, problems = frame.anchors
        scale.apply(result, index, points, k, stamp, self.settings, problems)
        topic = frame.owner.image_topic
        if scale.reason:
            self.warnings.add(f"{topic}: metric_scale: {scale.reason}", frame.log_time)
        motion = frame.motion
        if motion and motion.startswith("robot taken as still:"):  # the fixed frame not heard
            self.warnings.add(f"{topic}: metric_scale: {motion}", frame.log_time)

    def _add_outputs(self, chunk, frame):
        camera = frame.owner
        wanted = tuple(camera.outputs)
        if camera.scale.withholds_clouds(self.settings):  # metric_scale_require: no fit yet
            wanted = tuple(k for k in wanted if k not in ("points", "clearing", "camera_info"))
        out = frame.outputs(wanted)
        messages = {
            key: message
            for key, message in self.builder.messages(frame.header, out).items()
            if key in wanted  # camera_info and points come together
        }
        camera.stats["depth"] += 1
        camera.stats["clouds"] += "points" in messages or "clearing" in messages
        if out.cloud is not None and out.cloud.warning:
            self.warnings.add(f"{camera.image_topic}: {out.cloud.warning}", frame.log_time)
        for name, msg in messages.items():  # its connection added where it is written
            raw = self.typestore.serialize_cdr(msg, msg.__msgtype__)
            topic = _OutputTopic(camera, name, msg.__msgtype__)
            chunk.messages.append((topic, frame.log_time, raw))

    def _connection(self, topic: "_OutputTopic"):
        """An output topic's connection in OUT, added on its first message."""
        camera = topic.camera
        if topic.name not in camera.connections:
            camera.connections[topic.name] = self._writer.add_connection(
                camera.outputs[topic.name], topic.msgtype, typestore=self.typestore
            )
        return camera.connections[topic.name]


def _size_refused(frames, exc) -> BagError:
    height, width = frames[0].rgb.shape[:2]
    return BagError(
        f"frames of {width}x{height} on {frames[0].owner.image_topic} cannot be processed "
        f"with this configuration: {exc}"
    )


def check_depth_topics(settings: OutputSettings, cameras: int, range_topics=None) -> None:
    """BagError where one depth topic would serve several cameras: a depth image is registered
    to one camera (the node gives each named camera its own)."""
    depth_topic = {**RANGE_TOPICS, **(range_topics or {})}["depth"]
    if (
        settings.metric_scale != "off"
        and "depth" in settings.metric_scale_sources
        and cameras > 1
        and not isinstance(depth_topic, dict)
    ):
        raise BagError(
            f"metric_scale source depth with {cameras} cameras: a depth image is registered "
            f"to one camera, and {depth_topic} would serve them all; give "
            "--anchor-depth-topic once per --image-topic, in their order"
        )


def process_bag(
    plan: BagPlan,
    estimator,
    settings: OutputSettings,
    *,
    batch_size: int = 1,
    scene_switch_frames: int = 1,
    frames_written=None,
    range_topics=None,
    decode_threads=None,
) -> dict:
    """Write the plan's OUT: every message of IN plus depth, depth/camera_info and points beside
    each camera, all through `estimator` (anything with the core's `begin_predict`) in one pass,
    `batch_size` frames of one size per forward; under scene_bins auto a camera's new scene
    takes over after winning `scene_switch_frames` frames in a row (the node's rule);
    `frames_written(n)` is told of every n image messages done; metric_scale reads its range
    data from `range_topics` ({source: topic, or {image topic: topic} for each camera its
    own}, RANGE_TOPICS by default) and its frames from /tf_static and static_transforms;
    `decode_threads` threads decode compressed images ahead of the reading (None: as many as
    the cores the model leaves, bag/pipeline.py; 0: on the reading thread). Returns the run's
    statistics: totals, `cameras` ({image topic: its own}), `warnings` (BagWarnings.summary:
    one entry a kind), `seconds` (the frames' processing) and `preparing_seconds` (each image
    size's CUDA graphs or TensorRT engine, made before its first frame: apart, as they are
    paid once). BagError on a bag problem or a write error; nothing is left at OUT unless the
    whole run succeeds."""
    if batch_size < 1:
        raise BagError(f"batch size must be >= 1, got {batch_size}")
    out_path, cameras = plan.out_path, [_Camera(planned) for planned in plan.cameras]
    check_depth_topics(settings, len(cameras), range_topics)
    typestore = get_typestore(Stores.ROS2_KILTED)
    processor = BagProcessor(
        estimator,
        settings,
        typestore,
        batch_size,
        scene_switch_frames,
        range_topics,
        decode_threads,
    )
    started = time.monotonic()
    plugin = StoragePlugin.MCAP if plan.storage == "mcap" else StoragePlugin.SQLITE3
    try:
        with (
            atomic_directory(out_path, overwrite=plan.overwrite) as staging,
            Writer(staging, version=OUTPUT_BAG_VERSION, storage_plugin=plugin) as writer,
        ):
            processor.run(
                plan.reader, writer, plan.in_path, cameras, plan.definitions, frames_written
            )
    except (OSError, sqlite3.Error) as exc:  # IN's read errors are BagErrors: this is OUT
        raise BagError(f"{cannot_write(out_path, exc)}; nothing was written") from None
    per_camera = {
        camera.image_topic: dict(
            camera.stats,
            image_type=camera.image_type,
            camera_info_topic=camera.info_topic,
            outputs=camera.outputs,
        )
        for camera in cameras
    }
    totals = {key: sum(camera.stats[key] for camera in cameras) for key in cameras[0].stats}
    return dict(
        totals,
        copied=processor.copied,
        seconds=round(time.monotonic() - started - processor.preparing_seconds, 3),
        preparing_seconds=round(processor.preparing_seconds, 3),
        storage=plan.storage,
        device=str(estimator.device),
        model=estimator.model_identity,
        cameras=per_camera,
        warnings=processor.warnings.summary(),
    )
