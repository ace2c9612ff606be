"""metric_scale on a robot that moves: the built-in room (closed behind the camera), a robot
driving and turning in it (odom -> base_link on /tf at TF_RATE), a 360-degree 2D lidar sweeping
at SCAN_RATE with its time_increment (each ray taken from where the robot was at its own time),
a camera at CAMERA_RATE whose truth is ray-cast from where it is at the image's stamp, and the
synthetic model output of that truth. Each frame's scale and shift fitted through the package's
own RangeSources and fit, through odom (each ray at its time) or with the robot taken as still,
against the same frames with the robot standing still at the image's pose. NumPy only."""

from __future__ import annotations

import types
import typing

import numpy as np

from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.metric_scale.fit import fit
from depthclip_ros.metric_scale.projection import project
from depthclip_ros.metric_scale.range_sources import RangeSources
from depthclip_ros.synthetic_scenes import CX, CY, FX, FY, HEIGHT, SCENES, WIDTH
from depthclip_ros.transforms import StaticTransforms, Transform, rotation_from_rpy

from .metric_scale_bench import SCALE, scores, synthetic_result

SPEED, TURN = 1.0, 1.0  # m/s forward, rad/s to the left
SCAN_RATE, CAMERA_RATE, TF_RATE = 10.0, 30.0, 50.0
SCAN_RAYS = 720  # a 360-degree sweep, half a degree apart
T0 = 100.0  # the recording's first stamp (s)
LASER_MOUNT = "0.2 0 0 0 0 0 base_link laser"  # ahead of the camera, level, at its height
CAMERA_MOUNT = "0 0 0 -1.5707963267948966 0 -1.5707963267948966 base_link camera_optical_frame"
HALF_WIDTH, FLOOR, CEILING, FAR = SCENES["room"]
BEHIND = 1.5  # the room's wall behind the robot's start (the built-in room is open there)
K = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])


class Stamp(typing.NamedTuple):
    """A time as builtin_interfaces/Time has it (sec, nanosec)."""

    sec: int
    nanosec: int


def driving(t: float) -> tuple:
    """(x, y, yaw) of base_link in odom at `t` s after T0: a unicycle from the origin at SPEED
    and TURN."""
    yaw = TURN * t
    return SPEED / TURN * np.sin(yaw), SPEED / TURN * (1.0 - np.cos(yaw)), yaw


def standing_at(t: float):
    """The path of a robot standing all the while where `driving` is at `t`."""
    at = driving(t)
    return lambda _: at


def base_in_odom(t: float, path) -> Transform:
    x, y, yaw = path(t)
    return Transform("odom", "base_link", rotation_from_rpy(0.0, 0.0, yaw), np.array([x, y, 0.0]))


def _stamp(seconds: float) -> Stamp:
    return Stamp(*divmod(int(round(seconds * 1e9)), 10**9))


def tf_messages(start: float, end: float, path) -> list:
    """odom -> base_link as /tf carries it, at TF_RATE from `start` to `end` (s after T0)."""
    messages = []
    for t in np.arange(start, end, 1.0 / TF_RATE):
        x, y, yaw = path(t)
        transform = types.SimpleNamespace(
            translation=types.SimpleNamespace(x=x, y=y, z=0.0),
            rotation=types.SimpleNamespace(x=0.0, y=0.0, z=np.sin(yaw / 2), w=np.cos(yaw / 2)),
        )
        header = types.SimpleNamespace(frame_id="odom", stamp=_stamp(T0 + t))
        messages.append(
            types.SimpleNamespace(header=header, child_frame_id="base_link", transform=transform)
        )
    return messages


