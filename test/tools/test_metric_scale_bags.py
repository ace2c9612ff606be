"""metric_scale through depthclip-bag: a bag recording a LaserScan beside the camera, the scan's
frame given by static_transforms or by the bag's /tf_static: the depth in the scan's scale,
equal to the node's fed by `ros2 bag play` of the same bag, frame by frame (the node hearing
the bag's /tf_static through tf2 where tf2_ros imports); the reasons a frame was not fitted
among the tool's warnings."""

import numpy as np
import pytest
import tf2_from_source
import yaml
from bag_factory import T0_NS, deserialize, frame_stamp, read_bag, write_bag
from bag_player import play
from helpers import VARYING_BINS, model_config, structured_image, wait_until
from range_factory import (
    LASER_TO_OPTICAL,
    anchors_at_the_cells,
    floor_points,
    rosbags_cloud,
    rosbags_depth_image,
    rosbags_mount_tf,
    rosbags_scan,
    rosbags_tf,
    rosbags_tf_static,
    scan_of,
)
from ros_harness import running_node
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image

from depthclip_ros.bag import cli
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.messages import decoding

FRAMES = 6
WIDTH, HEIGHT = 320, 240
K = np.array([[0.8 * WIDTH, 0, WIDTH / 2], [0, 0.8 * WIDTH, HEIGHT / 2], [0, 0, 1]])  # write_bag's
MODEL = dict(input_width=256, input_height=192)  # a 6 x 8 feature grid
COMMON = dict(
    MODEL,
    temperature=1.0,
    metric_scale="scale",
    metric_scale_sources=["scan"],
    metric_scale_min_anchors=5,
)


def scale_of(frame):  # the scene's scale against the model drifts a little, frame by frame
    return 1.5 + 0.03 * frame


def mount_angle(sec, nanosec):
    """The moving mount's yaw at a stamp: turning at 2 rad/s from the recording's start."""
    return 2.0 * ((sec * 10**9 + nanosec) - frame_stamp(0)[0] * 10**9) * 1e-9


# The driving robot: odom -> laser forward at 1 m/s, each scan stamped 20 ms before its image.
SPEED, SCAN_EARLY_NS = 1.0, 20_000_000


def driving_tf(i, store):
    """/tf (rosbags) of the driving robot 25 ms either side of frame i's stamp."""
    sec, nanosec = frame_stamp(i)
    at = [sec * 10**9 + nanosec + offset for offset in (-25_000_000, 25_000_000)]
    odom = "0 0 0 0 0 0 odom laser"
    texts = [(f"{SPEED * (t - T0_NS) * 1e-9!r}{odom[1:]}", *divmod(t, 10**9)) for t in at]
    return rosbags_tf(texts, store)


def write_scan_bag(
    path, results, tf_static=False, scans=FRAMES, moving=None, no_rotation=False, driving=False
):
    """write_bag's camera with a scan of each of the first `scans` frames, logged 50 ms before
    its image (header stamps equal); `tf_static`: the laser's frame in /tf_static too (True:
    LASER_TO_OPTICAL; or static_transform_publisher texts).
    `moving` (a number of frames): the scans in frame tilt_laser, a mount turning on the laser
    (mount_angle), their rays turned back by its angle, and /tf of the first `moving` frames
    giving laser -> tilt_laser 25 ms either side of each frame's stamp. `no_rotation`: the
    first transform of each /tf_static and /tf message with a zero quaternion. `driving`: the
    robot drives (driving_tf on /tf), each scan stamped SCAN_EARLY_NS before its image."""
    store = get_typestore(Stores.ROS2_KILTED)

    def scan(i):
        sec, nanosec = frame_stamp(i if i < scans else i - 10)  # later ones: stamps off by 1 s
        if driving:
            sec, nanosec = divmod(sec * 10**9 + nanosec - SCAN_EARLY_NS, 10**9)
        msg = scan_of(results[i], K, scale_of(i), sec, nanosec)
        if moving is not None:
            msg.header.frame_id = "tilt_laser"
            msg.angle_min -= mount_angle(sec, nanosec)
        return rosbags_scan(msg, store)

    def tf(i):
        if i >= moving:
            return rosbags_tf([], store)
        return broken(rosbags_mount_tf(*frame_stamp(i), mount_angle, store))

    def broken(msg):
        if no_rotation and msg.transforms:
            q = msg.transforms[0].transform.rotation
            q.x = q.y = q.z = q.w = 0.0
        return msg

    extra = {"/scan": (store, "sensor_msgs/msg/LaserScan", scan)}
    if tf_static:
        texts = LASER_TO_OPTICAL if tf_static is True else tf_static
        static = broken(rosbags_tf_static(texts, store))
        extra["/tf_static"] = (store, "tf2_msgs/msg/TFMessage", lambda i: static)
    if moving is not None:
        extra["/tf"] = (store, "tf2_msgs/msg/TFMessage", tf)
    if driving:
        extra["/tf"] = (store, "tf2_msgs/msg/TFMessage", lambda i: driving_tf(i, store))
    write_bag(path, frames=FRAMES, width=WIDTH, height=HEIGHT, extra=extra, extra_at=-50_000_000)


