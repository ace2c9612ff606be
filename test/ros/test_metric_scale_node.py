"""metric_scale in the node over real rclpy / DDS, tiny random CLIP: the depth put in the scale
of metric anchors (a cloud on anchors/points, a registered depth image on anchors/depth, a
LaserScan on scan through static_transforms, or through tf2's /tf_static and /tf where tf2_ros
imports), the clouds withheld until a first fit when asked, and diagnostics saying what the
fit is."""

import threading

import numpy as np
import pytest
import tf2_from_source
from helpers import camera_info, encode, model_config, stamp, structured_image, wait_until
from range_factory import (
    LASER_TO_OPTICAL,
    anchors_at_the_cells,
    cloud_of,
    floor_points,
    scan_of,
)
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from ros_harness import running_node
from sensor_msgs.msg import Image, LaserScan, PointCloud2

from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.messages import decoding
from depthclip_ros.node import tf_frames

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SIZE = dict(input_width=256, input_height=192)  # a 6 x 8 feature grid
IMAGE = structured_image(240, 320)
INFO = camera_info(width=320, height=240, fx=300.0, fy=300.0, cx=160.0, cy=120.0)
K = np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1]])


def depth_of(tester, sec):
    msg = tester.wait_for("depth/image", predicate=lambda m: m.header.stamp.sec == sec)[-1]
    return decoding.depth_image_to_array(msg)


def registered_depth(depth, sec):
    """A 32FC1 depth Image of `depth` (metres) in the camera's own frame."""
    height, width = depth.shape
    image = Image(height=height, width=width, encoding="32FC1", step=4 * width)
    image.data = np.ascontiguousarray(depth, np.float32).tobytes()
    return stamp(image, sec)


