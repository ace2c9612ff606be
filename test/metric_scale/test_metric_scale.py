"""metric_scale's library: transforms as static_transform_publisher takes them, each source's
points, the projection onto the feature grid, the robust fit and the tracker, on known truth
(the built-in scenes' exact depth, a model output made from it with a known scale and shift)."""

import dataclasses
import types

import numpy as np
import pytest

from depthclip_ros import transforms
from depthclip_ros.errors import AnchorError
from depthclip_ros.messages import range_data
from depthclip_ros.metric_scale import anchors, fit, tracking, transform_history
from depthclip_ros.metric_scale.projection import project
from depthclip_ros.synthetic_scenes import CX, CY, FX, FY, render_scene

K = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])
REGION = (0, 0, 480, 640)
GRID = (15, 20)
BINS = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0])


def grid_of(depth, grid=GRID):
    """The full-resolution depth sampled at the coarse cells' pixels (align_corners)."""
    rows = np.rint(np.linspace(0, depth.shape[0] - 1, grid[0])).astype(int)
    cols = np.rint(np.linspace(0, depth.shape[1] - 1, grid[1])).astype(int)
    return depth[np.ix_(rows, cols)].astype(np.float64)


def points_of(depth, step=8, k=K):
    """Every `step`-th pixel of a depth image as optical-frame points."""
    return anchors.depth_image_points(depth, k, step)


def cell_points(depth, grid=GRID):
    """One point a feature cell: the depth image's at the cell's pixel."""
    rows = np.rint(np.linspace(0, depth.shape[0] - 1, grid[0]))
    cols = np.rint(np.linspace(0, depth.shape[1] - 1, grid[1]))
    vv, uu = np.meshgrid(rows, cols, indexing="ij")
    z = grid_of(depth, grid)
    return np.stack([(uu - CX) * z / FX, (vv - CY) * z / FY, z], -1).reshape(-1, 3)


# -- transforms -----------------------------------------------------------------------------


def test_rpy_and_quaternion_forms_give_the_same_transform():
    yaw, pitch, roll = 0.3, -0.2, 0.1
    rpy = transforms.parse_static_transform(f"0.1 0.2 0.3 {yaw} {pitch} {roll} base laser")
    # The same rotation as a quaternion (tf2's setRPY, written out).
    cy, sy, cp, sp, cr, sr = (f(a / 2) for a in (yaw, pitch, roll) for f in (np.cos, np.sin))
    q = (
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
        cr * cp * cy + sr * sp * sy,
    )
    quat = transforms.parse_static_transform(
        "0.1 0.2 0.3 " + " ".join(map(str, q)) + " base laser"
    )
    flags = transforms.parse_static_transform(
        f"--x 0.1 --y 0.2 --z 0.3 --yaw {yaw} --pitch {pitch} --roll {roll} "
        "--frame-id base --child-frame-id laser"
    )
    for t in (quat, flags):
        np.testing.assert_allclose(t.rotation, rpy.rotation, atol=1e-12)
        np.testing.assert_allclose(t.translation, rpy.translation)
    np.testing.assert_allclose(rpy.rotation @ rpy.rotation.T, np.eye(3), atol=1e-12)
    # yaw alone turns x into y (REP 103: counter-clockwise about z)
    turn = transforms.parse_static_transform(f"0 0 0 {np.pi / 2} 0 0 base laser")
    np.testing.assert_allclose(turn.apply(np.array([[1.0, 0, 0]])), [[0, 1, 0]], atol=1e-12)


def test_lookup_chains_and_inverts_the_given_transforms():
    tree = transforms.StaticTransforms.parse(
        [
            "0.2 0 0.1 0 0 0 base_link laser",
            "0.1 0 0.5 0 0 0 base_link camera_link",
            # REP 103 body frame to the optical frame: z forward, x right, y down
            "0 0 0 -1.5707963267948966 0 -1.5707963267948966 camera_link camera_optical",
        ]
    )
    laser_to_optical = tree.lookup("camera_optical", "laser")
    # A return 3 m ahead of the laser: 0.1 m forward of the camera's base, 0.4 m below the camera
    point = laser_to_optical.apply(np.array([[3.0, 0.0, 0.0]]))
    np.testing.assert_allclose(point, [[0.0, 0.4, 3.1]], atol=1e-9)
    back = tree.lookup("laser", "camera_optical").apply(point)
    np.testing.assert_allclose(back, [[3.0, 0.0, 0.0]], atol=1e-9)
    assert tree.lookup("/laser", "laser").apply(point).tolist() == point.tolist()
    with pytest.raises(AnchorError, match="no transform from frame 'odom' to 'camera_optical'"):
        tree.lookup("camera_optical", "odom")


def test_a_frame_has_one_parent_the_last_transform_of_it_given():
    """As in tf2: a later transform of the same child frame replaces the earlier one, whatever
    its parent (a bag's /tf_static's mount, then the static_transforms parameter's)."""
    tree = transforms.StaticTransforms.parse(["0 0 1 0 0 0 base_link laser"])
    tree.add(transforms.parse_static_transform("0 0 2 0 0 0 base_link laser"))
    np.testing.assert_allclose(tree.lookup("base_link", "laser").translation, [0, 0, 2])
    tree.add(transforms.parse_static_transform("0 0 3 0 0 0 base_footprint laser"))
    assert [(t.parent, t.child) for t in tree.all()] == [("base_footprint", "laser")]
    np.testing.assert_allclose(tree.lookup("base_footprint", "laser").translation, [0, 0, 3])
    with pytest.raises(AnchorError, match="no transform from frame 'laser' to 'base_link'"):
        tree.lookup("base_link", "laser")


def test_a_rotations_quaternion_gives_the_rotation_back():
    rng = np.random.default_rng(3)
    turns = [rng.normal(size=4) for _ in range(200)]
    turns += [np.eye(4)[i] for i in range(4)] + [np.array([0.0, 0.6, 0.8, 1e-9])]  # half turns
    for q in turns:
        rotation = transforms.rotation_from_quaternion(*q)
        back = transforms.quaternion_from_rotation(rotation)
        again = transforms.rotation_from_quaternion(*back)
        np.testing.assert_allclose(again, rotation, atol=1e-12)
        assert back[3] >= 0 and abs(abs(back @ q) / np.linalg.norm(q) - 1) < 1e-9


@pytest.mark.parametrize(
    "text",
    [
        "1 2 3 base laser",
        "1 2 3 0 0 0 x base laser",
        "0 0 0 0 0 0 0 0 base laser",
        "--x 1 --frame-id base",
        "--x 1 --colour red --frame-id a --child-frame-id b",
        "nan 0 0 0 0 0 base laser",
        "0 0 0 0 0 0 base base",
    ],
)
def test_a_transform_that_cannot_be_read_is_one_error_naming_the_forms(text):
    with pytest.raises(AnchorError) as error:
        transforms.parse_static_transform(text)
    message = str(error.value)
    assert "\n" not in message and "static_transform_publisher" in message and text in message


def test_a_transformstamped_is_the_transform_its_publisher_gave():
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped(child_frame_id="laser")
    msg.header.frame_id = "/base"  # ROS 1's leading slash, as bags still carry it
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = -0.5, 0.25, 1.0
    q.x, q.y, q.z, q.w = 0.1, 0.2, 0.3, 0.4  # not normalised: tf2 normalises too
    read = transforms.transform_from_stamped(msg)
    assert (read.parent, read.child, read.given) == ("base", "laser", True)
    reference = transforms.parse_static_transform("-0.5 0.25 1 0.1 0.2 0.3 0.4 base laser")
    np.testing.assert_allclose(read.rotation, reference.rotation, atol=1e-12)
    np.testing.assert_allclose(read.translation, [-0.5, 0.25, 1.0])


def stamped(parent, child, sec, xyz=(0.0, 0.0, 0.0), yaw=0.0, quaternion=None):
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped(child_frame_id=child)
    msg.header.frame_id = parent
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(sec), int(round(sec % 1 * 1e9))
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = map(float, xyz)
    q.x, q.y, q.z, q.w = quaternion or (0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2)))
    return msg