def processed(tmp_path, bag, name, options=(), **params):
    settings = dict(model=str(params.pop("model")), device="cpu", cache_dir=str(tmp_path / "c"))
    settings.update(COMMON, **params)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": settings}}))
    argv = ["process", str(bag), str(tmp_path / name), "--params", str(path), *options]
    assert cli.main(argv) == 0
    messages = read_bag(tmp_path / name)[0]["/cam/depth/image"]
    return [decoding.depth_image_to_array(deserialize(raw, kind)) for _, raw, kind in messages]


def test_a_scan_in_a_bag_scales_the_depth_as_the_node_fed_by_bag_play(
    tmp_path, tiny_checkpoint, capsys
):
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    bag, with_tf = tmp_path / "scan_bag", tmp_path / "tf_bag"
    write_scan_bag(bag, results, scans=FRAMES - 1)
    write_scan_bag(with_tf, results, tf_static=True, scans=FRAMES - 1)
    given = processed(
        tmp_path, bag, "given", model=tiny_checkpoint, static_transforms=LASER_TO_OPTICAL
    )
    # The last frame's scan is a second off its stamp: it keeps the fit and says why.
    assert "/cam/image_raw: metric_scale: no scan within 0.05 s" in capsys.readouterr().err
    from_tf = processed(tmp_path, with_tf, "from_tf", model=tiny_checkpoint)
    assert len(given) == FRAMES
    # The first fit is the first frame's scale; later ones mix in the drifting scale.
    np.testing.assert_allclose(given[0], scale_of(0) * results[0].depth[0], rtol=1e-4)
    for i in range(1, FRAMES):
        ratio = np.nanmedian(given[i] / results[i].depth[0])
        assert scale_of(0) < ratio < scale_of(i)
    for a, b in zip(given, from_tf, strict=True):
        np.testing.assert_array_equal(a, b)
    node = node_fed_by_bag_play(tiny_checkpoint, tmp_path, bag, static_transforms=LASER_TO_OPTICAL)
    for from_bag, from_node in zip(given, node, strict=True):
        np.testing.assert_allclose(from_node, from_bag, atol=1e-6, equal_nan=True)


