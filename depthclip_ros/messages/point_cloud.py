"""Point clouds from depth: back-projection through the pinhole model, the filters a
navigation stack needs, and the PointCloud2 layout (x y z rgb std float32, organised, NaN where
invalid or filtered out; RViz reads the packed rgb, `std` is depth's standard deviation). NumPy
only.
"""

from __future__ import annotations

import numpy as np

POINTFIELD_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
CLOUD_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12), ("std", 16))
CLOUD_POINT_STEP = 20


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) colours of 0-255 (uint8, or any number type) -> float32 with the 0x00RRGGBB bit
    pattern RViz reads."""
    packed = rgb[..., 0].astype(np.uint32) << 16  # channel by channel: no (..., 3) uint32 copy
    packed |= rgb[..., 1].astype(np.uint32) << 8
    packed |= rgb[..., 2].astype(np.uint32)
    return packed.view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """The inverse of pack_rgb: float32 0x00RRGGBB -> uint8 (..., 3)."""
    c = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=-1).astype(np.uint8)


def finite_points(points: np.ndarray) -> np.ndarray:
    """Mask of the (..., 3) points whose x, y and z are all finite (coordinate by coordinate:
    NumPy reduces a length-3 last axis slowly)."""
    return np.isfinite(points[..., 0]) & np.isfinite(points[..., 1]) & np.isfinite(points[..., 2])


def backproject(u: np.ndarray, v: np.ndarray, z: np.ndarray, intrinsics: tuple) -> np.ndarray:
    """Pixel coords and depth -> (..., 3) float32 points in the optical frame (REP 103); `u`
    and `v` broadcast against `z` (a row of columns and a column of rows for a grid)."""
    fx, fy, cx, cy = intrinsics
    z = z.astype(np.float32)
    x = (u.astype(np.float32) - np.float32(cx)) * z / np.float32(fx)
    y = (v.astype(np.float32) - np.float32(cy)) * z / np.float32(fy)
    return np.stack([x, y, z], axis=-1)


def sampled_pixels(height: int, width: int, stride: int) -> tuple:
    """(rows, columns) of the pixels an organised cloud samples: every `stride`-th."""
    return np.arange(0, height, stride), np.arange(0, width, stride)


def cloud_points(depth: np.ndarray, std: np.ndarray, rgb: np.ndarray, intrinsics, stride: int):
    """Organised cloud sampling every `stride`-th pixel: (points (h, w, 3), colours (h, w, 3),
    depth std (h, w))."""
    rows, cols = sampled_pixels(*depth.shape, stride)
    z = depth[::stride, ::stride]  # the sampled pixels, as views
    points = backproject(cols[None, :], rows[:, None], z, intrinsics)
    return points, rgb[::stride, ::stride], std[::stride, ::stride]


def coarse_cloud_points(
    coarse_depth: np.ndarray,
    coarse_std: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    rgb: np.ndarray,
    intrinsics: tuple,
):
    """One point per coarse grid cell at its exact pixel position (u, v); colour of the nearest
    pixel."""
    ui = np.clip(np.rint(u).astype(int), 0, rgb.shape[1] - 1)
    vi = np.clip(np.rint(v).astype(int), 0, rgb.shape[0] - 1)
    return backproject(u, v, coarse_depth, intrinsics), rgb[vi, ui], coarse_std


def kept_points(
    points: np.ndarray, std: np.ndarray, max_std: float, min_range: float, max_range: float
) -> np.ndarray:
    """Mask of the points a navigation stack gets: std at most `max_std` (0 = any) and the
    range along the optical axis (z) within [`min_range`, `max_range`] (max 0 = no limit)."""
    z = points[..., 2]
    keep = finite_points(points) & (z >= min_range)
    if max_range > 0:
        keep &= z <= max_range
    if max_std > 0:
        keep &= std <= max_std
    return keep


def pointcloud_fields(points: np.ndarray, colours: np.ndarray, std: np.ndarray, keep=None) -> dict:
    """Fields of an organised sensor_msgs/PointCloud2 (x y z rgb std float32); x y z and std NaN
    where the point is invalid or not in `keep`.

    `fields` is a list of (name, offset, datatype, count) for the caller's PointField type.
    """
    h, w = points.shape[:2]
    buf = np.empty((h, w, 5), np.float32)
    buf[..., :3] = points
    buf[..., 3] = pack_rgb(colours)
    buf[..., 4] = std
    valid = finite_points(points)
    if keep is not None:
        valid &= keep
    invalid = ~valid
    buf[invalid, :3] = np.nan
    buf[invalid, 4] = np.nan
    return dict(
        height=h,
        width=w,
        is_bigendian=False,
        point_step=CLOUD_POINT_STEP,
        row_step=CLOUD_POINT_STEP * w,
        is_dense=bool(not invalid.any()),
        fields=[(name, off, POINTFIELD_FLOAT32, 1) for name, off in CLOUD_FIELDS],
        data=buf.astype("<f4", copy=False).reshape(-1).view(np.uint8),  # a new buffer: no copy
    )


def pointcloud_to_array(msg) -> np.ndarray:
    """An x y z rgb std float32 PointCloud2 (as written above) -> (H, W, 5) float32."""
    names = [f.name for f in msg.fields]
    if names != [n for n, _ in CLOUD_FIELDS] or msg.point_step != CLOUD_POINT_STEP:
        raise ValueError(f"unexpected cloud layout {names} step {msg.point_step}")
    return np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width, 5)