def test_transforms_over_time_are_interpolated_at_a_stamp_and_never_extrapolated():
    """A /tf edge sampled at 10 s (at rest) and 11 s (2 m along x, turned 90 degrees): at
    10.5 s halfway (1 m, 45 degrees: slerp), at a sample its value; outside them none, said;
    the 10 s behind the newest sample kept, older ones forgotten; a quaternion q or -q alike."""
    history = transform_history.TransformHistory()
    assert not history
    history.add(stamped("base", "laser", 10.0))
    history.add(stamped("/base", "laser", 11.0, xyz=(2, 0, 0), yaw=np.pi / 2))
    (half,), outside = history.at(stamped("", "", 10.5).header.stamp)
    assert (half.parent, half.child, outside) == ("base", "laser", [])
    np.testing.assert_allclose(half.translation, [1.0, 0.0, 0.0])
    yawed = transforms.rotation_from_rpy
    np.testing.assert_allclose(half.rotation, yawed(0, 0, np.pi / 4), atol=1e-12)
    (end,), _ = history.at(stamped("", "", 11.0).header.stamp)
    np.testing.assert_allclose(end.rotation, yawed(0, 0, np.pi / 2), atol=1e-12)
    found, outside = history.at(stamped("", "", 11.5).header.stamp)
    assert found == [] and outside == [
        "/tf has base -> laser from 10.000 to 11.000 s, not at 11.500 s"
    ]
    # The same rotations written as -q: slerp takes the short way round.
    flipped = transform_history.TransformHistory()
    flipped.add(stamped("base", "laser", 10.0, quaternion=(0.0, 0.0, 0.0, -1.0)))
    flipped.add(stamped("base", "laser", 11.0, yaw=np.pi / 2))
    (half,), _ = flipped.at(stamped("", "", 10.5).header.stamp)
    np.testing.assert_allclose(half.rotation, yawed(0, 0, np.pi / 4), atol=1e-12)
    history.add(stamped("base", "laser", 20.5))
    assert history.at(stamped("", "", 10.5).header.stamp)[0] == []  # 10 s behind 20.5: gone
    assert len(history.at(stamped("", "", 15.0).header.stamp)[0]) == 1
    with pytest.raises(AnchorError, match="no rotation"):
        history.add(stamped("base", "laser", 21.0, quaternion=(0.0, 0.0, 0.0, 0.0)))


# -- sources ---------------------------------------------------------------------------------


class RecordedFrames:
    """What RangeSources asks of the node's tf2 frames: `lookup(target, source, stamp,
    given)`, answered with `transform` or, when it is None, with tf2's words; `given`, the
    parameter's transforms tf2 is given, recorded as (parent, child) pairs."""

    def __init__(self, transform=None):
        self.transform, self.asked, self.given = transform, [], []

    def lookup(self, target, source, stamp, given=(), counted=True):
        self.asked.append((target, source, (stamp.sec, stamp.nanosec)))
        self.given.append([(t.parent, t.child) for t in given])
        if self.transform is None:
            raise AnchorError('tf2: LookupException: "laser" passed to lookupTransform ...')
        return self.transform


def test_frames_static_transforms_do_not_join_are_looked_up_at_the_anchors_stamp():
    """The static_transforms chain first (the user gave it); tf2's frames for what it does not
    join, at the scan's own stamp; where neither has the frame, one line with both words and
    no points from that source."""
    from sensor_msgs.msg import Image, LaserScan

    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.range_sources import RangeSources

    msg = LaserScan(angle_min=-0.1, angle_increment=0.1, range_min=0.1, range_max=10.0)
    msg.ranges = [2.0, 2.0, 2.0]
    msg.header.frame_id = "laser"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 7, 10_000_000
    image = Image()
    image.header.frame_id = "cam"
    image.header.stamp.sec, image.header.stamp.nanosec = 7, 20_000_000
    own = range_data.scan_points(msg)
    laser_to_cam = transforms.parse_static_transform("0 0 0.5 0 0 0 cam laser")
    static = OutputSettings(  # the robot taken as still: each source at its own stamp
        metric_scale="scale",
        metric_scale_sources=("scan",),
        static_transforms=("0 0 0.5 0 0 0 cam laser",),
        metric_scale_fixed_frame="",
    )
    bare = dataclasses.replace(static, static_transforms=())
    sources = RangeSources()
    sources.add("scan", msg)
    sources.frames = RecordedFrames(transforms.parse_static_transform("1 0 0 0 0 0 cam laser"))
    points, _, problems = sources.anchors(image.header, None, (480, 640), static)
    np.testing.assert_allclose(points, laser_to_cam.apply(own))
    assert problems == [] and sources.frames.asked == []
    points, _, problems = sources.anchors(image.header, None, (480, 640), bare)
    np.testing.assert_allclose(points, own + [1.0, 0.0, 0.0])
    assert problems == [] and sources.frames.asked == [("cam", "laser", (7, 10_000_000))]
    sources.frames = RecordedFrames()
    points, _, problems = sources.anchors(image.header, None, (480, 640), bare)
    assert points.shape == (0, 3) and len(problems) == 1
    assert problems[0].startswith("no transform from frame 'laser' to 'cam'")
    assert "; tf2: LookupException" in problems[0]
    sources.frames = None  # no tf2: the static chain's words alone
    _, _, problems = sources.anchors(image.header, None, (480, 640), bare)
    assert len(problems) == 1 and "tf2" not in problems[0]
    # A bag's /tf (the laser moving along the optical axis): looked up at the scan's stamp.
    sources.moving.add(stamped("cam", "laser", 7.0, xyz=(0, 0, 1)))
    sources.moving.add(stamped("cam", "laser", 7.02, xyz=(0, 0, 3)))
    points, _, problems = sources.anchors(image.header, None, (480, 640), bare)
    assert problems == [] and np.allclose(points, own + [0.0, 0.0, 2.0])  # at 7.01 s
    msg.header.stamp.nanosec = 30_000_000  # 7.03 s: after /tf's last sample
    points, _, problems = sources.anchors(image.header, None, (480, 640), bare)
    assert points.shape == (0, 3) and len(problems) == 1
    assert problems[0].endswith("; /tf has cam -> laser from 7.000 to 7.020 s, not at 7.030 s")
    for joint in range(4):  # a robot's other moving frames: three named, the rest counted
        sources.moving.add(stamped("base", f"joint{joint}", 1.0))
    _, _, (problem,) = sources.anchors(image.header, None, (480, 640), bare)
    assert problem.count("; /tf has ") == 3 and problem.endswith("; 2 more /tf edges not at it")