@pytest.mark.parametrize("source", ["points", "depth"])
def test_the_depth_takes_the_scale_of_anchors_and_clouds_wait_for_the_first_fit(
    tiny_checkpoint, tmp_path, source
):
    """Anchors 1.5 times the model's own depth (the image's own frame): a cloud of points at
    every cell, or a depth image registered to the camera: the published depth is 1.5 times
    the core's (a scale fit from exact anchors). With metric_scale_require, the frame before
    any anchor has its depth but no cloud."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **SIZE)).predict(IMAGE)
    params = dict(
        SIZE,
        metric_scale="scale",
        metric_scale_sources=[source],
        metric_scale_require=True,
        camera_info_wait=0.0,
    )
    with running_node(str(tiny_checkpoint), tmp_path / "cache", **params) as (node, tester):
        kind = {"points": PointCloud2, "depth": Image}[source]
        anchors_pub = tester.node.create_publisher(kind, f"anchors/{source}", RELIABLE)
        tester.info_pub.publish(stamp(INFO, 1))
        tester.image_pub.publish(stamp(encode(IMAGE, "rgb8"), 1))
        np.testing.assert_allclose(depth_of(tester, 1), core.depth[0], rtol=1e-5)  # unscaled
        wait_until(lambda: anchors_pub.get_subscription_count() > 0)
        if source == "points":
            anchors = cloud_of(anchors_at_the_cells(core, K, 1.5), 2, "camera_optical_frame")
        else:
            anchors = registered_depth(1.5 * core.depth[0], 2)
        anchors_pub.publish(anchors)
        wait_until(lambda: node.ranges.sources.received[source] == 1)
        tester.info_pub.publish(stamp(INFO, 2))
        tester.image_pub.publish(stamp(encode(IMAGE, "rgb8"), 2))
        np.testing.assert_allclose(depth_of(tester, 2), 1.5 * core.depth[0], rtol=1e-4)
        clouds = tester.wait_for("points")
        assert [c.header.stamp.sec for c in clouds] == [2]  # none before the first fit
        values = {}

        def scale_reported():
            for msg in tester.received["/diagnostics"][-3:]:
                for status in msg.status:
                    values.update({kv.key: kv.value for kv in status.values})
            return "metric scale" in values

        wait_until(scale_reported)
        assert values["metric scale"].startswith("1.5 ")
        assert values["metric last reason not fitted"] == "-"
        fit_ms, application_ms = values["metric last frame, fit / application (ms)"].split(" / ")
        assert float(fit_ms) > 0 and float(application_ms) > 0


def test_a_frame_the_model_is_slow_on_keeps_its_own_anchors_and_camera_info(
    tiny_checkpoint, tmp_path
):
    """The model busy (its worker held, as by a forward of seconds) while, after a frame's own
    anchors (1.5 times the model's depth) and camera_info, 30 more clouds (2.1 times) and 40
    camera_infos (another fx) come: the frame still takes its own anchors and its own
    camera_info, though the node keeps only the 20 newest clouds (and kept the 30 newest
    camera_infos, 1 s of a 30 Hz camera, before)."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **SIZE)).predict(IMAGE)
    params = dict(SIZE, metric_scale="scale", metric_scale_sources=["points"])
    with running_node(str(tiny_checkpoint), tmp_path / "cache", **params) as (node, tester):
        anchors_pub = tester.node.create_publisher(PointCloud2, "anchors/points", RELIABLE)
        wait_until(lambda: anchors_pub.get_subscription_count() > 0)
        busy = threading.Event()
        node.worker.call(busy.wait, 60.0)
        try:
            tester.image_pub.publish(stamp(encode(IMAGE, "rgb8"), 2))
            wait_until(lambda: node.camera.stats.totals["received"] == 1)
            tester.info_pub.publish(stamp(INFO, 2))
            anchors_pub.publish(
                cloud_of(anchors_at_the_cells(core, K, 1.5), 2, "camera_optical_frame")
            )
            later = anchors_at_the_cells(core, K, 2.1)
            other = camera_info(width=320, height=240, fx=310.0, fy=310.0, cx=160.0, cy=120.0)
            for i in range(40):  # each received before the next: none lost to the queues' depth
                if i < 30:
                    anchors_pub.publish(cloud_of(later, 3 + i, "camera_optical_frame"))
                    wait_until(lambda n=i + 2: node.ranges.sources.received["points"] == n)
                info = stamp(other, 2, (i + 1) * 10**9 // 60)  # 60 Hz: 0.67 s of them
                tester.info_pub.publish(info)
                wait_until(
                    lambda s=info.header.stamp: node.camera.camera_infos.find(s) is not None
                )
        finally:
            busy.set()
        np.testing.assert_allclose(depth_of(tester, 2), 1.5 * core.depth[0], rtol=1e-4)
        info = tester.wait_for("depth/camera_info")[-1]
        assert info.header.stamp.sec == 2 and info.k[0] == 300.0  # its own, not fx 310


def test_a_scan_through_static_transforms_with_parameters_changed_while_on(
    tiny_checkpoint, tmp_path
):
    """metric_scale turned on at run time (the scan subscribed then); a scan whose returns lie
    where a scene twice the model's depth is, through static_transforms: the depth comes out
    doubled; the next frame without a scan keeps the fit and /diagnostics says why; a new
    input size while on is another model's scale: the next scan's (3 times) taken at once;
    mode bins set while on fits the next frame."""
    from rclpy.parameter import Parameter

    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **SIZE)).predict(IMAGE)
    params = dict(
        SIZE,
        metric_scale_sources=["scan"],
        static_transforms=LASER_TO_OPTICAL,
        metric_scale_min_anchors=5,
    )
    with running_node(str(tiny_checkpoint), tmp_path / "cache", **params) as (node, tester):
        scan_pub = tester.node.create_publisher(LaserScan, "scan", RELIABLE)

        sources = node.ranges.sources

        def frame(sec, scan=None):
            if scan is not None:
                before = sources.received["scan"]
                scan_pub.publish(scan)
                wait_until(lambda: sources.received["scan"] == before + 1)
            tester.info_pub.publish(stamp(INFO, sec))
            tester.image_pub.publish(stamp(encode(IMAGE, "rgb8"), sec))
            return depth_of(tester, sec)

        np.testing.assert_allclose(frame(1), core.depth[0], rtol=1e-5)  # off: the model's
        assert node.set_parameters([Parameter("metric_scale", value="scale")])[0].successful
        wait_until(lambda: scan_pub.get_subscription_count() > 0)
        np.testing.assert_allclose(
            frame(2, scan_of(core, K, 2.0, 2)), 2.0 * core.depth[0], rtol=1e-4
        )
        np.testing.assert_allclose(frame(3), 2.0 * core.depth[0], rtol=1e-4)  # no scan at 3
        values = {}

        def reason_reported():
            for msg in tester.received["/diagnostics"][-3:]:
                for status in msg.status:
                    values.update({kv.key: kv.value for kv in status.values})
            return values.get("metric last reason not fitted", "-") != "-"

        wait_until(reason_reported)
        assert values["metric last reason not fitted"] == "no scan within 0.05 s"
        assert values["metric scale"].startswith("2 ")
        if tf_frames.available():  # static_transforms joined the frames: tf2 never asked
            assert values["metric transforms"].startswith("static_transforms, then tf2 ")
            assert ": 0 lookups, 0 failed" in values["metric transforms"]
        else:
            assert values["metric transforms"] == "static_transforms only (tf2_ros not installed)"
        # No odometry on this robot: taken as still, and said (tf2's failures not counted).
        assert values["metric motion"].startswith(
            "robot taken as still: no transform from frame 'odom' to "
        ), values["metric motion"]
        larger = dict(input_width=384, input_height=288)
        changes = [Parameter(k, value=v) for k, v in larger.items()]
        assert node.set_parameters_atomically(changes).successful
        wait_until(lambda: node.estimator.config.input_width == 384)
        bigger = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **larger))
        new = bigger.predict(IMAGE)
        np.testing.assert_allclose(
            frame(4, scan_of(new, K, 3.0, 4)), 3.0 * new.depth[0], rtol=1e-4
        )
        # Mode bins while on: the bin probabilities fetched from the next frame, each bin moved
        # (here the scan's scale is every bin's), the state kept.
        assert node.set_parameters([Parameter("metric_scale", value="bins")])[0].successful
        wait_until(lambda: node.params.outputs.metric_scale == "bins")
        np.testing.assert_allclose(
            frame(5, scan_of(new, K, 3.0, 5)), 3.0 * new.depth[0], rtol=1e-4
        )
        wait_until(lambda: "bins" in str(tester.received["/diagnostics"][-1:]))


