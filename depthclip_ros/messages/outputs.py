"""One frame's prediction as output messages: depth image (raw, compressedDepth, coloured),
its std, its camera_info, the point cloud and the clearing cloud.

The one place that turns a prediction into messages. `frame_outputs` computes the header-less
fields; `MessageBuilder` makes them messages of the caller's types: rclpy's for the node, a
rosbags typestore's for the bag tool. No rclpy import.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..estimator.depth_quantile import depth_quantile
from ..estimator.temporal_filter import FINE_ARRAYS, FUSED_FROM
from . import compressed_depth, point_cloud
from .camera_model import PinholeCamera
from .colormaps import colorize

# What depthclip-bag writes unless told otherwise (the node publishes each while subscribed).
DEFAULT_OUTPUTS = ("depth", "std", "camera_info", "points", "clearing")
CLOUD_OUTPUTS = ("camera_info", "points", "clearing")  # what needs the camera_info
POINT_OUTPUTS = ("points", "clearing")  # the clouds: camera_info alone needs no points


def cloud_arrays(settings) -> tuple:
    """The DepthResult arrays a cloud is made of: the fine std at a stride, the coarse grid's
    depth and std at stride 0."""
    return ("depth_std",) if settings.cloud_stride > 0 else ("coarse_depth", "coarse_std")


def has_cloud_arrays(result, settings) -> bool:
    """Whether predict brought back what the clouds need (it was asked for them)."""
    return all(getattr(result, name) is not None for name in cloud_arrays(settings))


def output_arrays(wanted, settings) -> tuple:
    """The DepthResult arrays the `wanted` outputs (keys of topics.OUTPUTS) are made of with
    these OutputSettings (the cloud's stride)."""
    wanted = set(wanted)
    arrays = {"depth"}
    if "std" in wanted:
        arrays.add("depth_std")
    if wanted & set(POINT_OUTPUTS):
        arrays.update(cloud_arrays(settings))
    if "clearing" in wanted:
        arrays.add("bin_probs")
    return tuple(sorted(arrays))


def arrays_for(wanted, settings, also=()) -> tuple:
    """The DepthResult arrays (`predict(..., arrays=)`) to fetch for the `wanted` outputs, and
    `also` (what metric_scale's fit samples: camera_scale.arrays_to_fetch): on a GPU no other
    array crosses to the host. While temporal_filter fuses, the grid's depth and std
    (FUSED_FROM) in place of the full-resolution ones, which the filter makes from the fused
    grid (those of `fine_arrays`)."""
    arrays = set(output_arrays(wanted, settings))
    if settings.temporal_filter != "off":
        arrays.update(FUSED_FROM)
        arrays -= set(FINE_ARRAYS)
    arrays.update(also)
    return tuple(sorted(arrays))


def fine_arrays(wanted, settings) -> tuple:
    """The full-resolution arrays the `wanted` outputs are made of: what temporal_filter makes
    from the fused grid (TemporalFilter.apply's `fine`)."""
    return tuple(a for a in output_arrays(wanted, settings) if a in FINE_ARRAYS)


def rgb8_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """Fields of a sensor_msgs/Image holding an (H, W, 3) uint8 image (`data` a view of `rgb`
    where it is contiguous: the message is to be built before `rgb` changes)."""
    h, w = rgb.shape[:2]
    data = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1)
    return dict(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * 3, data=data)


def depth_image_fields(depth: np.ndarray) -> dict:
    """Fields of a 32FC1 sensor_msgs/Image (metres, NaN = invalid; REP 118; `data` a view of
    `depth` where it is contiguous little-endian float32: the message is to be built before
    `depth` changes)."""
    d = np.ascontiguousarray(depth, dtype="<f4")
    h, w = d.shape
    data = d.reshape(-1).view(np.uint8)
    return dict(height=h, width=w, encoding="32FC1", is_bigendian=0, step=w * 4, data=data)


def colored_image_fields(depth: np.ndarray, bins, colormap: str) -> dict:
    """Fields of depth/colored: the depth in `colormap` over the bins' range, rgb8."""
    return rgb8_image_fields(colorize(depth, float(bins[0]), float(bins[-1]), colormap))


def compressed_depth_fields(depth: np.ndarray, settings) -> dict:
    """Fields of a sensor_msgs/CompressedImage in image_transport's compressedDepth format."""
    fmt, data = compressed_depth.encode(
        depth, settings.depth_max, settings.depth_quantization, settings.png_level
    )
    return dict(format=fmt, data=data)


@dataclasses.dataclass
class CloudOutputs:
    """Header-less fields of the messages that need the camera_info: the depth image's
    camera_info, the point cloud and the clearing cloud (None without a usable camera_info,
    `problem` says why; `cloud` and `clearing` None also when not asked for)."""

    camera_info: dict | None
    cloud: dict | None
    problem: str | None
    distorted: bool = False  # non-zero D: the cloud is right only for a rectified image
    clearing: dict | None = None  # points/clearing

    @property
    def warning(self) -> str | None:
        """What a user should be told about this frame's cloud, in one line; None when nothing."""
        if self.problem:
            return f"no point cloud: {self.problem}"
        if self.distorted:
            return (
                "camera_info has non-zero distortion D: the point cloud assumes a rectified "
                "image; feed image_rect (image_proc)"
            )
        return None