def test_a_frames_scan_is_held_from_its_arrival_however_many_come_after():
    """A model slower than the 20 scans a source keeps: the scan nearest the frame's stamp,
    come before the image or after it, is held for the frame (`expect`) until its anchors are
    taken; a frame that replaced its camera's pending one frees that one's (so a frame in the
    model keeps its scan however many frames come and go meanwhile); a camera's older frames
    are cleared when a newer one is taken."""
    from sensor_msgs.msg import Image, LaserScan

    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.range_sources import KEEP, RangeSources

    def scan_at(ns, metres):
        msg = LaserScan(angle_min=-0.1, angle_increment=0.1, range_min=0.1, range_max=10.0)
        msg.ranges = [metres] * 3
        msg.header.frame_id = "cam"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 10**9)
        return msg

    def header_at(ns):
        image = Image()
        image.header.frame_id = "cam"
        image.header.stamp.sec, image.header.stamp.nanosec = divmod(ns, 10**9)
        return image.header

    settings = OutputSettings(metric_scale="scale", metric_scale_sources=("scan",))
    at = 7 * 10**9
    for before in (True, False):
        sources = RangeSources()
        if before:  # come before the image: the nearest so far, held when it arrives
            sources.add("scan", scan_at(at - 10_000_000, 2.0))
        sources.expect("front", at)
        if not before:
            sources.add("scan", scan_at(at - 30_000_000, 3.0))  # within the slop, farther
            sources.add("scan", scan_at(at + 10_000_000, 2.0))  # nearer: held instead
        for i in range(KEEP):  # 20 more, 0.1 s apart after it: the index keeps only these
            sources.add("scan", scan_at(at + (i + 1) * 100_000_000, 5.0))
        _, _, problems = sources.anchors(header_at(at), None, (480, 640), settings)
        assert problems == ["no scan within 0.05 s"]  # not expected by this camera
        points, _, problems = sources.anchors(header_at(at), None, (480, 640), settings, "front")
        assert problems == [] and np.allclose(np.linalg.norm(points, axis=1), 2.0)
        _, _, problems = sources.anchors(header_at(at), None, (480, 640), settings, "front")
        assert problems == ["no scan within 0.05 s"]  # taken once
    # The frame at `at` in the model for 2 s of a 30 Hz camera: 60 frames come, each replacing
    # the one pending before it (only a handful are held at once), and 2 s of a 20 Hz scan.
    sources = RangeSources()
    sources.expect("front", at)
    frames = [at + i * 10**9 // 30 for i in range(1, 61)]
    for i, ns in enumerate(frames):
        sources.expect("front", ns, replaced=i > 0)
    for i in range(41):
        sources.add("scan", scan_at(at + i * 50_000_000, 3.0))
    points, _, problems = sources.anchors(header_at(at), None, (480, 640), settings, "front")
    assert problems == [] and np.allclose(np.linalg.norm(points, axis=1), 3.0)
    for i in range(KEEP):  # the newest frame's own scan, then 20 more
        sources.add("scan", scan_at(frames[-1] + (i + 1) * 10**9, 5.0))
    sources.anchors(header_at(frames[-1]), None, (480, 640), settings, "front")
    _, _, problems = sources.anchors(header_at(frames[-2]), None, (480, 640), settings, "front")
    assert problems == ["no scan within 0.05 s"]  # dropped: not held
    failed, taken = frames[-1] + 100 * 10**9, frames[-1] + 101 * 10**9
    sources.expect("front", failed)  # taken by the model, failed before its anchors
    sources.expect("front", taken)
    sources.add("scan", scan_at(failed, 1.0))
    sources.anchors(header_at(taken), None, (480, 640), settings, "front")
    for i in range(KEEP):
        sources.add("scan", scan_at(taken + (i + 1) * 10**9, 5.0))
    _, _, problems = sources.anchors(header_at(failed), None, (480, 640), settings, "front")
    assert problems == ["no scan within 0.05 s"]  # older than a frame taken: not held


def test_the_parameters_transforms_join_and_override_the_heard_ones():
    """A bag's /tf_static (a URDF's mount, 1 m off) and the static_transforms parameter
    correcting that one mount: the frames chained through both, the parameter's transform of
    the frame it gives taken (in a bag's /tf too); the node's tf2 frames are handed the
    parameter's transforms to join with what they heard."""
    from sensor_msgs.msg import Image, LaserScan

    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.range_sources import RangeSources

    msg = LaserScan(angle_min=-0.1, angle_increment=0.1, range_min=0.1, range_max=10.0)
    msg.ranges = [2.0, 2.0, 2.0]
    msg.header.frame_id = "laser"
    msg.header.stamp.sec = 7
    image = Image()
    image.header.frame_id = "cam"
    image.header.stamp.sec = 7
    own = range_data.scan_points(msg)
    settings = OutputSettings(
        metric_scale="scale",
        metric_scale_sources=("scan",),
        static_transforms=("0 0 0.5 0 0 0 base laser",),  # the mount as it is
        metric_scale_fixed_frame="",  # the robot still (the stand-in tf2 joins any frames)
    )
    wrong_mount, camera = "0 0 1.5 0 0 0 base laser", "0 0 0 0 0 0 base cam"
    from_tf_static, from_tf = RangeSources(), RangeSources()
    for text in (wrong_mount, camera):
        from_tf_static.add_transform(transforms.parse_static_transform(text))
        mount = transforms.parse_static_transform(text)
        for sec in (6.9, 7.1):  # /tf either side of the scan's stamp
            from_tf.moving.add(stamped(mount.parent, mount.child, sec, mount.translation))
    for sources in (from_tf_static, from_tf):
        sources.add("scan", msg)
        points, _, problems = sources.anchors(image.header, None, (480, 640), settings)
        assert problems == []
        np.testing.assert_allclose(points, own + [0.0, 0.0, 0.5])  # not 1.5
    sources = RangeSources()
    sources.add("scan", msg)
    sources.frames = RecordedFrames(transforms.parse_static_transform("0 0 0.5 0 0 0 cam laser"))
    points, _, problems = sources.anchors(image.header, None, (480, 640), settings)
    assert problems == [] and sources.frames.given == [[("base", "laser")]]


def scan(ranges, angle_min=-0.5, increment=0.25, range_min=0.1, range_max=10.0):
    return types.SimpleNamespace(
        ranges=ranges,
        angle_min=angle_min,
        angle_increment=increment,
        range_min=range_min,
        range_max=range_max,
    )


def test_a_scans_valid_rays_are_its_points():
    ranges = [1.0, float("nan"), float("inf"), 0.05, 11.0, 2.0]
    points = range_data.scan_points(scan(ranges))
    angles = -0.5 + 0.25 * np.array([0, 5])
    expected = np.stack([[1, 2] * np.cos(angles), [1, 2] * np.sin(angles), [0, 0]], axis=1)
    np.testing.assert_allclose(points, expected)
    with pytest.raises(AnchorError, match="angle_increment 0.0"):
        range_data.scan_points(scan([1.0], increment=0.0))
    assert range_data.scan_points(scan([])).shape == (0, 3)


def test_the_ground_is_the_floors_exact_depth_in_the_built_in_scenes():
    """A level camera 1.3 m above the corridor's floor: the floor's points' depth is the
    scene's own depth at their pixels."""
    _, truth = render_scene("corridor")
    points = anchors.ground_points(K, truth.shape, height=1.3, pitch=0.0, step=16)
    u = np.rint(FX * points[:, 0] / points[:, 2] + CX).astype(int)
    v = np.rint(FY * points[:, 1] / points[:, 2] + CY).astype(int)
    # The floor where the corridor's walls (1.2 m to each side) and far wall (9 m) leave it seen
    on_floor = (np.abs(points[:, 0]) < 1.19) & (points[:, 2] < 8.9)
    assert on_floor.sum() > 50
    np.testing.assert_allclose(points[on_floor, 2], truth[v, u][on_floor], rtol=1e-3)
    with pytest.raises(AnchorError, match="sees no floor"):
        anchors.ground_points(K, truth.shape, height=1.3, pitch=-1.4)
    with pytest.raises(AnchorError, match="height above the floor > 0 m"):
        anchors.ground_points(K, truth.shape, height=0.0, pitch=0.0)


def depth_image(values, encoding, dtype, bigendian=False):
    from sensor_msgs.msg import Image

    array = np.asarray(values, dtype).astype(
        np.dtype(dtype).newbyteorder(">" if bigendian else "<")
    )
    height, width = array.shape
    padded = np.zeros((height, width * array.itemsize + 4), np.uint8)  # rows with padding
    padded[:, : width * array.itemsize] = array.view(np.uint8).reshape(height, -1)
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=padded.shape[1],
        data=padded.tobytes(),
    )


def test_depth_images_in_metres_from_either_encoding():
    mm = [[0, 1500], [2000, 65535]]
    for bigendian in (False, True):
        got = range_data.depth_image_metres(depth_image(mm, "16UC1", np.uint16, bigendian))
        np.testing.assert_allclose(got, [[0, 1.5], [2, 65.535]], rtol=1e-6)
    metres = [[0.5, np.nan], [2.0, 0.0]]
    got = range_data.depth_image_metres(depth_image(metres, "32FC1", np.float32))
    np.testing.assert_array_equal(got, np.asarray(metres, np.float32))
    with pytest.raises(AnchorError, match="'rgb8'"):
        range_data.depth_image_metres(depth_image(mm, "rgb8", np.uint16))
    short = depth_image(mm, "16UC1", np.uint16)
    short.data = short.data[:5]
    with pytest.raises(AnchorError, match="2x2 16UC1 depth image with step 8 and 5 bytes"):
        range_data.depth_image_metres(short)