def diagnostics_values(tester) -> dict:
    values = {}
    for msg in tester.received["/diagnostics"][-3:]:
        for status in msg.status:
            values.update({kv.key: kv.value for kv in status.values})
    return values


def test_a_scan_through_tf2s_frames_heard_while_on(tiny_checkpoint, tmp_path):
    """No static_transforms: the laser's frame reaches the camera's through tf2 (a ROS
    install's tf2_ros): a scan before any transform is not fitted, saying tf2's words; after
    /tf_static (transient local, from another node) it is; metric_scale off closes /tf and
    /tf_static (the depth the model's), on again hears /tf_static's latched transforms at
    once; a dynamic /tf is looked up at the scan's stamp (one outside its buffer is tf2's
    extrapolation, said, and the fit kept)."""
    if tf2_from_source.missing():
        pytest.skip(tf2_from_source.missing())
    from range_factory import tf_message
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy
    from tf2_msgs.msg import TFMessage

    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **SIZE)).predict(IMAGE)
    params = dict(
        SIZE, metric_scale="scale", metric_scale_sources=["scan"], metric_scale_min_anchors=5
    )
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    with running_node(str(tiny_checkpoint), tmp_path / "cache", **params) as (node, tester):
        scan_pub = tester.node.create_publisher(LaserScan, "scan", RELIABLE)
        static_pub = tester.node.create_publisher(TFMessage, "/tf_static", latched)
        tf_pub = tester.node.create_publisher(TFMessage, "/tf", RELIABLE)
        sources = node.ranges.sources

        def frame(sec, scale, laser="laser"):
            if scale is not None:
                before = sources.received["scan"]
                scan = scan_of(core, K, scale, sec)
                scan.header.frame_id = laser
                scan_pub.publish(scan)
                wait_until(lambda: sources.received["scan"] == before + 1)
            tester.info_pub.publish(stamp(INFO, sec))
            tester.image_pub.publish(stamp(encode(IMAGE, "rgb8"), sec))
            return depth_of(tester, sec)

        wait_until(lambda: scan_pub.get_subscription_count() > 0)
        wait_until(lambda: static_pub.get_subscription_count() > 0)
        np.testing.assert_allclose(frame(1, 2.0), core.depth[0], rtol=1e-5)  # no frames yet
        wait_until(
            lambda: (
                "tf2: LookupException"
                in diagnostics_values(tester).get("metric last reason not fitted", "")
            )
        )
        reason = diagnostics_values(tester)["metric last reason not fitted"]
        assert reason.startswith("no transform from frame 'laser' to 'camera_optical_frame'")
        static_pub.publish(tf_message(LASER_TO_OPTICAL))
        frames = sources.frames
        wait_until(lambda: frames.buffer.can_transform("camera_optical_frame", "laser", Time()))
        np.testing.assert_allclose(frame(2, 2.0), 2.0 * core.depth[0], rtol=1e-4)
        wait_until(lambda: diagnostics_values(tester).get("metric scale", "").startswith("2 "))
        words = diagnostics_values(tester)["metric transforms"]
        assert words.startswith(
            "static_transforms, then tf2 (/tf, /tf_static): 2 lookups, 1 failed"
        )
        assert "(last: tf2: LookupException" in words

        assert node.set_parameters([Parameter("metric_scale", value="off")])[0].successful
        wait_until(lambda: static_pub.get_subscription_count() == 0)
        assert sources.frames is None and scan_pub.get_subscription_count() == 0
        np.testing.assert_allclose(frame(3, None), core.depth[0], rtol=1e-5)  # off: the model's
        assert node.set_parameters([Parameter("metric_scale", value="scale")])[0].successful
        wait_until(
            lambda: (
                sources.frames is not None
                and sources.frames.buffer.can_transform("camera_optical_frame", "laser", Time())
            )
        )  # /tf_static again, latched
        wait_until(lambda: scan_pub.get_subscription_count() > 0)
        np.testing.assert_allclose(frame(4, 3.0), 3.0 * core.depth[0], rtol=1e-4)

        # A laser on a moving mount: tilt_laser -> laser on /tf at stamp 5 only.
        tf_pub.publish(tf_message(["0 0 0 0 0 0 laser tilt_laser"], sec=5))
        frames = sources.frames
        wait_until(
            lambda: frames.buffer.can_transform(
                "camera_optical_frame", "tilt_laser", Time(seconds=5)
            )
        )
        looked_up, failed = frames.lookups, frames.failed
        np.testing.assert_allclose(frame(5, 3.0, "tilt_laser"), 3.0 * core.depth[0], rtol=1e-4)
        assert (frames.lookups, frames.failed) == (looked_up + 1, failed)
        kept = frame(7, 2.5, "tilt_laser")  # stamp 7: outside what /tf gave; the fit kept
        np.testing.assert_allclose(kept, 3.0 * core.depth[0], rtol=1e-4)
        assert (frames.lookups, frames.failed) == (looked_up + 2, failed + 1)
        wait_until(
            lambda: (
                "tf2: ExtrapolationException"
                in diagnostics_values(tester).get("metric last reason not fitted", "")
            )
        )

        # /tf_static with the laser's mount 0.5 m off (a URDF's), static_transforms correcting
        # that one mount (set while on): tf2 chains the parameter's mount with what it heard.
        # Stamps 8 s apart: each fit begins the scale again.
        static_pub.publish(tf_message(["0.5 0 0 0 0 0 laser camera_link", LASER_TO_OPTICAL[1]]))
        wait_until(
            lambda: (
                frames.buffer.lookup_transform(
                    "laser", "camera_link", Time()
                ).transform.translation.x
                == 0.5
            )
        )
        assert not np.allclose(frame(20, 2.0), 2.0 * core.depth[0], rtol=0.02)  # as heard
        mount = Parameter("static_transforms", value=LASER_TO_OPTICAL[:1])
        assert node.set_parameters([mount])[0].successful
        np.testing.assert_allclose(frame(30, 2.0), 2.0 * core.depth[0], rtol=1e-4)
        # Taken out of the parameter: a new buffer hears /tf_static's (latched) mount again.
        assert node.set_parameters([Parameter("static_transforms", value=[])])[0].successful
        wait_until(lambda: sources.frames is not frames and sources.frames is not None)
        wait_until(
            lambda: sources.frames.buffer.can_transform("camera_optical_frame", "laser", Time())
        )
        assert not np.allclose(frame(40, 2.0), 2.0 * core.depth[0], rtol=0.02)