@dataclasses.dataclass
class FrameOutputs:
    """Header-less fields of one frame's output messages (None: not asked for); the caller adds
    the image's header."""

    depth: dict | None  # sensor_msgs/Image, 32FC1
    std: dict | None  # sensor_msgs/Image, 32FC1: depth's standard deviation
    cloud: CloudOutputs | None  # depth/camera_info, points and points/clearing
    colored: dict | None = None  # sensor_msgs/Image, rgb8
    compressed_depth: dict | None = None  # sensor_msgs/CompressedImage


@dataclasses.dataclass(eq=False)
class PendingFrame:
    """An image on its way to its outputs: the node keeps it while its cloud waits for the
    camera_info of its stamp, the bag tool while its batch waits for the model. `result` and
    `index`: the frame's DepthResult and its place in it, once predicted; `owner`: the bag
    camera it came from; `log_time`: its log time in a bag."""

    header: Any
    rgb: np.ndarray
    settings: Any  # OutputSettings
    info: Any = None  # the sensor_msgs/CameraInfo paired with it, once known
    result: Any = None
    index: int = 0
    owner: Any = None
    log_time: int = 0
    anchors: Any = None  # metric_scale: (points, K, problems) once its range data is decided
    motion: str = ""  # metric_scale: how those points were moved (RangeSources.motion)

    def outputs(self, wanted=DEFAULT_OUTPUTS) -> FrameOutputs:
        return frame_outputs(self.rgb, self.result, self.index, self.info, self.settings, wanted)

    def cloud(self, info, points: bool = True, clearing: bool = False) -> CloudOutputs:
        return cloud_outputs(
            self.rgb, self.result, self.index, info, self.settings, points, clearing
        )


def frame_outputs(
    rgb: np.ndarray, result, index: int, info, settings, wanted=DEFAULT_OUTPUTS
) -> FrameOutputs:
    """The `wanted` outputs (keys of topics.OUTPUTS) of frame `index` of a core `DepthResult`;
    `info` is the sensor_msgs/CameraInfo paired with the image, or None; `settings` the
    OutputSettings (cloud stride and filters, colour map, compressedDepth)."""
    depth = result.depth[index]
    with_std = "std" in wanted and result.depth_std is not None
    return FrameOutputs(
        depth_image_fields(depth) if "depth" in wanted else None,
        depth_image_fields(result.depth_std[index]) if with_std else None,
        (
            cloud_outputs(
                rgb, result, index, info, settings, "points" in wanted, "clearing" in wanted
            )
            if set(CLOUD_OUTPUTS) & set(wanted)
            else None
        ),
        (
            colored_image_fields(depth, result.bins_of(index), settings.colormap)
            if "colored" in wanted
            else None
        ),
        compressed_depth_fields(depth, settings) if "compressed_depth" in wanted else None,
    )


def cloud_outputs(
    rgb: np.ndarray,
    result,
    index: int,
    info,
    settings,
    points: bool = True,
    clearing: bool = False,
) -> CloudOutputs:
    """The depth image's camera_info of frame `index` of a `DepthResult`; with `points`, the
    point cloud too, with `clearing` the clearing cloud. A cloud is left out (no problem said)
    when the result lacks the arrays it needs: predict was not asked for them (nobody
    subscribed then); the camera_info alone costs no cloud."""
    # The clearing cloud is made from the points' pixels: either needs them.
    sampled = (points or clearing) and has_cloud_arrays(result, settings)
    clearing = clearing and sampled and result.bin_probs is not None
    if info is None:
        return CloudOutputs(None, None, "no camera_info")
    height, width = result.depth[index].shape
    camera = PinholeCamera.from_camera_info(info).scaled_to(width, height)
    try:  # the published camera_info's intrinsics, at the depth image's size: one model for both
        intr = camera.intrinsics()
    except ValueError as exc:
        return CloudOutputs(None, None, f"camera_info unusable: {exc}")
    if not sampled:
        return CloudOutputs(camera.camera_info_fields(), None, None)
    if settings.cloud_stride > 0:
        xyz, colours, std = point_cloud.cloud_points(
            result.depth[index], result.depth_std[index], rgb, intr, settings.cloud_stride
        )
        rows, cols = point_cloud.sampled_pixels(height, width, settings.cloud_stride)
    else:
        u, v = result.coarse_pixel_coords()
        xyz, colours, std = point_cloud.coarse_cloud_points(
            result.coarse_depth[index], result.coarse_std[index], u, v, rgb, intr
        )
        rows, cols = v[:, 0], u[0]
    cloud = None
    if points:
        keep = point_cloud.kept_points(
            xyz, std, settings.cloud_max_std, settings.cloud_min_range, settings.cloud_max_range
        )
        cloud = point_cloud.pointcloud_fields(xyz, colours, std, keep)
    return CloudOutputs(
        camera.camera_info_fields(),
        cloud,
        None,
        camera.is_distorted,
        clearing_cloud(result, index, settings, rows, cols, xyz, colours, std, intr)
        if clearing
        else None,
    )