def test_a_registered_depth_image_is_the_scenes_points_through_the_images_k():
    """Source depth: a 16UC1 depth image of the room registered to the camera, paired by stamp,
    is the room's own points (millimetre rounding); another size or encoding is one line and no
    points, the frame's other sources unaffected."""
    from helpers import camera_info, stamp
    from sensor_msgs.msg import Image

    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.range_sources import RANGE_POINTS, RangeSources

    _, truth = render_scene("room")
    info = camera_info(fx=FX, fy=FY, cx=CX, cy=CY)
    mm = np.rint(truth * 1000).astype(np.uint16)
    sources = RangeSources()
    sources.add("depth", stamp(depth_image(mm, "16UC1", np.uint16), 7))
    header = stamp(Image(), 7).header
    settings = OutputSettings(
        metric_scale="scale", metric_scale_sources=("depth", "ground"), ground_height=1.3
    )
    points, k, problems = sources.anchors(header, info, truth.shape, settings)
    np.testing.assert_allclose(k, K)
    seen = points[: len(points) - len(anchors.ground_points(K, truth.shape, 1.3, 0.0))]
    assert problems == [] and RANGE_POINTS // 2 < len(seen) <= RANGE_POINTS
    u = np.rint(FX * seen[:, 0] / seen[:, 2] + CX).astype(int)
    v = np.rint(FY * seen[:, 1] / seen[:, 2] + CY).astype(int)
    np.testing.assert_allclose(seen[:, 2], truth[v, u], atol=5e-4)
    for wrong, words in (
        (depth_image(mm[::2, ::2], "16UC1", np.uint16), "a 320x240 depth image for a 640x480"),
        (depth_image(mm, "rgb8", np.uint16), "a depth image in 'rgb8'"),
    ):
        sources.add("depth", stamp(wrong, 8))
        points, _, problems = sources.anchors(
            stamp(Image(), 8).header, info, truth.shape, settings
        )
        assert len(problems) == 1 and problems[0].startswith(words)
        assert len(points) == len(anchors.ground_points(K, truth.shape, 1.3, 0.0))


def test_a_cloud_is_kept_as_its_read_points_and_one_it_cannot_read_as_its_one_line():
    """Source points: a cloud is read as it comes (RANGE_POINTS of a lidar's 20,000 points,
    in the camera's frame as given): its message is not kept (a lidar's clouds are megabytes,
    20 of them held); a cloud without z is one line when a frame takes it, no points, the
    frame's other sources unaffected."""
    import gc
    import weakref

    from helpers import camera_info, stamp
    from range_factory import cloud_of
    from sensor_msgs.msg import Image

    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.range_sources import RANGE_POINTS, RangeSources

    info = camera_info(fx=FX, fy=FY, cx=CX, cy=CY)
    rng = np.random.default_rng(0)
    xyz = np.stack([rng.uniform(-1, 1, 20000), rng.uniform(-1, 1, 20000), np.full(20000, 3.0)])
    cloud = cloud_of(xyz.T, 7, "camera_optical_frame")
    data = weakref.ref(cloud.data)
    sources = RangeSources()
    sources.add("points", cloud)
    del cloud
    gc.collect()
    assert data() is None
    settings = OutputSettings(
        metric_scale="scale", metric_scale_sources=("points", "ground"), ground_height=1.3
    )
    floor = len(anchors.ground_points(K, (480, 640), 1.3, 0.0))
    points, _, problems = sources.anchors(stamp(Image(), 7).header, info, (480, 640), settings)
    assert problems == [] and len(points) - floor == RANGE_POINTS
    np.testing.assert_array_equal(points[:RANGE_POINTS, 2], 3.0)
    flat = cloud_of(xyz.T, 8, "camera_optical_frame")
    flat.fields = flat.fields[:2]
    sources.add("points", flat)
    points, _, problems = sources.anchors(stamp(Image(), 8).header, info, (480, 640), settings)
    assert problems == ["a PointCloud2 without z fields (it has x, y)"]
    assert len(points) == floor
    # Whatever else a message holds, one line too (read on the executor: no exception there)
    odd = types.SimpleNamespace(**{k: getattr(flat, k) for k in ("header", "height", "data")})
    odd.header = stamp(Image(), 9).header
    odd.fields, odd.width = cloud_of(xyz.T, 9, "camera_optical_frame").fields, "many"
    sources.add("points", odd)
    points, _, problems = sources.anchors(odd.header, info, (480, 640), settings)
    assert problems == [
        "a PointCloud2 not read: ValueError: invalid literal for int() with base 10: 'many'"
    ]


