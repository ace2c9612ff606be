"""Conversions between ROS image / cloud messages and NumPy, written with NumPy only.

cv_bridge and sensor_msgs_py are not installable everywhere this package runs, so
this module is the one place that knows the wire layouts. It reads messages by
duck typing (rclpy and rosbags messages have the same fields) and returns plain
field dicts for outputs, so the node and the bag tool share it. No rclpy import.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from .camera_model import PinholeCamera

# encoding -> (channels, dtype); the order of colour channels is handled in to_rgb8.
ENCODINGS = {
    "rgb8": (3, np.uint8),
    "bgr8": (3, np.uint8),
    "rgba8": (4, np.uint8),
    "bgra8": (4, np.uint8),
    "mono8": (1, np.uint8),
    "mono16": (1, np.uint16),
    "rgb16": (3, np.uint16),
    "bgr16": (3, np.uint16),
    "bayer_rggb8": (1, np.uint8),
    "bayer_bggr8": (1, np.uint8),
    "bayer_gbrg8": (1, np.uint8),
    "bayer_grbg8": (1, np.uint8),
    "yuv422": (2, np.uint8),
    "uyvy": (2, np.uint8),
    "yuv422_yuy2": (2, np.uint8),
    "yuyv": (2, np.uint8),
}
DEPTH_ENCODINGS = ("16UC1", "32FC1", "mono16_depth")
POINTFIELD_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
CLOUD_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))
CLOUD_POINT_STEP = 16


class ImageDecodeError(ValueError):
    """A message cannot be turned into an RGB image; the message says why."""


def image_to_rgb8(msg) -> np.ndarray:
    """sensor_msgs/Image (any supported encoding) -> (H, W, 3) uint8 RGB."""
    enc = str(msg.encoding).lower()
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if enc.upper() in DEPTH_ENCODINGS or enc in ("16uc1", "32fc1"):
        raise ImageDecodeError(f"encoding '{msg.encoding}' is a depth image, not a colour image")
    if enc not in ENCODINGS:
        raise ImageDecodeError(
            f"unsupported encoding '{msg.encoding}' (supported: {', '.join(sorted(ENCODINGS))})"
        )
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"empty image {width}x{height}")
    channels, dtype = ENCODINGS[enc]
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than one row ({width} px x "
            f"{channels * itemsize} B = {row_bytes} B)"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise ImageDecodeError(f"data has {data.size} bytes, step x height needs {step * height}")
    if enc in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and width % 2:
        raise ImageDecodeError(f"YUV 4:2:2 needs an even width, got {width}")
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]  # drops row padding
    if itemsize == 2:
        order = ">" if msg.is_bigendian else "<"
        pixels = rows.copy().view(order + "u2").reshape(height, width, channels)
        # 16 -> 8 bit; exact for values written as v * 257.
        pixels = (pixels >> 8).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, channels)
    return _to_rgb(enc, pixels)


def _to_rgb(enc: str, px: np.ndarray) -> np.ndarray:
    if enc in ("rgb8", "rgb16"):
        return np.ascontiguousarray(px)
    if enc in ("bgr8", "bgr16"):
        return np.ascontiguousarray(px[..., ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(px[..., :3])
    if enc == "bgra8":
        return np.ascontiguousarray(px[..., 2::-1])
    if enc in ("mono8", "mono16"):
        return np.repeat(px, 3, axis=2)
    if enc.startswith("bayer_"):
        return demosaic_bilinear(px[..., 0], enc[len("bayer_") : len("bayer_") + 4])
    if enc in ("yuv422", "uyvy"):
        pairs = px.reshape(px.shape[0], -1, 4)  # U0 Y0 V0 Y1
        return yuv_to_rgb(pairs[..., [1, 3]], pairs[..., 0], pairs[..., 2])
    pairs = px.reshape(px.shape[0], -1, 4)  # yuv422_yuy2 / yuyv: Y0 U0 Y1 V0
    return yuv_to_rgb(pairs[..., [0, 2]], pairs[..., 1], pairs[..., 3])


def yuv_to_rgb(y2: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YUV 4:2:2 -> RGB. y2: (H, W/2, 2); u, v: (H, W/2)."""
    y = y2.astype(np.float32).reshape(y2.shape[0], -1)
    u = np.repeat(u.astype(np.float32) - 128.0, 2, axis=1)
    v = np.repeat(v.astype(np.float32) - 128.0, 2, axis=1)
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgb_to_yuv422(rgb: np.ndarray, layout: str = "uyvy") -> np.ndarray:
    """RGB (H, W, 3) -> packed 4:2:2 bytes (H, W*2): the inverse of yuv_to_rgb, chroma averaged."""
    f = rgb.astype(np.float32)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    u = (f[..., 2] - y) / 1.772 + 128.0
    v = (f[..., 0] - y) / 1.402 + 128.0
    u = 0.5 * (u[:, 0::2] + u[:, 1::2])
    v = 0.5 * (v[:, 0::2] + v[:, 1::2])
    q = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)  # noqa: E731
    y, u, v = q(y), q(u), q(v)
    out = np.empty((rgb.shape[0], rgb.shape[1] // 2, 4), np.uint8)
    order = (u, y[:, 0::2], v, y[:, 1::2]) if layout == "uyvy" else (y[:, 0::2], u, y[:, 1::2], v)
    for i, plane in enumerate(order):
        out[..., i] = plane
    return out.reshape(rgb.shape[0], -1)


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """RGB -> single-channel Bayer mosaic with the 2x2 `pattern` (e.g. 'rggb')."""
    out = np.empty(rgb.shape[:2], rgb.dtype)
    channel = {"r": 0, "g": 1, "b": 2}
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[c]]
    return out


def demosaic_bilinear(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Bilinear demosaicing: each missing colour is the weighted mean of its known neighbours."""
    h, w = raw.shape
    rgb = np.zeros((h, w, 3), np.float32)
    known = np.zeros((h, w, 3), np.float32)
    channel = {"r": 0, "g": 1, "b": 2}
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        rgb[dy::2, dx::2, channel[c]] = raw[dy::2, dx::2]
        known[dy::2, dx::2, channel[c]] = 1.0
    kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32)
    num, den = _conv3x3(rgb, kernel), _conv3x3(known, kernel)
    out = np.where(known > 0, rgb, num / np.maximum(den, 1e-6))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _conv3x3(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    p = np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = a.shape[:2]
    out = np.zeros_like(a)
    for dy in range(3):
        for dx in range(3):
            out += kernel[dy, dx] * p[dy : dy + h, dx : dx + w]
    return out


def compressed_to_rgb8(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    data = bytes(msg.data)
    if not data:
        raise ImageDecodeError("compressed image has no data")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("JPEG", "PNG"):
                raise ImageDecodeError(f"compressed format {im.format} is not JPEG or PNG")
            return np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageDecodeError):
            raise
        raise ImageDecodeError(
            f"undecodable compressed image (format '{msg.format}'): {exc}"
        ) from None


def decode_image(msg) -> np.ndarray:
    """sensor_msgs/Image or sensor_msgs/CompressedImage (told apart by their fields) -> RGB
    uint8."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_rgb8(msg)
    return image_to_rgb8(msg)


def rgb8_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """Fields of a sensor_msgs/Image holding an (H, W, 3) uint8 image."""
    h, w = rgb.shape[:2]
    return dict(
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * 3,
        data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes(),
    )


def depth_image_fields(depth: np.ndarray) -> dict:
    """Fields of a 32FC1 sensor_msgs/Image (metres, NaN = invalid; REP 118)."""
    d = np.ascontiguousarray(depth, dtype="<f4")
    h, w = d.shape
    return dict(height=h, width=w, encoding="32FC1", is_bigendian=0, step=w * 4, data=d.tobytes())


def depth_image_to_array(msg) -> np.ndarray:
    """A 32FC1 sensor_msgs/Image -> (H, W) float32."""
    if msg.encoding != "32FC1":
        raise ImageDecodeError(f"expected 32FC1 depth, got {msg.encoding}")
    order = ">" if msg.is_bigendian else "<"
    rows = np.frombuffer(msg.data, np.uint8)[: msg.step * msg.height].reshape(msg.height, msg.step)
    return (
        rows[:, : msg.width * 4]
        .copy()
        .view(order + "f4")
        .reshape(msg.height, msg.width)
        .astype(np.float32)
    )


# ------------------------------------------------------------------ intrinsics & clouds


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> float32 with the 0x00RRGGBB bit pattern RViz reads."""
    c = rgb.astype(np.uint32)
    return ((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """The inverse of pack_rgb: float32 0x00RRGGBB -> uint8 (..., 3)."""
    c = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=-1).astype(np.uint8)


def backproject(u: np.ndarray, v: np.ndarray, z: np.ndarray, intrinsics: tuple) -> np.ndarray:
    """Pixel coords and depth -> (..., 3) float32 points in the optical frame (REP 103)."""
    fx, fy, cx, cy = intrinsics
    z = z.astype(np.float32)
    x = (u.astype(np.float32) - np.float32(cx)) * z / np.float32(fx)
    y = (v.astype(np.float32) - np.float32(cy)) * z / np.float32(fy)
    return np.stack([x, y, z], axis=-1)


def cloud_points(depth: np.ndarray, rgb: np.ndarray, intrinsics: tuple, stride: int):
    """Organised cloud sampling every `stride`-th pixel: (points (h, w, 3), colours (h, w, 3))."""
    vs = np.arange(0, depth.shape[0], stride)
    us = np.arange(0, depth.shape[1], stride)
    uu, vv = np.meshgrid(us, vs)
    return backproject(uu, vv, depth[vv, uu], intrinsics), rgb[vv, uu]


def coarse_cloud_points(
    coarse_depth: np.ndarray, u: np.ndarray, v: np.ndarray, rgb: np.ndarray, intrinsics: tuple
):
    """One point per coarse grid cell at its exact pixel position (u, v); colour of the nearest
    pixel."""
    ui = np.clip(np.rint(u).astype(int), 0, rgb.shape[1] - 1)
    vi = np.clip(np.rint(v).astype(int), 0, rgb.shape[0] - 1)
    return backproject(u, v, coarse_depth, intrinsics), rgb[vi, ui]


def pointcloud_fields(points: np.ndarray, colours: np.ndarray) -> dict:
    """Fields of an organised sensor_msgs/PointCloud2 (x y z rgb float32); NaN where invalid.

    `fields` is a list of (name, offset, datatype, count) for the caller's PointField type.
    """
    h, w = points.shape[:2]
    buf = np.empty((h, w, 4), np.float32)
    buf[..., :3] = points
    buf[..., 3] = pack_rgb(colours)
    invalid = ~np.isfinite(points).all(axis=-1)
    buf[invalid, :3] = np.nan
    return dict(
        height=h,
        width=w,
        is_bigendian=False,
        point_step=CLOUD_POINT_STEP,
        row_step=CLOUD_POINT_STEP * w,
        is_dense=bool(not invalid.any()),
        fields=[(name, off, POINTFIELD_FLOAT32, 1) for name, off in CLOUD_FIELDS],
        data=buf.astype("<f4", copy=False).tobytes(),
    )


@dataclasses.dataclass
class FrameOutputs:
    """Header-less fields of one frame's output messages; the caller adds the image's header."""

    depth: dict  # sensor_msgs/Image, 32FC1
    camera_info: dict | None  # sensor_msgs/CameraInfo of the depth image; None without usable info
    cloud: dict | None  # sensor_msgs/PointCloud2; None without usable info
    problem: str | None  # why camera_info and cloud are missing
    distorted: bool = (
        False  # camera_info has non-zero D: the cloud is right only for a rectified image
    )


def frame_outputs(rgb: np.ndarray, result, index: int, info, cloud_stride: int) -> FrameOutputs:
    """Depth image, camera_info and point cloud of frame `index` of a core `DepthResult`.

    `info` is the sensor_msgs/CameraInfo paired with the image, or None. The one place that turns
    a prediction into messages: the node and the bag tool both call it.
    """
    depth = result.depth[index]
    depth_fields = depth_image_fields(depth)
    if info is None:
        return FrameOutputs(depth_fields, None, None, "no camera_info")
    height, width = depth.shape
    camera = PinholeCamera.from_camera_info(info).scaled_to(width, height)
    try:  # the published camera_info's intrinsics, at the depth image's size: one model for both
        intr = camera.intrinsics()
    except ValueError as exc:
        return FrameOutputs(depth_fields, None, None, f"camera_info unusable: {exc}")
    if cloud_stride > 0:
        points, colours = cloud_points(depth, rgb, intr, cloud_stride)
    else:
        u, v = result.coarse_pixel_coords()
        points, colours = coarse_cloud_points(result.coarse_depth[index], u, v, rgb, intr)
    return FrameOutputs(
        depth_fields,
        camera.camera_info_fields(),
        pointcloud_fields(points, colours),
        None,
        camera.is_distorted,
    )


def pointcloud_to_array(msg) -> np.ndarray:
    """An x y z rgb float32 PointCloud2 (as written above) -> (H, W, 4) float32."""
    names = [f.name for f in msg.fields]
    if names[:3] != ["x", "y", "z"] or msg.point_step != CLOUD_POINT_STEP:
        raise ValueError(f"unexpected cloud layout {names} step {msg.point_step}")
    return np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width, 4)
