"""metric_scale on a robot that moves (bench/moving_robot.py's room, robot, lidar and camera):
each ray of a scan moved through the fixed frame at its own time to the camera at the image's
stamp, as tf2's lookup_transform_full does; without odometry the robot taken as still, and
said."""

import numpy as np
import pytest

from bench import moving_robot
from bench.moving_robot import driving, frame_anchors, frame_fit, standing_at
from depthclip_ros.messages import range_data
from depthclip_ros.transforms import StaticTransforms


def true_points(t: float) -> np.ndarray:
    """Where each ray of the sweep nearest `t` hit the walls (taken from where the laser was
    at the ray's own time), in the camera's optical frame where the camera is at `t`."""
    start = round(t * moving_robot.SCAN_RATE) / moving_robot.SCAN_RATE
    sweep = moving_robot.scan(start, driving)
    laser = StaticTransforms.parse([moving_robot.LASER_MOUNT]).lookup("base_link", "laser")
    camera = StaticTransforms.parse([moving_robot.CAMERA_MOUNT]).lookup(
        "base_link", "camera_optical_frame"
    )
    own = range_data.scan_points(sweep)
    offsets = range_data.scan_point_offsets(sweep)
    to_camera = camera.then(moving_robot.base_in_odom(t, driving)).inverse()
    hits = np.stack(
        [
            laser.then(moving_robot.base_in_odom(start + offset, driving)).apply(point[None])[0]
            for point, offset in zip(own, offsets, strict=True)
        ]
    )
    return to_camera.apply(hits)


@pytest.mark.parametrize("t", [0.5, 0.57, 0.63])
def test_each_ray_is_moved_through_odom_at_its_own_time(t):
    """Driving 1 m/s and turning 1 rad/s, the image up to 50 ms off the sweep's start and the
    sweep 100 ms long: the anchors through odom are where the rays hit, within 3.5 cm (each of
    8 slices of the sweep shares one lookup: 6 mrad of turn at a slice's edge, 3 cm at the
    room's 5 m); taken as still they are several centimetres off."""
    truth = true_points(t)
    through, words = frame_anchors(t, "odom", driving)
    assert words == "moved through odom at each point's time"
    assert np.max(np.linalg.norm(through - truth, axis=1)) < 0.035
    still, words = frame_anchors(t, "", driving)
    assert words == "robot taken as still (metric_scale_fixed_frame empty)"
    assert np.median(np.linalg.norm(still - truth, axis=1)) > 0.05


def test_a_moving_robots_scale_is_the_still_robots_through_odom():
    """The issue's target: the fitted scale within 1 % of the robot standing still at the
    image's pose, through odom; taken as still, further off than that."""
    for t in (0.5, 0.6, 0.7, 0.8):
        still = frame_fit(t, "odom", standing_at(t))[0]
        assert abs(frame_fit(t, "odom", driving)[0] / still - 1) < 0.01
        assert abs(frame_fit(t, "", driving)[0] / still - 1) > 0.02


def test_without_odometry_the_robot_is_taken_as_still_and_said():
    """No odom -> base_link on /tf (a robot without odometry): the anchors are those of the
    robot taken as still (the laser looked up at the scan's stamp), and the words say why."""
    t = 0.5
    sources_points, words = frame_anchors(t, "map", driving)  # no map frame heard
    assert words.startswith("robot taken as still: no transform from frame 'map'")
    still_points, _ = frame_anchors(t, "", driving)
    np.testing.assert_allclose(sources_points, still_points)


@pytest.mark.parametrize("field", ["t", "time", "timestamp"])
def test_a_clouds_per_point_times_move_each_point_as_a_scans_rays(field):
    """The sweep as a lidar driver's PointCloud2 (in the laser's frame), each point's time in
    Ouster's `t` (uint32 ns after the stamp), Velodyne's `time` (float32 s after it) or Hesai's
    `timestamp` (float64 s since 1970): its anchors equal the scan's, ray by ray; without the
    field every point is taken at the stamp."""
    from sensor_msgs.msg import PointCloud2, PointField

    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.range_sources import RangeSources

    t = 0.57
    start = round(t * moving_robot.SCAN_RATE) / moving_robot.SCAN_RATE
    sweep = moving_robot.scan(start, driving)
    xyz = range_data.scan_points(sweep)
    offsets = range_data.scan_point_offsets(sweep)
    stamp = sweep.header.stamp.sec + sweep.header.stamp.nanosec * 1e-9
    kinds = {
        "t": (PointField.UINT32, "<u4", np.round(offsets * 1e9)),
        "time": (PointField.FLOAT32, "<f4", offsets),
        "timestamp": (PointField.FLOAT64, "<f8", stamp + offsets),
    }
    datatype, dtype, values = kinds[field]
    layout = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), (field, dtype)])
    points = np.zeros(len(xyz), layout)
    for column, name in enumerate("xyz"):
        points[name] = xyz[:, column]
    points[field] = values
    fields = [
        PointField(name=name, offset=layout.fields[name][1], datatype=kind, count=1)
        for name, kind in (*((n, PointField.FLOAT32) for n in "xyz"), (field, datatype))
    ]
    cloud = PointCloud2(
        height=1, width=len(points), fields=fields, is_bigendian=False,
        point_step=layout.itemsize, row_step=layout.itemsize * len(points),
        data=points.tobytes(), is_dense=True,
    )  # fmt: skip
    cloud.header.frame_id = "laser"
    cloud.header.stamp.sec, cloud.header.stamp.nanosec = sweep.header.stamp

    def anchors(name, msg):
        sources = RangeSources()
        for tf in moving_robot.tf_messages(t - 0.3, t + 0.3, driving):
            sources.moving.add(tf)
        sources.add(name, msg)
        settings = OutputSettings(
            metric_scale="scale",
            metric_scale_sources=(name,),
            static_transforms=(moving_robot.LASER_MOUNT, moving_robot.CAMERA_MOUNT),
        )
        header = cloud.header.__class__(frame_id="camera_optical_frame")
        header.stamp.sec, header.stamp.nanosec = moving_robot.Stamp(
            *divmod(int(round((moving_robot.T0 + t) * 1e9)), 10**9)
        )
        points, _, problems = sources.anchors(header, None, (480, 640), settings)
        assert problems == []
        return points

    from_scan = anchors("scan", sweep)
    np.testing.assert_allclose(anchors("points", cloud), from_scan, atol=2e-5)
    cloud.fields = fields[:3]  # no time field: every point at the stamp
    assert np.max(np.linalg.norm(anchors("points", cloud) - from_scan, axis=1)) > 0.01