def test_the_ground_is_the_floors_cloud_and_a_new_height_set_while_on_is_taken_at_once(
    tiny_checkpoint, tmp_path
):
    """Source ground: the depth fitted to the floor under a camera 1.3 m up equals the depth
    fitted to a cloud of that floor's points (range_factory's, from the pinhole model);
    ground_height set to 2.6 while on doubles the next frame's depth (the scale fitted to the
    old height no evidence for the new one: a state that gated the new fits away kept the old
    depth), and ground_pitch too is taken at the next frame. Frames 1/15 s apart, as a
    camera's."""
    from rclpy.parameter import Parameter

    params = dict(
        SIZE,
        metric_scale="scale",
        metric_scale_sources=["points"],
        ground_height=1.3,
        metric_scale_min_anchors=5,
        camera_info_wait=0.0,
    )
    with running_node(str(tiny_checkpoint), tmp_path / "cache", **params) as (node, tester):
        anchors_pub = tester.node.create_publisher(PointCloud2, "anchors/points", RELIABLE)
        wait_until(lambda: anchors_pub.get_subscription_count() > 0)
        nanosec = [0]

        def frame(sec, *changes, cloud=False):
            if changes:
                changed = [Parameter(name, value=value) for name, value in changes]
                result = node.set_parameters_atomically(changed)
                assert result.successful, result.reason
            if cloud:
                anchors_pub.publish(
                    cloud_of(floor_points(K, (240, 320), 1.3), sec, "camera_optical_frame")
                )
                wait_until(lambda: node.ranges.sources.received["points"] == 1)
            tester.info_pub.publish(stamp(INFO, sec, nanosec[0]))
            tester.image_pub.publish(stamp(encode(IMAGE, "rgb8"), sec, nanosec[0]))
            at = (sec, nanosec[0])
            msg = tester.wait_for(
                "depth/image",
                predicate=lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == at,
            )[-1]
            nanosec[0] += 10**9 // 15
            return decoding.depth_image_to_array(msg)

        by_cloud = frame(1, cloud=True)
        by_ground = frame(1, ("metric_scale_sources", ["ground"]))
        np.testing.assert_allclose(by_ground, by_cloud, rtol=1e-5)
        np.testing.assert_allclose(frame(1, ("ground_height", 2.6)), 2 * by_ground, rtol=1e-5)
        pitched = frame(1, ("ground_pitch", 0.1))
        assert np.all(pitched < 0.95 * 2 * by_ground)  # the floor nearer a camera looking down
        np.testing.assert_allclose(frame(1, ("ground_pitch", 0.0)), 2 * by_ground, rtol=1e-5)