def clearing_cloud(result, index: int, settings, rows, cols, points, colours, std, intr) -> dict:
    """Fields of points/clearing: the cloud's pixels (`rows` x `cols`, their `points`, colours
    and depth std), each at its clearing depth (depth_quantile at clearing_quantile), pulled in
    along its ray to cloud_max_range where it lies beyond (the ray is free that far, and the
    costmap's ranges follow from that one number, whatever metric_scale does to the bins); NaN
    where the pixel has no depth or the point is nearer than cloud_min_range."""
    depth = depth_quantile(result, index, settings.clearing_quantile, rows, cols)
    if settings.cloud_max_range > 0:
        depth = np.minimum(depth, np.float32(settings.cloud_max_range))
    cols, rows = np.asarray(cols, np.float32), np.asarray(rows, np.float32)
    clearing = point_cloud.backproject(cols[None, :], rows[:, None], depth, intr)
    keep = point_cloud.finite_points(points) & (clearing[..., 2] >= settings.cloud_min_range)
    return point_cloud.pointcloud_fields(clearing, colours, std, keep)


@dataclasses.dataclass(frozen=True)
class MessageBuilder:
    """Output messages of one client library's types, keyed like topics.OUTPUTS."""

    image_type: type
    camera_info_type: type
    point_cloud_type: type
    point_field_type: type
    roi_type: type
    compressed_image_type: type
    # How the types take uint8[] data, given as bytes or a 1-D uint8 array: rclpy's as bytes
    # (its array.array('B') is made from bytes at once, from an array element by element).
    byte_array: object = bytes

    @classmethod
    def from_ros(cls) -> "MessageBuilder":
        """A ROS install's sensor_msgs types (rclpy's), for the node and its clients."""
        from sensor_msgs import msg

        return cls(
            msg.Image,
            msg.CameraInfo,
            msg.PointCloud2,
            msg.PointField,
            msg.RegionOfInterest,
            msg.CompressedImage,
        )

    @classmethod
    def from_typestore(cls, typestore) -> "MessageBuilder":
        """A rosbags typestore's types: they hold uint8[] as NumPy arrays, not bytes."""
        types = typestore.types
        return cls(
            *(
                types[f"sensor_msgs/msg/{name}"]
                for name in (
                    "Image",
                    "CameraInfo",
                    "PointCloud2",
                    "PointField",
                    "RegionOfInterest",
                    "CompressedImage",
                )
            ),
            byte_array=lambda data: np.frombuffer(data, np.uint8),  # no copy
        )

    def _make(self, msg_type, header, fields: dict):
        if "data" in fields:
            fields = {**fields, "data": self.byte_array(fields["data"])}
        return msg_type(header=header, **fields)

    def image(self, header, fields: dict):
        """A sensor_msgs/Image from image fields (rgb8_image_fields, depth_image_fields)."""
        return self._make(self.image_type, header, fields)

    def compressed_image(self, header, fields: dict):
        """A sensor_msgs/CompressedImage (compressed_depth_fields)."""
        return self._make(self.compressed_image_type, header, fields)

    def messages(self, header, out: FrameOutputs) -> dict:
        """{key of topics.OUTPUTS: message} of the outputs `out` holds; camera_info and points
        only when the frame has a usable camera_info."""
        messages = {}
        for key, fields in (("depth", out.depth), ("std", out.std), ("colored", out.colored)):
            if fields is not None:
                messages[key] = self.image(header, fields)
        if out.compressed_depth is not None:
            messages["compressed_depth"] = self.compressed_image(header, out.compressed_depth)
        if out.cloud is not None:
            messages.update(self.cloud_messages(header, out.cloud))
        return messages

    def cloud_messages(self, header, out: CloudOutputs) -> dict:
        """{'camera_info': CameraInfo, 'points': PointCloud2, 'clearing': PointCloud2, each
        when computed}, or {} without a usable camera_info."""
        messages = {}
        if out.camera_info is not None:
            roi = self.roi_type(**out.camera_info["roi"])
            messages["camera_info"] = self._make(
                self.camera_info_type, header, {**out.camera_info, "roi": roi}
            )
        if out.cloud is not None:
            messages["points"] = self.point_cloud(header, out.cloud)
        if out.clearing is not None:
            messages["clearing"] = self.point_cloud(header, out.clearing)
        return messages

    def point_cloud(self, header, cloud: dict):
        """A sensor_msgs/PointCloud2 from point_cloud.pointcloud_fields."""
        fields = [
            self.point_field_type(name=n, offset=o, datatype=d, count=c)
            for n, o, d, c in cloud["fields"]
        ]
        return self._make(self.point_cloud_type, header, {**cloud, "fields": fields})
