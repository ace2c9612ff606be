"""Range data for metric_scale's tests, made from the model's own depth so that the answer is
known: anchors `scale` times the model's depth, as a PointCloud2 at the feature cells' pixels or
a LaserScan from a laser at the camera's optical centre in the image's middle row."""

import numpy as np
from helpers import stamp

# The laser's frame to the camera's optical frame: camera_link is the laser's frame (REP 103:
# x forward, y left, z up); the optical frame turned from it as every camera driver turns it.
LASER_TO_OPTICAL = [
    "0 0 0 0 0 0 laser camera_link",
    "0 0 0 -1.5707963267948966 0 -1.5707963267948966 camera_link camera_optical_frame",
]


def intrinsics(info) -> np.ndarray:
    return np.asarray(info.k, np.float64).reshape(3, 3)


def anchors_at_the_cells(result, k, scale, index=0):
    """Optical-frame points at the coarse cells' pixels, `scale` times the model's depth."""
    u, v = result.coarse_pixel_coords()
    z = scale * result.coarse_depth[index].astype(np.float64)
    return np.stack([(u - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1], z], -1)


def cloud_of(points, sec, frame, nanosec=0):
    from sensor_msgs.msg import PointCloud2, PointField

    xyz = np.ascontiguousarray(points.reshape(-1, 3), np.float32)
    fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate("xyz")
    ]
    msg = PointCloud2(
        height=1,
        width=len(xyz),
        fields=fields,
        is_bigendian=False,
        point_step=12,
        row_step=12 * len(xyz),
        data=xyz.tobytes(),
        is_dense=True,
    )
    return stamp(msg, sec, nanosec, frame=frame)


def floor_points(k, size, height):
    """The floor under a level camera `height` m up (pinhole `k`, image `size` (h, w)) in its
    optical frame, at every 16th pixel below the horizon where a ray falls 1 in 20 or steeper:
    y is the height, z = height fy / (v - cy)."""
    rows, cols = np.mgrid[8 : size[0] : 16, 8 : size[1] : 16]
    below = (rows - k[1, 2]) / k[1, 1] > 0.05
    z = height * k[1, 1] / (rows[below] - k[1, 2])
    x = (cols[below] - k[0, 2]) * z / k[0, 0]
    return np.stack([x, np.full(z.shape, height), z], -1)


def model_depth_at(result, u, v, index=0):
    """The coarse depth sampled at pixels (u, v) as the upsampling samples it."""
    top, left, height, width = result.region
    grid = result.coarse_depth[index].astype(np.float64)
    rows = (v - top) * (grid.shape[0] - 1) / (height - 1)
    cols = (u - left) * (grid.shape[1] - 1) / (width - 1)
    r0 = np.minimum(np.floor(rows).astype(int), grid.shape[0] - 2)
    c0 = np.minimum(np.floor(cols).astype(int), grid.shape[1] - 2)
    fr, fc = rows - r0, cols - c0
    return (
        grid[r0, c0] * (1 - fr) * (1 - fc)
        + grid[r0, c0 + 1] * (1 - fr) * fc
        + grid[r0 + 1, c0] * fr * (1 - fc)
        + grid[r0 + 1, c0 + 1] * fr * fc
    )


def scan_of(result, k, scale, sec, nanosec=0, index=0):
    """A LaserScan (frame `laser`, LASER_TO_OPTICAL) at the camera's optical centre, its plane
    the image's middle row: each ray returns where a scene `scale` times the model's depth is."""
    from sensor_msgs.msg import LaserScan

    increment = 0.02
    angles = np.arange(-half_view(k), half_view(k), increment)
    msg = LaserScan(
        angle_min=float(angles[0]),
        angle_max=float(angles[-1]),
        angle_increment=increment,
        range_min=0.05,
        range_max=100.0,
        ranges=ranges_in_view(result, k, scale, angles, index).astype(np.float32).tolist(),
    )
    return stamp(msg, sec, nanosec, frame="laser")


def half_view(k) -> float:
    """Half the camera's horizontal view, less a ray's width (rays on the image's edge)."""
    return float(np.arctan(k[0, 2] / k[0, 0]) - 0.02)


def ranges_in_view(result, k, scale, angles, index=0) -> np.ndarray:
    """The ranges of rays at `angles` (radians, in the camera's link frame: the laser's,
    LASER_TO_OPTICAL) in its middle row, where a scene `scale` times the model's depth is."""
    u = k[0, 2] - k[0, 0] * np.tan(angles)  # x_optical = -y_laser, z_optical = x_laser
    z = scale * model_depth_at(result, u, np.full(u.shape, k[1, 2]), index)
    return z / np.cos(angles)


# A second camera turned half a turn on the laser (rear_optical_frame), as LASER_TO_OPTICAL's.
REAR_MOUNT = [
    "0 0 0 3.141592653589793 0 0 laser rear_link",
    "0 0 0 -1.5707963267948966 0 -1.5707963267948966 rear_link rear_optical_frame",
]


