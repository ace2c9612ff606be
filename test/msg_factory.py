"""Build sensor_msgs/Image messages of every supported encoding from one RGB image."""

import numpy as np
from sensor_msgs.msg import Image

from depthclip_ros import conversions


def encode(rgb: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False) -> Image:
    """The image `rgb` as `encoding`, each row followed by `padding` junk bytes."""
    h, w, _ = rgb.shape
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        px = rgb if encoding.startswith("rgb") else rgb[..., ::-1]
        if encoding.endswith("a8"):
            px = np.concatenate([px, np.full((h, w, 1), 77, np.uint8)], axis=2)
        rows = px.reshape(h, -1)
    elif encoding == "mono8":
        rows = rgb[..., 0]
    elif encoding in ("mono16", "rgb16", "bgr16"):
        px = (
            rgb[..., :1]
            if encoding == "mono16"
            else (rgb if encoding == "rgb16" else rgb[..., ::-1])
        )
        wide = px.astype(np.uint16) * 257
        rows = wide.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(h, -1)
    elif encoding.startswith("bayer_"):
        rows = conversions.bayer_mosaic(rgb, encoding[6:10])
    elif encoding in ("yuv422", "yuv422_yuy2"):
        rows = conversions.rgb_to_yuv422(rgb, "uyvy" if encoding == "yuv422" else "yuyv")
    else:
        raise ValueError(encoding)
    rows = np.ascontiguousarray(rows, np.uint8)
    if padding:
        rows = np.concatenate([rows, np.full((h, padding), 0xAB, np.uint8)], axis=1)
    return Image(
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=rows.shape[1],
        data=rows.tobytes(),
    )


ALL_ENCODINGS = [
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "rgb16",
    "bgr16",
    "bayer_rggb8",
    "bayer_bggr8",
    "bayer_gbrg8",
    "bayer_grbg8",
    "yuv422",
    "yuv422_yuy2",
]