class NamedCamera:
    """Camera `name` of a node with `cameras`, driven from the tester: IMAGE and INFO in its
    optical frame `frame`, its depth back."""

    def __init__(self, tester, name, frame):
        self.frame = frame
        self.image_pub = tester.node.create_publisher(Image, f"{name}/image", RELIABLE)
        self.info_pub = tester.node.create_publisher(type(INFO), f"{name}/camera_info", RELIABLE)
        self.depths = []
        tester.node.create_subscription(Image, f"{name}/depth/image", self.depths.append, RELIABLE)

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.image_pub, self.info_pub))

    def send(self, sec):
        self.info_pub.publish(stamp(INFO, sec, frame=self.frame))
        self.image_pub.publish(stamp(encode(IMAGE, "rgb8"), sec, frame=self.frame))

    def depth(self) -> np.ndarray:
        """The newest depth it got back (waiting for one)."""
        wait_until(lambda: self.depths)
        return decoding.depth_image_to_array(self.depths[-1])


def test_one_scan_serves_every_camera_each_fitted_to_its_own_returns(tiny_checkpoint, tmp_path):
    """Two cameras of one node (`cameras: [front, rear]`, the rear one turned half a turn on
    the laser by static_transforms), one 360-degree LaserScan: the rays in front of the laser
    return where a scene twice front's model depth is, those behind it three times rear's;
    each camera's depth takes its own scale (2 and 3), its own status in /diagnostics says so,
    and the scan, published best effort as lidar drivers publish, was received once."""
    from diagnostic_msgs.msg import DiagnosticArray
    from range_factory import REAR_MOUNT, all_round_scan
    from rclpy.qos import qos_profile_sensor_data

    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **SIZE)).predict(IMAGE)
    scan = all_round_scan([(0.0, core, 2.0), (np.pi, core, 3.0)], K, 1)
    params = dict(
        SIZE,
        cameras=["front", "rear"],
        metric_scale="scale",
        metric_scale_sources=["scan"],
        static_transforms=[*LASER_TO_OPTICAL, *REAR_MOUNT],
        metric_scale_min_anchors=5,
        camera_info_wait=0.0,
    )
    frames = {"front": "camera_optical_frame", "rear": "rear_optical_frame"}
    with running_node(str(tiny_checkpoint), tmp_path / "cache", **params) as (node, tester):
        # As lidar drivers publish: rclpy's sensor data profile (best effort, keep last 5).
        scan_pub = tester.node.create_publisher(LaserScan, "scan", qos_profile_sensor_data)
        cameras = {name: NamedCamera(tester, name, frame) for name, frame in frames.items()}
        statuses = {}

        def on_diagnostics(msg):
            for status in msg.status:
                statuses[status.name] = {kv.key: kv.value for kv in status.values}

        tester.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        wait_until(lambda: scan_pub.get_subscription_count() > 0)
        wait_until(lambda: all(camera.connected() for camera in cameras.values()))
        scan_pub.publish(scan)
        wait_until(lambda: node.ranges.sources.received["scan"] == 1)
        for camera in cameras.values():
            camera.send(1)
        for name, scale in (("front", 2.0), ("rear", 3.0)):
            depth = cameras[name].depth()
            np.testing.assert_allclose(depth, scale * core.depth[0], rtol=1e-4, err_msg=name)

        def reported():
            scales = {
                name: values.get("metric scale", "")
                for name, values in statuses.items()
                if "metric scale" in values
            }
            return len(scales) == 2 and scales

        wait_until(reported)
        scales = reported()
        assert sorted(value.split()[0] for value in scales.values()) == ["2", "3"], scales
        front, rear = (next(n for n in scales if c in n) for c in ("front", "rear"))
        assert scales[front].startswith("2 ") and scales[rear].startswith("3 "), scales
        assert node.ranges.sources.received["scan"] == 1