def all_round_scan(views, k, sec, nanosec=0, index=0):
    """A 360-degree LaserScan (frame `laser`) seen by cameras turned about the laser: `views`
    [(turn (rad), result, scale)]: the rays in each camera's view (pinhole `k`, its middle
    row) return where a scene `scale` times its result's depth is; the others none (+inf,
    REP 117). Rays a 314th of a turn apart: each camera's at the same angles of its own."""
    from sensor_msgs.msg import LaserScan

    increment = np.pi / 157
    angles = -np.pi + increment * np.arange(314)
    ranges = np.full(angles.shape, np.inf)
    for turn, result, scale in views:
        own = np.angle(np.exp(1j * (angles - turn)))  # in the camera's link frame
        seen = np.abs(own) < half_view(k)
        ranges[seen] = ranges_in_view(result, k, scale, own[seen], index)
    msg = LaserScan(
        angle_min=float(angles[0]),
        angle_max=float(angles[-1]),
        angle_increment=float(increment),
        range_min=0.05,
        range_max=100.0,
        ranges=ranges.astype(np.float32).tolist(),
    )
    return stamp(msg, sec, nanosec, frame="laser")


def rosbags_scan(scan, store):
    """The LaserScan as a rosbags message of `store` (what a bag's writer serialises)."""
    types = store.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](
            sec=scan.header.stamp.sec, nanosec=scan.header.stamp.nanosec
        ),
        frame_id=scan.header.frame_id,
    )
    return types["sensor_msgs/msg/LaserScan"](
        header=header,
        angle_min=scan.angle_min,
        angle_max=scan.angle_max,
        angle_increment=scan.angle_increment,
        time_increment=0.0,
        scan_time=0.0,
        range_min=scan.range_min,
        range_max=scan.range_max,
        ranges=np.asarray(scan.ranges, np.float32),
        intensities=np.zeros(0, np.float32),
    )


def rosbags_cloud(points, sec, nanosec, frame, store):
    """A PointCloud2 of `points` (N, 3) in `frame`, float32 x, y, z and a 4-byte intensity
    after them (16-byte points, as lidar drivers pad them), a rosbags message."""
    types = store.types
    layout = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    packed = np.zeros(len(points), layout)
    packed["x"], packed["y"], packed["z"] = np.asarray(points, np.float32).T
    field = types["sensor_msgs/msg/PointField"]
    return types["sensor_msgs/msg/PointCloud2"](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame
        ),
        height=1,
        width=len(points),
        fields=[
            field(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate(layout.names)
        ],
        is_bigendian=False,
        point_step=layout.itemsize,
        row_step=layout.itemsize * len(points),
        data=packed.view(np.uint8),
        is_dense=True,
    )


def rosbags_depth_image(depth, sec, nanosec, store, frame="camera_optical_frame"):
    """A 32FC1 depth Image of `depth` (metres) in the camera's `frame`, a rosbags message."""
    types = store.types
    height, width = depth.shape
    return types["sensor_msgs/msg/Image"](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
            frame_id=frame,
        ),
        height=height,
        width=width,
        encoding="32FC1",
        is_bigendian=0,
        step=4 * width,
        data=np.frombuffer(np.ascontiguousarray(depth, np.float32).tobytes(), np.uint8),
    )


def rosbags_tf_static(texts, store):
    """A tf2_msgs/TFMessage of `store` holding the static_transform_publisher `texts`."""
    return rosbags_tf([(text, 0, 0) for text in texts], store)


def rosbags_tf(stamped_texts, store):
    """A tf2_msgs/TFMessage of `store` holding (static_transform_publisher text, sec,
    nanosec) each."""
    from depthclip_ros.transforms import parse_static_transform

    types = store.types
    stamped = []
    for text, sec, nanosec in stamped_texts:
        t = parse_static_transform(text)
        x, y, z, w = quaternion_of(t.rotation)
        stamped.append(
            types["geometry_msgs/msg/TransformStamped"](
                header=types["std_msgs/msg/Header"](
                    stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                    frame_id=t.parent,
                ),
                child_frame_id=t.child,
                transform=types["geometry_msgs/msg/Transform"](
                    translation=types["geometry_msgs/msg/Vector3"](*map(float, t.translation)),
                    rotation=types["geometry_msgs/msg/Quaternion"](
                        x=float(x), y=float(y), z=float(z), w=float(w)
                    ),
                ),
            )
        )
    return types["tf2_msgs/msg/TFMessage"](transforms=stamped)


def rosbags_mount_tf(sec, nanosec, yaw_at, store, offset_ns=25_000_000):
    """/tf (a TFMessage of `store`) of a mount turning on the laser: laser -> tilt_laser,
    sampled `offset_ns` either side of the stamp, its yaw `yaw_at(sec, nanosec)` at each."""
    samples = []
    for offset in (-offset_ns, offset_ns):
        at = divmod(sec * 10**9 + nanosec + offset, 10**9)
        samples.append((f"0 0 0 {yaw_at(*at)!r} 0 0 laser tilt_laser", *at))
    return rosbags_tf(samples, store)


def quaternion_of(r) -> tuple:
    """(x, y, z, w) of rotation matrix `r`, as floats for a message's fields."""
    from depthclip_ros.transforms import quaternion_from_rotation

    return tuple(float(c) for c in quaternion_from_rotation(r))


def tf_message(texts, sec=0):
    """A tf2_msgs/TFMessage (rclpy's; tf2_msgs from a ROS install) of the
    static_transform_publisher `texts`, stamped `sec`."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from depthclip_ros.transforms import parse_static_transform

    stamped = []
    for text in texts:
        t = parse_static_transform(text)
        msg = TransformStamped(child_frame_id=t.child)
        msg.header.frame_id, msg.header.stamp.sec = t.parent, sec
        v, q = msg.transform.translation, msg.transform.rotation
        v.x, v.y, v.z = map(float, t.translation)
        q.x, q.y, q.z, q.w = quaternion_of(t.rotation)
        stamped.append(msg)
    return TFMessage(transforms=stamped)