@pytest.mark.parametrize(
    "count, lasers", [(4097, 1), (6000, 1), (28800, 16), (57600, 32), (131072, 128)]
)
def test_a_large_clouds_sample_keeps_every_laser_and_azimuth_alike(count, lasers):
    """About 4096 of a cloud's indices, increasing, each once; of a lidar's cloud (a VLP-16's
    28,800 points, an OS1-128's 131,072) every laser, ring and azimuth alike, in either order
    drivers publish (laser-major: 16 lasers an azimuth; ring-major: an organized cloud), where
    every k-th point would keep 2 lasers of 16 (k = 8) or a few columns of each ring."""
    taken = range_data.spread_sample(count, 4096)
    assert (np.diff(taken) > 0).all() and taken[0] >= 0 and taken[-1] < count
    assert 0.7 * 4096 <= len(taken) <= 4096
    if lasers == 1:
        return
    width = count // lasers
    for kept in (
        taken % lasers,  # laser-major: each laser
        (taken // lasers) * 64 // width,  # laser-major: 64 sectors of azimuth
        taken // width,  # ring-major: each ring
        (taken % width) * 64 // width,  # ring-major: 64 sectors of azimuth
    ):
        seen = np.bincount(kept)
        assert len(seen) in (lasers, 64) and 0.75 * seen.mean() <= seen.min()
        assert seen.max() <= 1.25 * seen.mean()


def test_a_point_clouds_xyz_whatever_its_layout():
    from sensor_msgs.msg import PointCloud2, PointField

    xyz = np.array([[1.0, 2.0, 3.0], [np.nan, 0, 0], [-1.0, 0.5, 4.0], [0, 0, 1]], np.float64)
    # float64 x, y, z after an intensity, two rows of two, each row padded by 8 bytes
    layout = np.dtype([("intensity", "<f4"), ("x", "<f8"), ("y", "<f8"), ("z", "<f8")])
    points = np.zeros(4, layout)
    points["x"], points["y"], points["z"] = xyz.T
    rows = points.view(np.uint8).reshape(2, -1)
    data = np.concatenate([rows, np.zeros((2, 8), np.uint8)], axis=1).tobytes()
    fields = [
        PointField(name="intensity", offset=0, datatype=PointField.FLOAT32, count=1),
        *(
            PointField(name=n, offset=4 + 8 * i, datatype=PointField.FLOAT64, count=1)
            for i, n in enumerate("xyz")
        ),
    ]
    cloud = PointCloud2(
        height=2,
        width=2,
        fields=fields,
        is_bigendian=False,
        point_step=layout.itemsize,
        row_step=2 * layout.itemsize + 8,
        data=data,
        is_dense=False,
    )
    np.testing.assert_array_equal(range_data.cloud_points(cloud), xyz[[0, 2, 3]])
    # At most 2 or 3 of its 4 points: those spread_sample picks, read past the rows' padding
    for at_most in (2, 3):
        (kept,) = np.nonzero(np.isin(np.arange(4), range_data.spread_sample(4, at_most)))
        kept = kept[kept != 1]  # the NaN point
        np.testing.assert_array_equal(range_data.cloud_points(cloud, at_most), xyz[kept])
    np.testing.assert_array_equal(range_data.cloud_points(cloud, at_most=4), xyz[[0, 2, 3]])
    big_endian = points.astype(layout.newbyteorder(">")).view(np.uint8).reshape(2, -1)
    cloud.data = np.concatenate([big_endian, np.zeros((2, 8), np.uint8)], axis=1).tobytes()
    cloud.is_bigendian = True
    np.testing.assert_array_equal(range_data.cloud_points(cloud), xyz[[0, 2, 3]])
    cloud.fields = fields[:2]
    with pytest.raises(AnchorError, match="a PointCloud2 without y, z fields"):
        range_data.cloud_points(cloud)


# -- projection and fit ---------------------------------------------------------------------


def distorted(truth_grid, scale, shift):
    """The model's coarse depth for a truth it gets wrong by d = (z - shift) / scale."""
    return (truth_grid - shift) / scale


@pytest.mark.parametrize("scene", ["corridor", "room"])
def test_scale_and_shift_recovered_from_anchors_on_the_truth(scene):
    _, truth = render_scene(scene)
    coarse = distorted(grid_of(truth), 1.7, 0.3)
    projection = project(points_of(truth), K, REGION, coarse, coarse_bins(coarse))
    result = fit.fit(projection, "scale_shift", 8, (0.2, 5.0))
    assert result.fitted and result.reason == ""
    assert result.scale == pytest.approx(1.7, rel=0.02)
    assert result.shift == pytest.approx(0.3, abs=0.05)
    assert result.cells <= GRID[0] * GRID[1] < result.used  # several anchors a cell
    assert result.inliers >= 0.8 * result.used


def coarse_bins(coarse):
    """Bins spanning the model's depths with room at each end (nothing saturated)."""
    return np.linspace(0.5 * np.nanmin(coarse), 1.5 * np.nanmax(coarse), 8)


@pytest.mark.parametrize("outliers", [0.1, 0.3])
def test_outliers_in_the_anchors_leave_the_fit_where_the_truth_is(outliers):
    _, truth = render_scene("room")
    coarse = distorted(grid_of(truth), 0.6, -0.2)
    points = cell_points(truth)
    rng = np.random.default_rng(1)
    # Glass, people: anchors at other depths than the camera's surface (one anchor a cell, as
    # nearer returns in a cell would be taken before the surface's)
    bad = rng.random(len(points)) < outliers
    points[bad] *= rng.uniform(0.3, 2.0, bad.sum())[:, None]
    projection = project(points, K, REGION, coarse, coarse_bins(coarse))
    result = fit.fit(projection, "scale_shift", 8, (0.2, 5.0))
    assert result.scale == pytest.approx(0.6, rel=0.03)
    assert result.shift == pytest.approx(-0.2, abs=0.05)
    # Where the fit speaks: the model depths of the anchors that agree with it, not the
    # outliers' (whose pixels the room's nearest and farthest surfaces may hold).
    agreeing = (
        np.abs((0.6 * projection.model - 0.2) / projection.z - 1) < fit.INLIER_RELATIVE_ERROR
    )
    assert result.model_span == pytest.approx(
        (projection.model[agreeing].min(), projection.model[agreeing].max()), rel=1e-9
    )


@pytest.mark.parametrize("outliers", [0.0, 0.3])
def test_a_lidar_above_the_camera_seeing_past_a_box_still_fits_the_view(outliers):
    """Lidar-camera parallax: a 3D lidar 0.3 m above the camera sees past the top of a box
    1.2 m ahead to floor the camera cannot see (12 % of its returns in view land on the box,
    farther than it), which pulls least squares, and Huber from it, into a fit only the far
    wall agrees with (AbsRel 0.53 before 2026-11-28): the fit is within 0.03 of the
    every-pixel fit's AbsRel, with 30 % spurious returns too (the benchmark's scene)."""
    from bench.metric_scale_bench import (
        corrupted,
        every_pixel_fit,
        parallax_sample,
        scores,
        synthetic_result,
    )

    _, truth, k, sets = parallax_sample()
    model = synthetic_result(truth)
    anchors = corrupted(next(iter(sets.values())), outliers, 0.01, np.random.default_rng(0))
    projection = project(anchors, k, model.region, model.coarse_depth[0], model.bins)
    result = fit.fit(projection, "scale_shift", 8, (0.2, 5.0))
    calibrated = scores(truth, result.scale * model.depth[0] + result.shift)["abs_rel"]
    assert calibrated < scores(truth, every_pixel_fit(truth, model.depth[0]))["abs_rel"] + 0.03


def test_anchors_at_one_depth_fit_a_scale_only_and_say_so():
    wall = np.full((480, 640), 3.0)
    coarse = grid_of(wall) / 1.5 + np.random.default_rng(0).normal(0, 0.01, GRID)
    projection = project(points_of(wall), K, REGION, coarse, BINS)
    result = fit.fit(projection, "scale_shift", 8, (0.2, 5.0))
    assert result.mode == "scale" and result.reason == "anchors at one depth: scale only"
    assert result.scale == pytest.approx(1.5, rel=0.01) and result.shift == 0.0
    # The shift asked for and unseen is uncertain (std and clearing's lower bound carry it);
    # asked for a scale alone, there is none.
    assert result.shift_std == pytest.approx(fit.MIN_SPREAD * 3.0, rel=0.02)
    assert fit.fit(projection, "scale", 8, (0.2, 5.0)).shift_std == 0.0


def test_a_fit_without_enough_anchors_or_outside_the_range_is_refused_with_the_reason():
    _, truth = render_scene("room")
    coarse = grid_of(truth)
    few = fit.fit(project(points_of(truth)[:3], K, REGION, coarse, BINS), "scale", 8, (0.2, 5.0))
    assert not few.fitted and few.reason == "anchors in 1 feature cell, 8 needed"  # 3 side by side
    far = project(points_of(truth) * 10, K, REGION, coarse, BINS)
    refused = fit.fit(far, "scale", 8, (0.2, 5.0))
    assert not refused.fitted and refused.reason.startswith("scale 10 outside [0.2, 5]")


def test_anchors_behind_outside_at_edges_and_at_the_last_bin_are_left_out():
    coarse = np.full(GRID, 2.0)
    coarse[:, 10:] = 4.0  # a depth edge between columns 9 and 10
    coarse[0, 0] = 7.9  # the last bin's: beyond what the model can say
    cols = np.arange(GRID[1]) * (639 / (GRID[1] - 1))
    rows = np.arange(GRID[0]) * (479 / (GRID[0] - 1))
    uu, vv = np.meshgrid(cols, rows)
    z = np.where(uu < 300, 2.0, 4.0)
    points = np.stack([(uu - CX) * z / FX, (vv - CY) * z / FY, z], -1).reshape(-1, 3)
    behind = np.array([[0.0, 0.0, -1.0]])
    outside = np.array([[10.0, 0.0, 1.0]])  # far to the right of the image
    projection = project(np.concatenate([points, behind, outside]), K, REGION, coarse, BINS)
    assert projection.received == GRID[0] * GRID[1] + 2
    assert projection.in_image == GRID[0] * GRID[1]
    used_cols = np.rint(projection.pixels[:, 0] * (GRID[1] - 1) / 639).astype(int)
    used_rows = np.rint(projection.pixels[:, 1] * (GRID[0] - 1) / 479).astype(int)
    assert 9 not in used_cols and 10 not in used_cols  # the edge's cells
    assert (0, 0) not in set(zip(used_rows.tolist(), used_cols.tolist()))
    assert len(projection.z) == GRID[0] * (GRID[1] - 2) - 1
    np.testing.assert_allclose(projection.model, projection.z)


def test_each_feature_cell_counts_once_however_many_anchors_it_holds():
    """A 2D lidar's 40 returns off a person in one cell against one return in each of 12
    cells of the wall behind: the cells outvote the rays (the fit is the wall's); each anchor
    weighs 1 / its cell's anchors."""
    wall = np.full((480, 640), 3.0)
    coarse = grid_of(wall) / 1.5
    rows = np.arange(2, 14)
    wall_points = cell_points(wall)[rows * GRID[1] + 5]  # column 5, rows 2-13
    # 1 m away, 40 rays within 5 pixels of the centre of cell (7, 12)
    u = 12 * 639 / (GRID[1] - 1) + np.linspace(-5, 5, 40)
    v = 7 * 479 / (GRID[0] - 1)
    person = np.stack([(u - CX) / FX, np.full(40, (v - CY) / FY), np.ones(40)], axis=1)
    projection = project(np.concatenate([wall_points, person]), K, REGION, coarse, BINS)
    assert projection.cells == 13 and len(projection.z) == 52
    np.testing.assert_allclose(projection.weights[projection.z == 1.0], 1 / 40)
    np.testing.assert_allclose(projection.weights[projection.z == 3.0], 1.0)
    result = fit.fit(projection, "scale", 8, (0.2, 5.0))
    assert result.scale == pytest.approx(1.5, rel=1e-6)
    assert (result.used, result.cells, result.inliers) == (52, 13, 12)


# -- tracking and application ---------------------------------------------------------------


def fit_of(scale, shift=0.0, std=0.003):
    return fit.Fit(
        "scale_shift", scale, shift, std, std, 100, 100, 90, 85, 0.01, model_span=(1.0, 3.0)
    )


def test_a_still_view_holds_the_scale_and_a_glass_frame_moves_it_by_nothing():
    tracker = tracking.ScaleTracker()
    rng = np.random.default_rng(0)
    logs = []
    for frame in range(90):  # 3 s at 30 Hz, each frame's fit 3 % off
        stamp = frame / 30
        tracker.update(fit_of(1.5 * np.exp(rng.normal(0, 0.03))), stamp, 1.0, 3.0)
        logs.append(np.log(tracker.calibration(stamp, 1.0).scale))
    assert np.std(logs[30:]) < 0.01
    before = tracker.calibration(3.0, 1.0).scale
    tracker.update(fit_of(before * 1.6), 3.0, 1.0, 3.0)  # every anchor through glass
    assert tracker.calibration(3.0, 1.0).scale == pytest.approx(before, rel=0.01)
    assert tracker.rejected == 1


def test_fits_that_scatter_along_equal_depths_agree_and_the_state_is_their_mean():
    """Anchors that span little depth (model depths 1.0 to 1.2, a lidar plane on a far
    wall) tell s m + t there, not s and t apart: their fits scatter along the line of equal
    depths. A first fit far along it (log s 0.35 off) is no glass frame: the state is the
    fits' mean, not that first fit holding off every later one; a glass frame is still
    left out."""
    tracker = tracking.ScaleTracker()
    rng = np.random.default_rng(0)

    def along(log_scale_error):
        scale = 3.0 * np.exp(log_scale_error)  # the truth: 3 m - 1, 2.3 m at m = 1.1
        return dataclasses.replace(
            fit_of(scale, 2.3 - 1.1 * scale, std=0.1), model_span=(1.0, 1.2)
        )

    tracker.update(along(0.35), 0.0, 2.0, 2.3)
    for frame in range(1, 60):  # 4 s at 15 Hz
        tracker.update(along(rng.normal(0, 0.1)), frame / 15, 2.0, 2.3)
    state = tracker.calibration(59 / 15, 2.0)
    assert tracker.rejected == 0 and tracker.restarts == 0
    assert np.log(state.scale / 3.0) == pytest.approx(0.0, abs=0.03)
    assert state.scale * 1.1 + state.shift == pytest.approx(2.3, rel=0.01)
    glass = dataclasses.replace(
        fit_of(1.6 * state.scale, 1.6 * state.shift, std=0.1), model_span=(1.0, 1.2)
    )
    tracker.update(glass, 4.0, 2.0, 3.7)
    assert tracker.rejected == 1
    assert tracker.calibration(4.0, 2.0).scale == state.scale


def test_a_fit_that_says_it_knows_less_moves_the_state_less():
    """Each fit weighs the inverse of its variance of log s: a fit with three times the std
    of the state's one fit moves it by a tenth of the way, not half."""
    tracker = tracking.ScaleTracker()
    tracker.update(fit_of(1.0, std=0.02), 0.0, 1000.0, 3.0)
    tracker.update(fit_of(np.exp(0.05), std=0.06), 1e-3, 1000.0, 3.0)
    assert np.log(tracker.calibration(1e-3, 1000.0).scale) == pytest.approx(0.005, rel=1e-3)


def test_a_scale_that_changes_and_stays_settles_within_a_second():
    tracker = tracking.ScaleTracker()
    for frame in range(60):
        tracker.update(fit_of(1.0), frame / 30, 1.0, 3.0)
    for frame in range(60, 120):  # a new lens: the scale is 2 from here on
        tracker.update(fit_of(2.0), frame / 30, 1.0, 3.0)
        if tracker.calibration(frame / 30, 1.0).scale == pytest.approx(2.0, rel=0.01):
            break
    assert (frame - 60) / 30 <= 1.0 and tracker.restarts == 1


@pytest.mark.parametrize("seed", range(4))
def test_noisy_fits_of_a_change_restart_at_their_mean_and_settle_within_a_second(seed):
    """Fits 2 % apart frame to frame: the state restarts from their mean, not from the first
    that disagreed, and is within 1 % of the new scale from a second after the change on
    (15 Hz frames, a 2 s half-life), however the noise falls."""
    tracker = tracking.ScaleTracker()
    rng = np.random.default_rng(seed)

    def noisy(scale):
        return fit_of(scale * np.exp(rng.normal(0, 0.02)))

    for frame in range(45):
        tracker.update(noisy(1.0), frame / 15, 2.0, 3.0)
    settled = []
    for frame in range(45, 90):  # the scale is 1.2 from here on
        tracker.update(noisy(1.2), frame / 15, 2.0, 3.0)
        settled.append(tracker.calibration(frame / 15, 2.0).scale == pytest.approx(1.2, rel=0.01))
    assert tracker.restarts == 1
    assert all(settled[15:])  # from one second after the change on


def test_a_state_of_few_fits_takes_the_next_as_a_mean_does():
    """The first fits (and a restart's) weigh alike: three fits within a tiny fraction of a
    half-life give their mean, not mostly the first's."""
    tracker = tracking.ScaleTracker()
    for frame, log_scale in enumerate((0.0, 0.06, 0.09)):
        tracker.update(fit_of(np.exp(log_scale)), frame * 1e-3, 1000.0, 3.0)
    assert np.log(tracker.calibration(2e-3, 1000.0).scale) == pytest.approx(0.05, rel=1e-3)


def test_per_bin_offsets_are_mixed_as_the_scale_is_and_restart_with_it():
    tracker = tracking.ScaleTracker()
    first = dataclasses.replace(fit_of(1.0), mode="bins", bin_offsets=(0.0, 0.2, -0.1))
    tracker.update(first, 0.0, 1.0, 3.0)
    assert tracker.calibration(0.0, 1.0).offsets == (0.0, 0.2, -0.1)
    second = dataclasses.replace(first, scale=1.05, bin_offsets=(0.3, 0.0, 0.2))
    tracker.update(second, 1.0, 1.0, 3.0)  # one half-life later: the first weighs half
    calibration = tracker.calibration(1.0, 1.0)
    np.testing.assert_allclose(calibration.offsets, (0.2, 0.0 + 0.2 / 3, 0.1))
    assert np.log(calibration.scale) == pytest.approx(np.log(1.05) * 2 / 3)
    moved = calibration.scale * np.array([1.0, 2.0, 3.0]) + (0.2, 0.2 / 3, 0.1)
    np.testing.assert_allclose(calibration.bins([1.0, 2.0, 3.0]), moved, rtol=1e-6)
    # A scale alone (mode bins fell back: the anchors at one depth): the offsets are kept
    # (CameraScale leaves them out where the mode is no longer bins).
    tracker.update(fit_of(1.0), 2.0, 1.0, 3.0)
    np.testing.assert_allclose(tracker.calibration(2.0, 1.0).offsets, calibration.offsets)


def test_a_fit_after_a_long_gap_begins_again_and_a_short_one_is_gated():
    """Without fits for more than the temporal filter's gap (4 half-lives) the state is stale:
    the next fit is taken as it is, where within the gap it would be a glass frame."""
    tracker = tracking.ScaleTracker()
    for frame in range(30):
        tracker.update(fit_of(1.0), frame / 30, 1.0, 3.0)
    tracker.update(fit_of(1.5), 3.9, 1.0, 3.0)  # 2.9 s (half-lives) after the last fit
    assert tracker.calibration(3.9, 1.0).scale == pytest.approx(1.0) and tracker.rejected == 1
    tracker.update(fit_of(1.5), 9.0, 1.0, 3.0)  # 8 half-lives after it
    assert tracker.calibration(9.0, 1.0).scale == pytest.approx(1.5)


def test_without_fits_the_scales_std_grows():
    tracker = tracking.ScaleTracker()
    tracker.update(fit_of(1.0), 0.0, 1.0, 3.0)
    stds = [tracker.calibration(t, 1.0).log_scale_std for t in (0.0, 1.0, 4.0)]
    assert stds[0] < stds[1] < stds[2]
    assert tracker.calibration(4.0, 1.0).age == 4.0
    assert tracking.ScaleTracker().calibration(0.0, 1.0) is None


def test_the_calibrated_result_is_the_same_distribution_over_moved_bins():
    """Applying s, t to a result equals the result over the bins s b + t (the probabilities
    unchanged): depth, std (no calibration uncertainty), coarse depth; bins moved; the lower
    bins below."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(BINS)), size=GRID).transpose(2, 0, 1)[None]  # (1,K,h,w)

    def result_over(bins):
        mean = np.einsum("bkhw,k->bhw", probs, bins)
        var = np.einsum("bkhw,k->bhw", probs, bins**2) - mean**2
        from depthclip_ros.estimator.result import DepthResult

        return DepthResult(
            depth=mean.astype(np.float32).copy(),
            depth_std=np.sqrt(var).astype(np.float32),
            coarse_depth=mean.astype(np.float32),
            coarse_std=np.sqrt(var).astype(np.float32),
            bin_probs=probs,
            bins=bins.astype(np.float32),
            region=REGION,
        )

    calibration = tracking.Calibration(1.7, 0.3, 0.0, 0.0, 0.0)
    got = result_over(BINS)
    got.depth.flags.writeable = False  # as Ray hands it back
    calibration.apply(got, 0)
    want = result_over(1.7 * BINS + 0.3)
    for name in ("depth", "depth_std", "coarse_depth", "coarse_std"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-5)
    np.testing.assert_allclose(got.image_bins[0], 1.7 * BINS + 0.3, rtol=1e-6)
    uncertain = tracking.Calibration(1.7, 0.3, 0.05, 0.1, 0.0)
    assert np.all(uncertain.lower_bins(BINS) < calibration.bins(BINS))
    wider = result_over(BINS)
    uncertain.apply(wider, 0)
    assert np.all(wider.depth_std > want.depth_std)


def test_calibrating_the_cores_result_equals_the_core_over_the_moved_bins(make_config):
    """The tiny CLIP's result calibrated by (1.7, 0.3) equals the core's own over the bins
    1.7 b + 0.3: the full-resolution depth and std, the grid's, the bins (the std without the
    calibration's uncertainty)."""
    from helpers import structured_image

    from depthclip_ros.estimator.core import DepthClip

    config = make_config(input_width=128, input_height=96)
    image = structured_image(120, 160)
    got = DepthClip(config).predict(image)
    tracking.Calibration(1.7, 0.3, 0.0, 0.0, 0.0).apply(got, 0)
    moved = tuple(1.7 * b + 0.3 for b in config.depth_bins)
    want = DepthClip(config.replace(depth_bins=moved)).predict(image)
    for name in ("depth", "depth_std", "coarse_depth", "coarse_std"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got.bins_of(0), want.bins, rtol=1e-6)


def moved_bins(bins):
    """A map of the bins no scale and shift makes (each bin on its own): 0.8 b^1.3 + 0.2."""
    return tuple(float(0.8 * b**1.3 + 0.2) for b in bins)


def test_moving_each_bin_equals_the_core_over_the_moved_bins(make_config):
    """Mode bins' application: the tiny CLIP's result over its bins b, calibrated by per-bin
    offsets to b' (no calibration uncertainty), equals the core's own over b': the depth and
    std at full resolution (made again from the grid's probabilities by the depth step's
    upsampling), the grid's, the bins."""
    from helpers import structured_image

    from depthclip_ros.estimator.core import DepthClip
    from depthclip_ros.estimator.temporal_filter import BilinearUpsampling

    config = make_config(input_width=128, input_height=96)
    image = structured_image(120, 160)
    got = DepthClip(config).predict(image)
    target = moved_bins(config.depth_bins)
    affine = 1.7 * np.asarray(config.depth_bins) + 0.3
    offsets = tuple(np.asarray(target) - affine)
    calibration = tracking.Calibration(1.7, 0.3, 0.0, 0.0, 0.0, offsets)
    for name in ("depth", "depth_std"):
        getattr(got, name).flags.writeable = False  # as Ray hands them back
    upsample = BilinearUpsampling(got.coarse_depth.shape[1:], got.region[2:])
    calibration.apply(got, 0, upsample)
    want = DepthClip(config.replace(depth_bins=target)).predict(image)
    for name in ("depth", "depth_std", "coarse_depth", "coarse_std"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(got.bins_of(0), target, rtol=1e-6)
    np.testing.assert_allclose(calibration.lower_bins(config.depth_bins), target, rtol=1e-6)


def smooth_result(with_probs=True, flat=False):
    """A grid-only result whose distributions peak from 1 to 7 m across the view (depths a
    per-bin fit can tell apart), over BINS; `flat`: at 4 m everywhere."""
    from depthclip_ros.estimator.result import DepthResult

    rows, cols = np.meshgrid(np.linspace(0, 1, GRID[0]), np.linspace(0, 1, GRID[1]), indexing="ij")
    centre = np.full_like(rows, 4.0) if flat else 1.0 + 3.0 * (rows + cols)
    probs = np.exp(-((BINS[:, None, None] - centre[None]) ** 2) / (2 * 0.6**2))
    probs /= probs.sum(axis=0)
    mean = np.einsum("khw,k->hw", probs, BINS)
    std = np.sqrt(np.einsum("khw,k->hw", probs, BINS**2) - mean**2)
    return DepthResult(
        depth=None,
        depth_std=None,
        coarse_depth=mean.astype(np.float32)[None],
        coarse_std=std.astype(np.float32)[None],
        bin_probs=probs.astype(np.float32)[None] if with_probs else None,
        bins=BINS.astype(np.float32),
        region=REGION,
    )


def test_leaving_mode_bins_keeps_the_scale_on_frames_without_a_fit():
    """A camera fitted in mode bins, switched to mode scale: its next frame brings no bin
    probabilities (the node no longer fetches them) and no anchors: it takes the tracked scale
    and shift alone, no error."""
    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.camera_scale import CameraScale

    camera = CameraScale()
    bins_mode = OutputSettings(metric_scale="bins", metric_scale_min_anchors=8)
    first = smooth_result()
    truth = np.einsum("khw,k->hw", first.bin_probs[0], np.asarray(moved_bins(BINS)))
    anchors = cell_points(np.kron(truth, np.ones((32, 32))))  # each cell's truth at its pixel
    assert camera.apply(first, 0, anchors, K, 0.0, bins_mode).offsets
    # The free fit of these bins would put the first below 0 m: held at 0.05 m, and said so.
    assert camera.moved_bins
    assert camera.words(bins_mode)["metric last fit"] == "bins (nearest bin held at 0.05 m)"
    scale_mode = dataclasses.replace(bins_mode, metric_scale="scale")
    second = smooth_result(with_probs=False)
    calibration = camera.apply(second, 0, np.empty((0, 3)), K, 0.1, scale_mode)
    assert calibration.offsets == () and camera.moved_bins == ()
    np.testing.assert_allclose(
        second.coarse_depth,
        calibration.scale * smooth_result().coarse_depth + calibration.shift,
        rtol=1e-5,
    )


def test_a_fit_that_falls_back_to_a_scale_says_so_in_diagnostics():
    """Mode bins (or scale_shift) over a model that sees one depth: the frame is fitted in
    mode scale, and /diagnostics' `metric last fit` says so and why."""
    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.camera_scale import CameraScale

    camera = CameraScale()
    settings = OutputSettings(metric_scale="bins", metric_scale_min_anchors=8)
    result = smooth_result(flat=True)
    anchors = cell_points(np.full((480, 640), 1.5 * float(np.median(result.coarse_depth))))
    assert camera.apply(result, 0, anchors, K, 0.0, settings).scale == pytest.approx(1.5)
    words = camera.words(settings)
    assert words["metric scale mode"] == "bins"
    assert words["metric last fit"] == "scale (anchors at one depth: scale only)"


def test_a_new_mount_restarts_the_scale_where_the_same_one_gates_a_jump():
    """A camera at 15 Hz fitted to anchors 1.5 times the model's depth: the next frame's
    anchors 2.5 times it under the same mount disagree and leave the scale (a glass frame); the
    same under a new static_transforms (or, for the source ground, a new ground_height) are the
    new scale at once: the old was fitted to anchors placed wrong. A ground_height that no
    source uses changes nothing."""
    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.metric_scale.camera_scale import CameraScale

    settings = OutputSettings(metric_scale="scale", metric_scale_min_anchors=8)
    moved = dataclasses.replace(settings, static_transforms=("0 0 0.1 0 0 0 laser camera",))
    grounded = dataclasses.replace(
        settings, metric_scale_sources=("points", "ground"), ground_height=1.0
    )
    result = smooth_result(with_probs=False)
    model = result.coarse_depth[0].astype(np.float64)
    depth = np.kron(model, np.ones((480 // GRID[0], 640 // GRID[1])))
    for before, after, taken in (
        (settings, settings, False),
        (settings, moved, True),
        (settings, dataclasses.replace(settings, ground_height=2.0), False),
        (grounded, dataclasses.replace(grounded, ground_height=2.0), True),
        (grounded, dataclasses.replace(grounded, ground_pitch=0.1), True),
    ):
        camera = CameraScale()
        first = smooth_result(with_probs=False)
        calibration = camera.apply(first, 0, cell_points(1.5 * depth), K, 0.0, before)
        assert calibration.scale == pytest.approx(1.5, rel=1e-3)
        second = smooth_result(with_probs=False)
        scale = camera.apply(second, 0, cell_points(2.5 * depth), K, 1 / 15, after).scale
        assert scale == pytest.approx(2.5 if taken else 1.5, rel=1e-3), (before, after)


def test_mode_bins_finds_each_bins_metres_where_a_scale_and_shift_cannot():
    """Anchors at every cell where the truth is the model's distribution over bins moved by a
    map no scale and shift makes: mode bins recovers each moved bin within 2 % (those the
    anchors' distributions weigh most: neighbouring bins share the anchors, so the prior holds
    the little-weighed ones) and fits the anchors to 0.5 %; scale_shift cannot (1.5 %)."""
    model = smooth_result()
    probs, coarse = model.bin_probs[0].astype(np.float64), model.coarse_depth[0]
    truth = np.einsum("khw,k->hw", probs, np.asarray(moved_bins(BINS)))
    points = cell_points(np.kron(truth, np.ones((32, 32))))
    projection = project(points, K, REGION, coarse, BINS, probs)
    assert projection.probs.shape == (len(projection.z), len(BINS))
    by_bins = fit.fit(projection, "bins", 8, (0.2, 5.0), BINS)
    affine = by_bins.scale * BINS + by_bins.shift
    moved = affine + np.asarray(by_bins.bin_offsets)
    weighed = probs.sum(axis=(1, 2)) > 0.15 * GRID[0] * GRID[1]  # the bins most cells weigh
    np.testing.assert_allclose(moved[weighed], np.asarray(moved_bins(BINS))[weighed], rtol=0.02)
    assert np.all(np.diff(moved) > 0)
    by_scale_shift = fit.fit(projection, "scale_shift", 8, (0.2, 5.0))
    assert by_bins.residual_median < 0.005 < by_scale_shift.residual_median


@pytest.mark.parametrize("scene", ["corridor", "room", "near_wall"])
@pytest.mark.parametrize("mode", ["scale", "scale_shift"])
def test_the_floor_alone_gives_the_scale_in_the_built_in_scenes(scene, mode):
    """A level camera at the scene's floor height and nothing else: the model's depth 1.8 times
    too short is put right within 5 % (the floor's anchors where a wall hides it are the robust
    fit's outliers)."""
    from depthclip_ros.synthetic_scenes import SCENES

    _, truth = render_scene(scene)
    coarse = grid_of(truth) / 1.8
    floor_height = SCENES[scene][1]
    points = anchors.ground_points(K, truth.shape, height=floor_height, pitch=0.0)
    result = fit.fit(project(points, K, REGION, coarse, coarse_bins(coarse)), mode, 8, (0.2, 5.0))
    calibrated = result.scale * coarse + result.shift
    assert result.fitted
    assert np.median(calibrated / grid_of(truth)) == pytest.approx(1.0, abs=0.05)


def test_metric_scale_parameters_that_cannot_work_are_refused_in_one_line():
    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.errors import ConfigError

    for changes, field, words in [
        (dict(metric_scale_sources=["scan", "sonar"]), "metric_scale_sources", "distinct items"),
        (dict(metric_scale_sources=["scan", "scan"]), "metric_scale_sources", "distinct items"),
        (dict(static_transforms=["0 0 0 base laser"]), "static_transforms", ": 5 words"),
        (dict(metric_scale_min=1.0, metric_scale_max=1.0), "metric_scale_min", "below"),
        (dict(metric_scale="scale", metric_scale_sources=["ground"]), "ground_height", "> 0"),
    ]:
        with pytest.raises(ConfigError, match=words) as error:
            OutputSettings.from_params(changes)
        assert error.value.field == field and "\n" not in str(error.value)
    ground = OutputSettings.from_params(
        dict(metric_scale="scale", metric_scale_sources="ground", ground_height=0.8)
    )
    assert ground.metric_scale_sources == ("ground",)  # one string as a one-item list


def test_in_a_batch_each_image_keeps_its_own_scenes_bins_and_gets_its_own_scale():
    """Two cameras in one forward under scene_bins auto (each image its scene's bins): the one
    calibrated gets its bins moved and its clearing bins below them; the other keeps its own
    scene's bins for both."""
    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.estimator.depth_quantile import depth_quantile
    from depthclip_ros.estimator.result import DepthResult
    from depthclip_ros.metric_scale.camera_scale import CameraScale

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(BINS)), size=(2, *GRID)).transpose(0, 3, 1, 2)
    image_bins = np.stack([BINS, BINS + 1.0]).astype(np.float32)
    coarse = np.einsum("bkhw,bk->bhw", probs, image_bins).astype(np.float32)
    result = DepthResult(
        depth=None,
        depth_std=None,
        coarse_depth=coarse.copy(),
        coarse_std=None,
        bin_probs=probs.astype(np.float32),
        bins=BINS.astype(np.float32),
        region=REGION,
        image_bins=image_bins.copy(),
        head_keys=("a", "b"),
    )
    u, v = np.meshgrid(*(np.linspace(0, n - 1, c) for n, c in ((640, GRID[1]), (480, GRID[0]))))
    z = 2.0 * coarse[0].astype(np.float64)
    anchors = np.stack([(u - CX) * z / FX, (v - CY) * z / FY, z], -1).reshape(-1, 3)
    settings = OutputSettings(metric_scale="scale", metric_scale_min_anchors=5)
    bins_of_b = result.bins_of(1).copy()
    calibration = CameraScale().apply(result, 0, anchors, K, 0.0, settings)
    assert calibration.scale == pytest.approx(2.0, rel=1e-6)
    np.testing.assert_allclose(result.bins_of(0), 2.0 * BINS, rtol=1e-6)
    assert np.all(result.clearing_bins_of(0) <= result.bins_of(0))
    np.testing.assert_array_equal(result.bins_of(1), bins_of_b)
    np.testing.assert_array_equal(result.clearing_bins_of(1), bins_of_b)
    rows, cols = np.arange(0, 480, 40), np.arange(0, 640, 40)
    np.testing.assert_array_equal(  # the other image's clearing: its own scene's bins
        depth_quantile(result, 1, 0.5, rows, cols),
        depth_quantile(dataclasses.replace(result, clearing_bins=None), 1, 0.5, rows, cols),
    )