def test_metric_scale_require_withholds_the_clouds_until_a_first_fit(tmp_path, tiny_checkpoint):
    """metric_scale_require through depthclip-bag: the first 3 frames' scans a second off their
    stamps (nothing to fit): their depth written as the model made it and no cloud of them;
    from the first fit on (1.5 times the model's depth), every frame's depth and clouds."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    store = get_typestore(Stores.ROS2_KILTED)

    def scan(i):
        sec, nanosec = frame_stamp(i if i >= 3 else i - 10)
        return rosbags_scan(scan_of(results[i], K, 1.5, sec, nanosec), store)

    bag = tmp_path / "late_scans"
    extra = {"/scan": (store, "sensor_msgs/msg/LaserScan", scan)}
    write_bag(bag, frames=FRAMES, width=WIDTH, height=HEIGHT, extra=extra, extra_at=-50_000_000)
    given = processed(
        tmp_path,
        bag,
        "required",
        model=tiny_checkpoint,
        static_transforms=LASER_TO_OPTICAL,
        metric_scale_require=True,
    )
    assert len(given) == FRAMES
    for i in range(FRAMES):
        scale = 1.5 if i >= 3 else 1.0
        np.testing.assert_allclose(given[i], scale * results[i].depth[0], rtol=1e-4)
    written = read_bag(tmp_path / "required")[0]
    for topic in ("/cam/points", "/cam/points/clearing"):
        clouds = [deserialize(raw, kind) for _, raw, kind in written[topic]]
        stamps = [(c.header.stamp.sec, c.header.stamp.nanosec) for c in clouds]
        assert stamps == [frame_stamp(i) for i in range(3, FRAMES)], topic


def node_fed_by_bag_play(checkpoint, tmp_path, bag, range_topic="/scan", **params):
    """The node's depth (COMMON and `params`), frame by frame, fed by `ros2 bag play` of
    `bag`; its range data on `range_topic` (a cloud's remapped onto anchors/points)."""
    remap = {"image": "/cam/image_raw", "camera_info": "/cam/camera_info"}
    if range_topic != "/scan":
        remap["anchors/points"] = range_topic
    settings = {**COMMON, **params}
    with running_node(checkpoint, tmp_path, remappings=remap, **settings) as (_, tester):
        play(tester.node, bag, rate=0.25, wait_for_subscribers=("/cam/image_raw", range_topic))
        depth = tester.wait_for("depth/image", count=FRAMES, timeout=30)
    return [decoding.depth_image_to_array(m) for m in depth]


def test_a_laser_on_a_moving_mount_is_looked_up_in_the_bags_tf_at_each_scans_stamp(
    tmp_path, tiny_checkpoint, capsys
):
    """/tf: laser -> tilt_laser turning at 2 rad/s, sampled 25 ms either side of each frame;
    each scan in tilt_laser's frame: depthclip-bag's depth equals that of the same scans
    recorded in the laser's own frame (the mount's angle interpolated at each scan's stamp, as
    tf2 does; a neighbouring sample's angle would turn the rays by 0.05 rad). /tf that stops
    after three frames: the later frames keep the fit and say why."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    still, turning, stops = (tmp_path / f"{name}_bag" for name in ("still", "turning", "stops"))
    write_scan_bag(still, results, tf_static=True)
    write_scan_bag(turning, results, tf_static=True, moving=FRAMES)
    write_scan_bag(stops, results, tf_static=True, moving=3)
    # The robot stands (no odom in the bag): taken as still on purpose, so nothing is said.
    standing = dict(model=tiny_checkpoint, metric_scale_fixed_frame="")
    expected = processed(tmp_path, still, "still", **standing)
    through_tf = processed(tmp_path, turning, "turning", **standing)
    assert "metric_scale" not in capsys.readouterr().err
    for a, b in zip(expected, through_tf, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5)
    stopped = processed(tmp_path, stops, "stops", **standing)
    err = capsys.readouterr().err
    assert "/cam/image_raw: metric_scale: no transform from frame 'tilt_laser'" in err
    assert "/tf has laser -> tilt_laser from " in err
    for i in range(3):
        np.testing.assert_allclose(stopped[i], expected[i], rtol=1e-5)
    for i in range(3, FRAMES):  # the third frame's fit, kept
        ratio = np.nanmedian(stopped[i] / results[i].depth[0])
        np.testing.assert_allclose(ratio, np.nanmedian(stopped[2] / results[2].depth[0]))


def test_a_transform_that_is_no_rotation_in_a_bag_is_a_warning_and_the_depth_still_goes_out(
    tmp_path, tiny_checkpoint, capsys
):
    """/tf_static's laser -> camera_link and /tf's samples with a zero quaternion: one warning
    each naming the frames, every frame's depth written, uncalibrated (the laser's frame is not
    joined to the camera's: said)."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    bag = tmp_path / "broken_bag"
    write_scan_bag(bag, results, tf_static=True, moving=FRAMES, no_rotation=True)
    depth = processed(tmp_path, bag, "broken", model=tiny_checkpoint)
    err = capsys.readouterr().err
    zero = "the quaternion (0.0, 0.0, 0.0, 0.0) has no rotation"
    assert f"/tf_static: laser -> camera_link: {zero}" in err
    assert f"/tf: laser -> tilt_laser: {zero}" in err
    assert "metric_scale: no transform from frame 'tilt_laser'" in err
    assert "Traceback" not in err and len(depth) == FRAMES
    for i in range(FRAMES):
        np.testing.assert_allclose(depth[i], results[i].depth[0], rtol=1e-5)


# A URDF's laser mount 0.5 m off in the bag's /tf_static, and the parameter correcting it.
WRONG_MOUNT = ["0.5 0 0 0 0 0 laser camera_link", LASER_TO_OPTICAL[1]]
CORRECTED = dict(static_transforms=LASER_TO_OPTICAL[:1])


def test_the_parameter_corrects_a_mount_the_bags_tf_static_has_wrong(tmp_path, tiny_checkpoint):
    """The bag's /tf_static joins the laser to the optical frame with a mount 0.5 m off;
    static_transforms gives that one mount right: the chain through both, the parameter's
    mount taken, is the depth of the right transforms."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    right, wrong = tmp_path / "right_bag", tmp_path / "wrong_bag"
    write_scan_bag(right, results, tf_static=True)
    write_scan_bag(wrong, results, tf_static=WRONG_MOUNT)
    expected = processed(tmp_path, right, "right", model=tiny_checkpoint)
    corrected = processed(tmp_path, wrong, "corrected", model=tiny_checkpoint, **CORRECTED)
    as_recorded = processed(tmp_path, wrong, "as_recorded", model=tiny_checkpoint)
    for a, b in zip(expected, corrected, strict=True):
        np.testing.assert_array_equal(b, a)
    assert not np.allclose(as_recorded[0], expected[0], rtol=0.05)


@pytest.mark.ros  # on Jazzy too: its tf2_ros and rclpy
@pytest.mark.parametrize(
    "moving, tf_static, driving, params",
    [
        (None, True, False, {}),
        (FRAMES, True, False, {}),
        (None, WRONG_MOUNT, False, CORRECTED),
        (None, True, True, {}),
    ],
    ids=["tf_static", "turning_mount", "mount_corrected_by_parameter", "driving_robot"],
)
def test_the_node_hearing_a_played_bags_frames_through_tf2_equals_depthclip_bag(
    tmp_path, tiny_checkpoint, moving, tf_static, driving, params
):
    """depthclip-bag reads the bag's /tf_static (and a turning mount's /tf), the node (a ROS
    install's tf2_ros) hears them from `ros2 bag play` (/tf_static latched, as recorded): the
    same depth, frame by frame; so with a static_transforms parameter correcting one mount
    the bag's /tf_static has wrong (tf2 given the parameter's transforms), and on a robot
    driving 1 m/s whose scans are 20 ms older than their images, moved through odom (2 cm
    nearer the wall at the image's stamp: not the depth of the robot taken as still)."""
    if tf2_from_source.missing():
        pytest.skip(tf2_from_source.missing())
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    bag = tmp_path / "tf_bag"
    write_scan_bag(bag, results, tf_static=tf_static, moving=moving, driving=driving)
    from_bag = processed(tmp_path, bag, "from_tf", model=tiny_checkpoint, **params)
    if driving:
        still = processed(
            tmp_path, bag, "still", model=tiny_checkpoint, metric_scale_fixed_frame=""
        )
        np.testing.assert_allclose(still[0], scale_of(0) * results[0].depth[0], rtol=1e-4)
        assert np.nanmedian(from_bag[0] / still[0]) < 0.995  # the wall nearer when imaged
    else:
        np.testing.assert_allclose(from_bag[0], scale_of(0) * results[0].depth[0], rtol=1e-4)
    node = node_fed_by_bag_play(tiny_checkpoint, tmp_path, bag, **params)
    for tool, from_node in zip(from_bag, node, strict=True):
        np.testing.assert_allclose(from_node, tool, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_one_scan_in_a_bag_serves_every_camera_each_fitted_to_its_own_returns(
    tmp_path, tiny_checkpoint
):
    """Two cameras recorded together (the rear one turned half a turn on the laser: REAR_MOUNT
    in static_transforms), one 360-degree scan a frame: the rays in front return where a scene
    twice the front image's model depth is, those behind three times the rear image's; each
    camera's depth out of depthclip-bag takes its own scale."""
    from range_factory import REAR_MOUNT, all_round_scan

    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    cameras = {"/front": (WIDTH, HEIGHT), "/rear": (WIDTH, HEIGHT)}
    seen = {  # write_bag's images: seeded by frame and camera
        ns: [core.predict(structured_image(HEIGHT, WIDTH, seed=i + 100 * k)) for i in range(2)]
        for k, ns in enumerate(cameras)
    }
    store = get_typestore(Stores.ROS2_KILTED)

    def scan(i):
        views = [(0.0, seen["/front"][i], 2.0), (np.pi, seen["/rear"][i], 3.0)]
        return rosbags_scan(all_round_scan(views, K, *frame_stamp(i)), store)

    bag = tmp_path / "two_cameras"
    write_bag(
        bag,
        frames=2,
        cameras=cameras,
        frame_ids={"/front": "camera_optical_frame", "/rear": "rear_optical_frame"},
        extra={"/scan": (store, "sensor_msgs/msg/LaserScan", scan)},
        extra_at=-50_000_000,
    )
    settings = dict(COMMON, model=str(tiny_checkpoint), device="cpu", cache_dir=str(tmp_path))
    settings["static_transforms"] = [*LASER_TO_OPTICAL, *REAR_MOUNT]
    params = tmp_path / "two.yaml"
    params.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": settings}}))
    argv = ["process", str(bag), str(tmp_path / "out"), "--params", str(params)]
    argv += ["--image-topic", "/front/image_raw", "--image-topic", "/rear/image_raw"]
    assert cli.main(argv) == 0
    written = read_bag(tmp_path / "out")[0]
    for ns, scale in (("/front", 2.0), ("/rear", 3.0)):
        messages = written[f"{ns}/depth/image"]
        assert len(messages) == 2, ns
        for (_, raw, kind), result in zip(messages, seen[ns], strict=True):
            depth = decoding.depth_image_to_array(deserialize(raw, kind))
            np.testing.assert_allclose(depth, scale * result.depth[0], rtol=1e-4, err_msg=ns)


def test_a_new_scale_moves_the_temporal_filters_fused_depth_and_restarts_nothing(
    tmp_path, unbiased_checkpoint
):
    """temporal_filter mixture (every patch fused: a threshold no image change reaches) with
    metric_scale: the scans 1.5 times each frame's model depth for 6 frames, then 2.5 times:
    every frame's depth is its scale times the fused depth written with metric_scale off (one
    ratio over the whole image: the scale moves the fused distribution's bins, the filter
    restarts for none of its changes), the ratio 1.5 at first and within 10 % of 2.5 at
    the end (the new scale's fits against the fused depth). The unbiased tiny CLIP over
    VARYING_BINS: depths that differ from image to image, so that the fused depth is not any
    one frame's."""
    frames = 12
    config = model_config(unbiased_checkpoint, tmp_path / "core", **MODEL)
    core = DepthClip(config.replace(depth_bins=VARYING_BINS))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(frames)]
    store = get_typestore(Stores.ROS2_KILTED)

    def scan(i):
        scale = 1.5 if i < 6 else 2.5
        return rosbags_scan(scan_of(results[i], K, scale, *frame_stamp(i)), store)

    bag = tmp_path / "step"
    extra = {"/scan": (store, "sensor_msgs/msg/LaserScan", scan)}
    write_bag(bag, frames=frames, width=WIDTH, height=HEIGHT, extra=extra, extra_at=-50_000_000)
    fused = dict(
        model=unbiased_checkpoint,
        depth_bins=list(VARYING_BINS),
        temporal_filter="mixture",
        temporal_change_threshold=255.0,
        static_transforms=LASER_TO_OPTICAL,
    )
    off = processed(tmp_path, bag, "off", **fused, metric_scale="off")
    on = processed(tmp_path, bag, "on", **fused)
    assert len(on) == len(off) == frames
    assert not np.allclose(off[-1], results[-1].depth[0], rtol=1e-3)  # fused, not the frame's
    ratios = []
    for calibrated, plain in zip(on, off, strict=True):
        ratio = calibrated / plain
        np.testing.assert_allclose(ratio, np.nanmedian(ratio), rtol=1e-4)
        ratios.append(float(np.nanmedian(ratio)))
    assert abs(ratios[0] - 1.5) < 1e-3 and abs(ratios[-1] - 2.5) < 0.25, ratios


def test_a_registered_depth_image_in_a_bag_scales_the_depth(tmp_path, tiny_checkpoint):
    """Source depth through depthclip-bag: a depth image registered to the camera, 1.5 times
    the model's depth, on --anchor-depth-topic: the first frame's depth is 1.5 times the
    core's (the later ones mix in their drifting scales)."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    store = get_typestore(Stores.ROS2_KILTED)

    def depth(i):
        return rosbags_depth_image(scale_of(i) * results[i].depth[0], *frame_stamp(i), store)

    bag = tmp_path / "depth_bag"
    extra = {"/realsense/aligned_depth": (store, "sensor_msgs/msg/Image", depth)}
    write_bag(bag, frames=FRAMES, width=WIDTH, height=HEIGHT, extra=extra, extra_at=-50_000_000)
    settings = dict(COMMON, model=str(tiny_checkpoint), device="cpu", cache_dir=str(tmp_path))
    settings["metric_scale_sources"] = ["depth"]
    params = tmp_path / "depth.yaml"
    params.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": settings}}))
    argv = ["process", str(bag), str(tmp_path / "out"), "--params", str(params)]
    # Two image topics now: the camera is named, as with any bag of a depth camera.
    argv += ["--image-topic", "/cam/image_raw", "--anchor-depth-topic", "/realsense/aligned_depth"]
    assert cli.main(argv) == 0
    messages = read_bag(tmp_path / "out")[0]["/cam/depth/image"]
    given = [decoding.depth_image_to_array(deserialize(raw, kind)) for _, raw, kind in messages]
    assert len(given) == FRAMES
    np.testing.assert_allclose(given[0], scale_of(0) * results[0].depth[0], rtol=1e-4)
    for i in range(1, FRAMES):
        assert scale_of(0) < np.nanmedian(given[i] / results[i].depth[0]) < scale_of(i)


def test_each_camera_in_a_bag_is_fitted_to_its_own_registered_depth(
    tmp_path, tiny_checkpoint, capsys
):
    """Two cameras recorded together, each with a depth camera registered to it on its own
    topic (front's 1.5 times its image's model depth, rear's 2.5 times), given to
    depthclip-bag once per --image-topic: each camera's depth takes its own depth camera's
    scale; the node (`cameras: [front, rear]`, each NAME/anchors/depth remapped onto its
    camera's) fed by `ros2 bag play` of the bag gives the same depth, frame by frame. Given
    twice for one camera: one line, exit 2."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    cameras = {"/front": 1.5, "/rear": 2.5}
    seen = {  # write_bag's images: seeded by frame and camera
        ns: [core.predict(structured_image(HEIGHT, WIDTH, seed=i + 100 * k)) for i in range(2)]
        for k, ns in enumerate(cameras)
    }
    frames = {"/front": "camera_optical_frame", "/rear": "rear_optical_frame"}
    store = get_typestore(Stores.ROS2_KILTED)

    def registered(ns):
        def depth(i):
            made = cameras[ns] * seen[ns][i].depth[0]
            return rosbags_depth_image(made, *frame_stamp(i), store, frames[ns])

        return depth

    bag = tmp_path / "two_depth_cameras"
    write_bag(
        bag,
        frames=2,
        cameras=dict.fromkeys(cameras, (WIDTH, HEIGHT)),
        frame_ids=frames,
        extra={
            f"{ns}/aligned_depth": (store, "sensor_msgs/msg/Image", registered(ns))
            for ns in cameras
        },
        extra_at=-50_000_000,
    )
    settings = dict(COMMON, model=str(tiny_checkpoint), device="cpu", cache_dir=str(tmp_path))
    settings["metric_scale_sources"] = ["depth"]
    params = tmp_path / "depth.yaml"
    params.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": settings}}))
    argv = ["process", str(bag), str(tmp_path / "out"), "--params", str(params)]
    for ns in cameras:
        argv += ["--image-topic", f"{ns}/image_raw", "--anchor-depth-topic", f"{ns}/aligned_depth"]
    assert cli.main(argv) == 0
    written = read_bag(tmp_path / "out")[0]
    given = {}
    for ns, scale in cameras.items():
        messages = written[f"{ns}/depth/image"]
        given[ns] = [
            decoding.depth_image_to_array(deserialize(raw, kind)) for _, raw, kind in messages
        ]
        assert len(given[ns]) == 2, ns
        for depth, result in zip(given[ns], seen[ns], strict=True):
            np.testing.assert_allclose(depth, scale * result.depth[0], rtol=1e-4, err_msg=ns)
    remap = {}
    for ns in cameras:
        name = ns.strip("/")
        remap |= {
            f"{name}/image": f"{ns}/image_raw",
            f"{name}/camera_info": f"{ns}/camera_info",
            f"{name}/anchors/depth": f"{ns}/aligned_depth",
        }
    settings = {**COMMON, "metric_scale_sources": ["depth"], "cameras": ["front", "rear"]}
    with running_node(str(tiny_checkpoint), tmp_path / "node", remappings=remap, **settings) as (
        _,
        tester,
    ):
        outputs = {ns: [] for ns in cameras}
        for ns in cameras:
            tester.node.create_subscription(
                Image, f"{ns.strip('/')}/depth/image", outputs[ns].append, 10
            )
        waited = [f"{ns}/{topic}" for ns in cameras for topic in ("image_raw", "aligned_depth")]
        play(tester.node, bag, rate=0.25, wait_for_subscribers=waited)
        wait_until(lambda: all(len(got) == 2 for got in outputs.values()), timeout=30)
    for ns in cameras:
        for from_bag, msg in zip(given[ns], outputs[ns], strict=True):
            from_node = decoding.depth_image_to_array(msg)
            np.testing.assert_allclose(from_node, from_bag, atol=1e-6, err_msg=ns)
    argv = ["process", str(bag), str(tmp_path / "refused"), "--anchor-depth-topic", "/a"]
    argv += ["--anchor-depth-topic", "/b", "--image-topic", "/front/image_raw"]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.endswith(
            "--anchor-depth-topic is given 2 times for 1 --image-topic: once (every camera's) or "
            "once per --image-topic, in their order"
        )
        and len(err.splitlines()) == 1
    ), err


def test_a_lidars_cloud_in_a_bag_scales_the_depth(tmp_path, tiny_checkpoint):
    """Source points through depthclip-bag: a cloud in the laser's frame (static_transforms
    joins it to the camera's) of more points than are read (each feature cell's anchor, 1.5
    times the model's depth, 100 times over): the sample read from the bag's message fits
    the first frame's depth to 1.5 times the core's (the later ones mix in their drifting
    scales), as the registered depth image does; the node fed by `ros2 bag play` of the bag
    gives the same depth, frame by frame."""
    from depthclip_ros import transforms
    from depthclip_ros.metric_scale.range_sources import RANGE_POINTS

    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    store = get_typestore(Stores.ROS2_KILTED)
    to_laser = transforms.StaticTransforms.parse(LASER_TO_OPTICAL).lookup(
        "laser", "camera_optical_frame"
    )

    def cloud(i):
        cells = anchors_at_the_cells(results[i], K, scale_of(i)).reshape(-1, 3)
        points = to_laser.apply(np.repeat(cells, 100, axis=0))
        assert len(points) > RANGE_POINTS
        return rosbags_cloud(points, *frame_stamp(i), "laser", store)

    bag = tmp_path / "cloud_bag"
    extra = {"/lidar/points": (store, "sensor_msgs/msg/PointCloud2", cloud)}
    write_bag(bag, frames=FRAMES, width=WIDTH, height=HEIGHT, extra=extra, extra_at=-50_000_000)
    params = dict(metric_scale_sources=["points"], static_transforms=LASER_TO_OPTICAL)
    options = ["--anchor-points-topic", "/lidar/points"]
    given = processed(tmp_path, bag, "out", options, model=tiny_checkpoint, **params)
    assert len(given) == FRAMES
    np.testing.assert_allclose(given[0], scale_of(0) * results[0].depth[0], rtol=1e-4)
    for i in range(1, FRAMES):
        assert scale_of(0) < np.nanmedian(given[i] / results[i].depth[0]) < scale_of(i)
    # The node reads rclpy's messages of the same clouds (their data an array, not an ndarray)
    node = node_fed_by_bag_play(tiny_checkpoint, tmp_path, bag, "/lidar/points", **params)
    for from_bag, from_node in zip(given, node, strict=True):
        np.testing.assert_allclose(from_node, from_bag, atol=1e-6, equal_nan=True)


def test_the_ground_in_a_bag_is_the_floors_cloud(tmp_path, tiny_checkpoint):
    """Source ground through depthclip-bag (no message of it in the bag): each frame's depth
    equals that fitted to a cloud in the bag of the floor's points under a camera as high
    (range_factory's, from the pinhole model), and twice the height gives twice the depth."""
    store = get_typestore(Stores.ROS2_KILTED)
    floor = floor_points(K, (HEIGHT, WIDTH), 1.3)

    def cloud(i):
        return rosbags_cloud(floor, *frame_stamp(i), "camera_optical_frame", store)

    bag = tmp_path / "floor_bag"
    extra = {"/anchors/points": (store, "sensor_msgs/msg/PointCloud2", cloud)}
    write_bag(bag, frames=FRAMES, width=WIDTH, height=HEIGHT, extra=extra, extra_at=-50_000_000)
    by_cloud = processed(
        tmp_path, bag, "cloud", model=tiny_checkpoint, metric_scale_sources=["points"]
    )
    for height, name in ((1.3, "ground"), (2.6, "higher")):
        by_ground = processed(
            tmp_path,
            bag,
            name,
            model=tiny_checkpoint,
            metric_scale_sources=["ground"],
            ground_height=height,
        )
        assert len(by_ground) == len(by_cloud) == FRAMES
        for got, want in zip(by_ground, by_cloud):
            np.testing.assert_allclose(got, height / 1.3 * want, rtol=1e-5)


def test_mode_bins_moves_each_bin_to_a_depth_cameras_metres(tmp_path, unbiased_checkpoint):
    """Mode bins through depthclip-bag: a registered depth image made by the core over bins
    moved by a map no scale and shift makes (0.8 b^1.3 + 0.2): the depth out is near that
    core's.
    The unbiased tiny CLIP over VARYING_BINS: its depth varies over the images, so the fit is
    of each bin (the per-bin fit's own test of a map it recovers is test_metric_scale's)."""
    config = model_config(unbiased_checkpoint, tmp_path / "core", depth_bins=VARYING_BINS, **MODEL)
    moved = tuple(float(0.8 * b**1.3 + 0.2) for b in config.depth_bins)
    truth = DepthClip(config.replace(depth_bins=moved))
    want = [truth.predict(structured_image(HEIGHT, WIDTH, seed=i)).depth[0] for i in range(2)]
    store = get_typestore(Stores.ROS2_KILTED)

    def depth(i):
        return rosbags_depth_image(want[i], *frame_stamp(i), store)

    bag = tmp_path / "depth_bag"
    extra = {"/anchors/depth": (store, "sensor_msgs/msg/Image", depth)}
    write_bag(bag, frames=2, width=WIDTH, height=HEIGHT, extra=extra, extra_at=-50_000_000)
    given = processed(
        tmp_path,
        bag,
        "bins",
        options=("--image-topic", "/cam/image_raw"),
        model=unbiased_checkpoint,
        depth_bins=list(VARYING_BINS),
        metric_scale="bins",
        metric_scale_sources=["depth"],
    )
    model = DepthClip(config)
    for i, (got, truth_depth) in enumerate(zip(given, want, strict=True)):
        # Each bin's move is fitted as far as the anchors weigh it (within 1 %), and the depth
        # is no single scale of the model's (which float32 keeps to 1e-7): not the fallback of
        # anchors at one depth.
        np.testing.assert_allclose(got, truth_depth, rtol=1e-2)
        ratio = got / model.predict(structured_image(HEIGHT, WIDTH, seed=i)).depth[0]
        assert np.nanmax(ratio) - np.nanmin(ratio) > 1e-5


def test_frames_whose_anchors_no_fit_agrees_with_leave_every_later_depth_finite(
    tmp_path, tiny_checkpoint, capsys
):
    """A bag whose first two frames' clouds carry ten anchors in ten cells whose ratios to the
    model's depth are each 25 % apart (a mount given wrong) and whose next eight carry clean
    anchors at 1.5 times it: the first two frames go out as the model made them, every later
    one at 1.5 times (every value finite); the refusal is one warning line with its count."""
    frames = 10
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(frames)]
    store = get_typestore(Stores.ROS2_KILTED)

    def cloud(i):
        cells = anchors_at_the_cells(results[i], K, 1.5).reshape(-1, 3)
        if i < 2:
            cells = cells[:: len(cells) // 10][:10] * (1.25 ** (np.arange(10) - 5))[:, None]
        return rosbags_cloud(cells, *frame_stamp(i), "camera_optical_frame", store)

    bag = tmp_path / "scattered"
    extra = {"/anchors/points": (store, "sensor_msgs/msg/PointCloud2", cloud)}
    write_bag(bag, frames=frames, width=WIDTH, height=HEIGHT, extra=extra, extra_at=-50_000_000)
    given = processed(tmp_path, bag, "out", model=tiny_checkpoint, metric_scale_sources=["points"])
    assert len(given) == frames
    for i, depth in enumerate(given):
        assert np.isfinite(depth).all(), i
        np.testing.assert_allclose(
            depth, (1.0 if i < 2 else 1.5) * results[i].depth[0], rtol=1e-4, err_msg=str(i)
        )
    lines = [line for line in capsys.readouterr().err.splitlines() if "agree with a fit" in line]
    assert len(lines) == 1 and "(2 times, log times " in lines[0], lines


def test_one_depth_topic_for_several_cameras_is_one_line_and_nothing_written(
    tmp_path, tiny_checkpoint, capsys
):
    """A depth image is registered to one camera: a bag of two cameras with source depth and
    one --anchor-depth-topic (or none) is refused in one line, exit 2, as the node gives each
    named camera its own topic."""
    bag = tmp_path / "two_cameras"
    write_bag(bag, frames=1, cameras={"/front": (WIDTH, HEIGHT), "/rear": (WIDTH, HEIGHT)})
    settings = dict(COMMON, model=str(tiny_checkpoint), device="cpu", cache_dir=str(tmp_path))
    settings["metric_scale_sources"] = ["depth"]
    params = tmp_path / "depth.yaml"
    params.write_text(yaml.safe_dump({"depthclip": {"ros__parameters": settings}}))
    cameras = ["--image-topic", "/front/image_raw", "--image-topic", "/rear/image_raw"]
    for given in (["--anchor-depth-topic", "/front/aligned_depth"], []):
        capsys.readouterr()
        argv = ["process", str(bag), str(tmp_path / "out"), "--params", str(params)]
        assert cli.main(argv + cameras + given) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(
            "depthclip-bag: error: metric_scale source depth with 2 cameras"
        ), err
        assert not (tmp_path / "out").exists()


def test_scans_that_come_after_their_image_are_taken_alike_by_the_node_and_the_tool(
    tmp_path, tiny_checkpoint, capsys
):
    """Each image's scan stamped 30 ms after it and logged 40 ms after it (after the image;
    the scan before it 70 ms off, beyond the 0.05 s slop): depthclip-bag and the node fed by
    `ros2 bag play --clock` (use_sim_time) both take each frame's later scan, frame by frame
    (the tool took only what was logged before the image: no scan within 0.05 s)."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **MODEL))
    results = [core.predict(structured_image(HEIGHT, WIDTH, seed=i)) for i in range(FRAMES)]
    store = get_typestore(Stores.ROS2_KILTED)

    def scan(i):
        sec, nanosec = frame_stamp(i)
        sec, nanosec = divmod(sec * 10**9 + nanosec + 30_000_000, 10**9)
        return rosbags_scan(scan_of(results[i], K, scale_of(i), sec, nanosec), store)

    bag = tmp_path / "late_scans"
    extra = {"/scan": (store, "sensor_msgs/msg/LaserScan", scan)}
    write_bag(bag, frames=FRAMES, width=WIDTH, height=HEIGHT, extra=extra, extra_at=40_000_000)
    params = dict(static_transforms=LASER_TO_OPTICAL)
    given = processed(tmp_path, bag, "given", model=tiny_checkpoint, **params)
    err = capsys.readouterr().err
    assert "no scan within" not in err
    # No odom in the bag: the robot taken as still, said once for the bag's frames.
    still = [line for line in err.splitlines() if "robot taken as still" in line]
    assert len(still) == 1 and "no transform from frame 'odom'" in still[0], still
    assert f"({FRAMES} times," in still[0]
    np.testing.assert_allclose(given[0], scale_of(0) * results[0].depth[0], rtol=1e-4)
    node = node_fed_by_bag_play(tiny_checkpoint, tmp_path, bag, use_sim_time=True, **params)
    for from_bag, from_node in zip(given, node, strict=True):
        np.testing.assert_allclose(from_node, from_bag, atol=1e-6, equal_nan=True)