def _to_walls(origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """How far along each of `directions` (N, 3; units of their own length) from `origin` (3,)
    the room's walls, floor and ceiling are."""
    bounds = ((-BEHIND, FAR), (-HALF_WIDTH, HALF_WIDTH), (-FLOOR, CEILING))
    hits = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, (low, high) in enumerate(bounds):
            d = directions[:, axis]
            hits.append(np.where(d > 0, (high - origin[axis]) / d, np.inf))
            hits.append(np.where(d < 0, (low - origin[axis]) / d, np.inf))
    return np.min(hits, axis=0)


def scan(start: float, path):
    """The lidar's sweep beginning at `start` (s after T0): ray i at start + i x
    time_increment, from where the laser is then, to the walls (a LaserScan's fields)."""
    increment = 2 * np.pi / SCAN_RAYS
    time_increment = 1.0 / SCAN_RATE / SCAN_RAYS
    angles = -np.pi + increment * np.arange(SCAN_RAYS)
    laser = StaticTransforms.parse([LASER_MOUNT]).lookup("base_link", "laser")
    ranges = np.empty(SCAN_RAYS)
    for i, angle in enumerate(angles):
        at = laser.then(base_in_odom(start + i * time_increment, path))
        direction = at.rotation @ np.array([np.cos(angle), np.sin(angle), 0.0])
        ranges[i] = _to_walls(at.translation, direction[None])[0]
    header = types.SimpleNamespace(frame_id="laser", stamp=_stamp(T0 + start))
    return types.SimpleNamespace(
        header=header,
        angle_min=-np.pi,
        angle_increment=increment,
        time_increment=time_increment,
        range_min=0.05,
        range_max=30.0,
        ranges=ranges,
    )


def camera_truth(t: float, path) -> np.ndarray:
    """The camera's true depth (HEIGHT, WIDTH) at `t` s after T0: the room ray-cast from where
    the camera is then."""
    camera = StaticTransforms.parse([CAMERA_MOUNT]).lookup("base_link", "camera_optical_frame")
    at = camera.then(base_in_odom(t, path))
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    rays = np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], -1).reshape(-1, 3)
    depth = _to_walls(at.translation, rays @ at.rotation.T)  # rays of unit optical depth
    return depth.reshape(HEIGHT, WIDTH).astype(np.float32)


def frame_anchors(t: float, fixed_frame: str, path) -> tuple:
    """(the anchors in the camera's optical frame, the RangeSources' motion words) of the
    camera frame at `t` s after T0, from the sweep that began nearest it, moved through
    `fixed_frame` ('': the robot taken as still)."""
    sources = RangeSources()
    for msg in tf_messages(t - 0.3, t + 0.3, path):
        sources.moving.add(msg)
    sources.add("scan", scan(round(t * SCAN_RATE) / SCAN_RATE, path))
    settings = OutputSettings(
        metric_scale="scale_shift",
        metric_scale_sources=("scan",),
        static_transforms=(LASER_MOUNT, CAMERA_MOUNT),
        metric_scale_fixed_frame=fixed_frame,
    )
    header = types.SimpleNamespace(frame_id="camera_optical_frame", stamp=_stamp(T0 + t))
    points, _, problems = sources.anchors(header, None, (HEIGHT, WIDTH), settings)
    if problems:
        raise RuntimeError("; ".join(problems))
    return points, sources.motion[None]


def frame_fit(t: float, fixed_frame: str, path) -> tuple:
    """(the fitted scale, the calibrated depth's AbsRel) of the frame at `t` (frame_anchors),
    in mode scale_shift, on the synthetic model output of the camera's truth then."""
    points, _ = frame_anchors(t, fixed_frame, path)
    truth = camera_truth(t, path)
    model = synthetic_result(truth)
    projection = project(points, K, model.region, model.coarse_depth[0], model.bins)
    result = fit(projection, "scale_shift", 8, (0.2, 10.0), model.bins)
    return result.scale, scores(truth, result.scale * model.depth[0] + result.shift)["abs_rel"]


def bench_metric_scale_moving(quick: bool) -> tuple:
    """(head, rows): the frames of one second of a 30 Hz camera (every third with --quick),
    each fitted with the robot driving, through odom and taken as still, and with it standing
    still at the image's pose all the while."""
    stamps = np.arange(0.5, 1.5, (3.0 if quick else 1.0) / CAMERA_RATE)
    cases = {
        "standing still at each image's pose": [
            frame_fit(t, "odom", standing_at(t)) for t in stamps
        ],
        f"driving {SPEED:g} m/s, turning {TURN:g} rad/s; each ray through odom": [
            frame_fit(t, "odom", driving) for t in stamps
        ],
        f"driving {SPEED:g} m/s, turning {TURN:g} rad/s; taken as still": [
            frame_fit(t, "", driving) for t in stamps
        ],
    }
    still = np.array([scale for scale, _ in next(iter(cases.values()))])
    rows = []
    for name, fits in cases.items():
        scales = np.array([scale for scale, _ in fits])
        gap = np.abs(scales / still - 1)
        rows.append(
            [
                name,
                str(len(scales)),
                f"{np.median(np.abs(scales / SCALE - 1)):.2%}",
                f"{np.median(gap):.2%} / {np.max(gap):.2%}",
                f"{np.mean([abs_rel for _, abs_rel in fits]):.3f}",
            ]
        )
    head = [
        "robot",
        "frames",
        f"scale off the model's {SCALE:g} (median)",
        "off the still robot's scale (median / largest)",
        "AbsRel calibrated (mean)",
    ]
    return head, rows
