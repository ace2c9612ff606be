"""Range sensors' messages -> metric points or depths for metric_scale: sensor_msgs/LaserScan,
PointCloud2 and a depth Image. NumPy only; messages are read by duck typing (rclpy's and a
bag's rosbags messages alike). A message that cannot be read as its type says is one
AnchorError line; readings that are no return (REP 117, NaN, 0 depth) are left out.
"""

from __future__ import annotations

import numpy as np

from ..errors import AnchorError

_FLOAT32, _FLOAT64 = 7, 8  # sensor_msgs/PointField datatypes
# PointField datatypes a per-point time can have: INT32, UINT32, FLOAT32, FLOAT64.
_KINDS = {5: "i4", 6: "u4", _FLOAT32: "f4", _FLOAT64: "f8"}
TIME_FIELDS = ("t", "time", "timestamp")  # Ouster's, Velodyne's, Hesai's, in that order
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def scan_points(scan) -> np.ndarray:
    """A LaserScan's valid rays as (N, 3) points in its frame (the plane z = 0): NaN, inf and
    ranges outside [range_min, range_max] are no return (REP 117)."""
    r, a, _ = _valid_rays(scan)
    return np.stack([r * np.cos(a), r * np.sin(a), np.zeros_like(r)], axis=1)


def scan_point_offsets(scan) -> np.ndarray | None:
    """Each valid ray's time after the scan's stamp (seconds: ray i at i x time_increment,
    REP 117), as scan_points orders them; None where the scan gives no time_increment (0: all
    at the stamp)."""
    increment = float(scan.time_increment)
    if not (np.isfinite(increment) and increment > 0.0):
        return None
    return increment * _valid_rays(scan)[2]


def _valid_rays(scan) -> tuple:
    """(ranges, angles, indices) of a LaserScan's valid rays."""
    ranges = np.asarray(scan.ranges, np.float64)
    increment, start = float(scan.angle_increment), float(scan.angle_min)
    if ranges.size and (not np.isfinite(increment) or increment == 0.0):
        raise AnchorError(f"a LaserScan with angle_increment {increment}: its rays have no angle")
    if not np.isfinite(start):
        raise AnchorError(f"a LaserScan with angle_min {start}")
    angles = start + increment * np.arange(ranges.size)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(ranges) & (ranges >= scan.range_min) & (ranges <= scan.range_max)
    return ranges[valid], angles[valid], np.flatnonzero(valid).astype(np.float64)