def test_each_named_camera_is_fitted_to_its_own_registered_depth(tiny_checkpoint, tmp_path):
    """Two cameras of one node (`cameras: [front, rear]`), each with a depth camera registered
    to it on its own `NAME/anchors/depth` (front's 1.5 times the model's depth, rear's 2.5
    times, each in its camera's frame): each camera's depth takes its own depth camera's
    scale. One topic for both made the rear camera fit the front's depth image."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **SIZE)).predict(IMAGE)
    params = dict(
        SIZE,
        cameras=["front", "rear"],
        metric_scale="scale",
        metric_scale_sources=["depth"],
        camera_info_wait=0.0,
    )
    scales = {"front": 1.5, "rear": 2.5}
    frames = {"front": "camera_optical_frame", "rear": "rear_optical_frame"}
    with running_node(str(tiny_checkpoint), tmp_path / "cache", **params) as (node, tester):
        cameras = {name: NamedCamera(tester, name, frame) for name, frame in frames.items()}
        anchors = {
            name: tester.node.create_publisher(Image, f"{name}/anchors/depth", RELIABLE)
            for name in frames
        }
        wait_until(lambda: all(camera.connected() for camera in cameras.values()))
        wait_until(lambda: all(p.get_subscription_count() for p in anchors.values()))
        for name, scale in scales.items():
            depth = registered_depth(scale * core.depth[0], 1)
            anchors[name].publish(stamp(depth, 1, frame=frames[name]))
        wait_until(lambda: node.ranges.sources.received["depth"] == 2)
        for camera in cameras.values():
            camera.send(1)
        for name, scale in scales.items():
            depth = cameras[name].depth()
            np.testing.assert_allclose(depth, scale * core.depth[0], rtol=1e-4, err_msg=name)
        assert tester.node.count_publishers("anchors/depth") == 0  # no node-wide topic used
        assert tester.node.count_subscribers("anchors/depth") == 0


def test_the_first_frames_anchors_use_the_camera_info_its_slop_pairs(tiny_checkpoint, tmp_path):
    """camera_info_slop 0.05 s: the first frame's camera_info stamped 20 ms after the image
    (its K), then a zoomed one of the same size 0.5 s later, both here before the image: the
    anchors of the frame's cloud (1.5 times the model's depth through the first K) are projected
    through the first K, paired within the slop (paired exactly, metric_scale took the newest,
    the zoomed one, and fitted another scale)."""
    core = DepthClip(model_config(tiny_checkpoint, tmp_path / "core", **SIZE)).predict(IMAGE)
    params = dict(
        SIZE,
        metric_scale="scale",
        metric_scale_sources=["points"],
        camera_info_slop=0.05,
        camera_info_wait=0.0,
    )
    zoomed = camera_info(width=320, height=240, fx=600.0, fy=600.0, cx=160.0, cy=120.0)
    with running_node(str(tiny_checkpoint), tmp_path / "cache", **params) as (node, tester):
        anchors_pub = tester.node.create_publisher(PointCloud2, "anchors/points", RELIABLE)
        wait_until(lambda: anchors_pub.get_subscription_count() > 0)
        anchors_pub.publish(
            cloud_of(anchors_at_the_cells(core, K, 1.5), 1, "camera_optical_frame")
        )
        wait_until(lambda: node.ranges.sources.received["points"] == 1)
        tester.info_pub.publish(stamp(INFO, 1, 20_000_000))
        tester.info_pub.publish(stamp(zoomed, 1, 500_000_000))
        camera = next(iter(node.cameras.values()))

        def both_here():
            newest = camera.camera_infos.fallback((320, 240))
            return newest is not None and newest.k[0] == 600.0

        wait_until(both_here)
        tester.image_pub.publish(stamp(encode(IMAGE, "rgb8"), 1))
        np.testing.assert_allclose(depth_of(tester, 1), 1.5 * core.depth[0], rtol=1e-4)
