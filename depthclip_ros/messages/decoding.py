"""sensor_msgs/Image and CompressedImage -> RGB, and 32FC1 depth images -> arrays. NumPy only.

cv_bridge is not installable everywhere this package runs, so this module is the one place that
knows the image wire layouts. Messages are read by duck typing: rclpy and rosbags messages have
the same fields. The output encoders are in outputs.py; the encoders of test inputs (Bayer,
YUV) are in the tests' helpers.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import ImageDecodeError

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
    if enc in ("bgr8", "bgr16", "bgra8"):
        return _channels(px, (2, 1, 0))
    if enc == "rgba8":
        return _channels(px, (0, 1, 2))
    if enc in ("mono8", "mono16"):
        return _channels(px, (0, 0, 0))
    if enc.startswith("bayer_"):
        return demosaic_bilinear(px[..., 0], enc[len("bayer_") : len("bayer_") + 4])
    if enc in ("yuv422", "uyvy"):
        pairs = px.reshape(px.shape[0], -1, 4)  # U0 Y0 V0 Y1
        return yuv_to_rgb(pairs[..., [1, 3]], pairs[..., 0], pairs[..., 2])
    pairs = px.reshape(px.shape[0], -1, 4)  # yuv422_yuy2 / yuyv: Y0 U0 Y1 V0
    return yuv_to_rgb(pairs[..., [0, 2]], pairs[..., 1], pairs[..., 3])


def _channels(px: np.ndarray, order: tuple) -> np.ndarray:
    """A new (H, W, 3) array of `px`'s channels `order`, copied one channel at a time: NumPy
    copies a reversed or partial channel axis element by element, several times slower."""
    out = np.empty((*px.shape[:2], len(order)), px.dtype)
    for i, channel in enumerate(order):
        out[..., i] = px[..., channel]
    return out


def yuv_to_rgb(y2: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YUV 4:2:2 -> RGB. y2: (H, W/2, 2); u, v: (H, W/2)."""
    y = y2.astype(np.float32).reshape(y2.shape[0], -1)
    u = np.repeat(u.astype(np.float32) - 128.0, 2, axis=1)
    v = np.repeat(v.astype(np.float32) - 128.0, 2, axis=1)
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


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
            # A colour JPEG or PNG decodes to RGB already: no conversion (a copy) then.
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
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