def cloud_points(cloud, at_most: int | None = None, times: bool = False):
    """A PointCloud2's x, y, z (float32 or float64 fields) as (N, 3) float64 in its frame,
    points with a coordinate that is not finite left out; of a cloud of more than `at_most`
    points, about `at_most` spread over it (spread_sample), read without the rest. `times`:
    (points, each point's seconds after the header's stamp or None), from the first of the
    drivers' per-point time fields it has (point_offsets)."""
    fields = {f.name: f for f in cloud.fields}
    missing = [name for name in "xyz" if name not in fields]
    if missing:
        raise AnchorError(
            f"a PointCloud2 without {', '.join(missing)} fields (it has "
            f"{', '.join(fields) or 'none'})"
        )
    width, rows, step = int(cloud.width), int(cloud.height), int(cloud.point_step)
    count = width * rows
    data = np.frombuffer(cloud.data, np.uint8)  # rclpy's array, a bag's ndarray: no copy
    if count == 0:
        return (np.zeros((0, 3)), None) if times else np.zeros((0, 3))
    row_step = int(cloud.row_step) or step * width
    if step <= 0 or data.size < row_step * (rows - 1) + step * width:
        raise AnchorError(
            f"a PointCloud2 of {count} points of {step} bytes with {data.size} bytes of data"
        )
    taken = spread_sample(count, at_most) if at_most and count > at_most else np.arange(count)
    starts = (taken // width) * row_step + (taken % width) * step  # each point's first byte
    order = ">" if cloud.is_bigendian else "<"
    points = np.empty((len(taken), 3))
    for column, name in enumerate("xyz"):
        field = fields[name]
        kind = {_FLOAT32: "f4", _FLOAT64: "f8"}.get(int(field.datatype))
        if kind is None or int(field.offset) + int(kind[1]) > step:
            raise AnchorError(
                f"a PointCloud2 whose {name} field is datatype {field.datatype} at offset "
                f"{field.offset} of {step}-byte points (FLOAT32 or FLOAT64 needed)"
            )
        points[:, column] = _field_values(data, starts, field, kind, order)
    finite = np.isfinite(points).all(axis=1)
    if not times:
        return points[finite]
    offsets = point_offsets(cloud, fields, data, starts, order)
    return points[finite], None if offsets is None else offsets[finite]


def _field_values(data, starts, field, kind: str, order: str) -> np.ndarray:
    """The values of `field` (numpy `kind`, e.g. 'f4') of the points starting at `starts`."""
    size = int(kind[1])
    raw = data[(starts + int(field.offset))[:, None] + np.arange(size)]  # (n, size) bytes
    return raw.view(order + kind)[:, 0].astype(np.float64)


def point_offsets(cloud, fields: dict, data, starts, order: str) -> np.ndarray | None:
    """Each point's seconds after the cloud's stamp, from its drivers' time field: `t` (an
    integer: nanoseconds after the stamp, Ouster's; a float: seconds), `time` (seconds after
    the stamp, Velodyne's), `timestamp` (a float: a time like the stamp's, Hesai's, where its
    values lie nearer the stamp than 0; else seconds after the stamp); None where it has none
    of them (every point at the stamp) or one of another type."""
    step = int(cloud.point_step)
    for name in TIME_FIELDS:
        field = fields.get(name)
        if field is None:
            continue
        kind = _KINDS.get(int(field.datatype))
        if kind is None or int(field.offset) + int(kind[1]) > step:
            return None
        values = _field_values(data, starts, field, kind, order)
        if kind[0] in "iu":
            return values * 1e-9  # nanoseconds
        stamp = int(cloud.header.stamp.sec) + int(cloud.header.stamp.nanosec) * 1e-9
        middle = float(np.nanmedian(values)) if values.size else 0.0
        if name == "timestamp" and abs(middle - stamp) < abs(middle):  # nearer the stamp: a time
            return values - stamp
        return values
    return None


def spread_sample(count: int, size: int) -> np.ndarray:
    """About `size` of the indices 0 .. `count` - 1, increasing, spread evenly: one in each of
    `size` equal blocks, at a place in its block that the golden ratio's multiples spread. Not
    every k-th: a lidar's cloud is periodic (16 lasers an azimuth, 1024 columns a ring), and
    a stride that shares a period keeps a few rings or columns only; this keeps each alike."""
    blocks = np.arange(size)
    taken = ((blocks + blocks * _GOLDEN % 1.0) * (count / size)).astype(np.intp)
    return taken[np.r_[True, taken[1:] != taken[:-1]]]  # blocks narrower than 2 may meet


# The depth images read: encoding -> (its pixels' dtype, metres per unit).
DEPTH_IMAGE_UNITS = {"32FC1": ("f4", 1.0), "16UC1": ("u2", 1e-3), "mono16": ("u2", 1e-3)}


def depth_image_metres(image) -> np.ndarray:
    """A depth Image (32FC1 metres, 16UC1 or mono16 millimetres) as (H, W) float32 metres; 0
    and NaN are no depth."""
    encoding = str(image.encoding)
    if encoding not in DEPTH_IMAGE_UNITS:
        raise AnchorError(
            f"a depth image in {encoding!r}: metric_scale reads 32FC1 (m), 16UC1 or mono16 (mm)"
        )
    kind, unit = DEPTH_IMAGE_UNITS[encoding]
    height, width, step = int(image.height), int(image.width), int(image.step)
    size = int(kind[1])
    data = np.frombuffer(bytes(image.data), np.uint8)
    if height <= 0 or width <= 0 or step < width * size or data.size < step * height:
        raise AnchorError(
            f"a {width}x{height} {encoding} depth image with step {step} and {data.size} bytes"
        )
    order = ">" if image.is_bigendian else "<"
    rows = data[: step * height].reshape(height, step)[:, : width * size]
    values = rows.copy().view(order + kind).reshape(height, width).astype(np.float32)
    return values * np.float32(unit)
