"""The main job on a built-in input: the whole ROS 2 pipeline, end to end.

Starts the depthclip node as its own process, publishes a few rendered 640x480
scenes (with their camera_info) over DDS, receives depth and point clouds, and
writes coloured depth PNGs and PLY clouds. The scenes (synthetic_scenes) are ray-cast
boxes, so their true depth is known: each prediction is scored with the offline eval's
metrics and protocol (depthclip_ros.metrics). Then each scene again with metric_scale fitted
to its floor, the camera's height known: the floor's points where the camera sees it (what
the source ground computes from ground_height) on the node's anchors/points, the depth
before and after scored alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import metrics
from ..errors import DepthClipError
from ..files import cannot_write
from ..synthetic_scenes import SCENES, render_scene, scene_camera_info_fields
from .node_process import local_dds_env, start_node_process, stop_node_process


def run(
    out,
    params=None,
    model=None,
    device="auto",
    cloud_stride=8,
    random_weights=None,
    timeout=300.0,
) -> int:
    """The main job; the exit code: 0 done, 2 the node stopped (its error printed), 3 it never
    started, 4 a scene was not answered within `timeout` seconds; `main` adds 5: a parameter
    file that cannot be read, or an output that cannot be written (one line)."""
    env = local_dds_env()
    os.environ.update(env)  # before rclpy is imported
    import rclpy

    from ..config.params_files import default_params_file, read_params_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params_file = Path(params or default_params_file())
    params = read_params_file(params_file)
    overrides = _overrides(out, model, device, cloud_stride, random_weights)
    node_proc = start_node_process(params_file, overrides, env, out / "node.log")
    rclpy.init()
    client = _DemoClient()
    try:
        status = client.wait_for(node_proc, out, timeout)
        if status:
            return status
        bins = [float(b) for b in params.get("depth_bins", (1.0, 3.0))]
        summary = []
        for sec, name in enumerate(SCENES, start=1):
            rgb, truth = render_scene(name)
            t0 = time.monotonic()
            answer = client.ask(sec, rgb, timeout)
            if answer is None:
                print(f"{name}: no depth/points within {timeout}s", file=sys.stderr)
                return 4
            summary.append(_save_scene(out, name, rgb, truth, *answer, bins, t0))
        for sec, (name, scene) in enumerate(zip(SCENES, summary), start=1):
            rgb, truth = render_scene(name)
            t0 = time.monotonic()
            # Stamps far apart: each scene's fit starts the scale again, as after a gap.
            answer = client.ask(FLOOR_FIT_SECONDS * sec, rgb, timeout, floor_points(name))
            if answer is None:
                print(f"{name}: no depth/points within {timeout}s", file=sys.stderr)
                return 4
            fitted = _save_scene(out, f"{name}_floor_fit", rgb, truth, *answer, bins, t0)
            scene["floor_fit"] = {k: fitted[k] for k in ("depth_min_m", "depth_max_m", "metrics")}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(
            f"wrote {len(summary)} x (rgb, depth, truth PNG, PLY cloud), each also fitted to "
            f"its floor (*_floor_fit), and summary.json to {out}/"
        )
        return 0
    finally:
        client.node.destroy_node()
        rclpy.shutdown()
        stop_node_process(node_proc, timeout=10)


# The second pass's stamps, this many seconds apart: more than 4 metric_scale half-lives, so that
# each scene's fit is taken as it is (a new view after a gap), not mixed with the last scene's.
FLOOR_FIT_SECONDS = 1000


def floor_points(name: str) -> np.ndarray:
    """The floor's points (optical frame) at the pixels where the scene's camera sees its floor,
    at its known height: metric_scale's ground points, less those a wall hides."""
    from ..metric_scale.anchors import ground_points
    from ..synthetic_scenes import CX, CY, FX, FY, HEIGHT, WIDTH

    k = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])
    points = ground_points(k, (HEIGHT, WIDTH), SCENES[name][1], 0.0)
    truth = render_scene(name)[1]
    u = np.round(points[:, 0] / points[:, 2] * FX + CX).astype(int)
    v = np.round(points[:, 1] / points[:, 2] * FY + CY).astype(int)
    seen = np.abs(truth[v, u] - points[:, 2]) < 0.01 * points[:, 2]
    return points[seen]


def _overrides(out, model, device, cloud_stride, random_weights) -> dict:
    """The node's parameters beyond the file: the options, metric_scale fitted to the anchors
    the demo publishes (the scenes' floors; the camera still), a random-weight model if
    asked."""
    overrides = {
        "device": device,
        "cloud_stride": cloud_stride,
        "metric_scale": "scale_shift",
        "metric_scale_sources": ["points"],
        "metric_scale_fixed_frame": "",
        "metric_scale_require": False,  # the first pass's clouds, before any fit
    }
    if random_weights:
        from .random_clip import save_random_checkpoint

        overrides["model"] = save_random_checkpoint(
            out / f"random_{random_weights}.pt", random_weights
        )
        overrides["temperature"] = 1.0  # a random CLIP saturates the softmax at 0.1
        print(
            f"using a RANDOM-WEIGHT CLIP ({random_weights}): checks the pipeline, "
            "the depth is meaningless"
        )
    elif model:
        overrides["model"] = model
    return overrides


class _DemoClient:
    """The demo's ROS side: a camera's publishers and the depth and cloud subscriptions."""

    def __init__(self):
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from ..messages import topics

        self.node = rclpy.create_node("depthclip_demo")
        self.got = {"depth": {}, "points": {}}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for key, msg_type, topic in (
            ("depth", Image, topics.DEPTH_IMAGE),
            ("points", PointCloud2, topics.POINTS),
        ):
            self.node.create_subscription(msg_type, topic, self._keep(key), reliable)
        # Reliable, as REP 2003 drivers publish.
        self.image_pub = self.node.create_publisher(Image, topics.IMAGE, reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, topics.CAMERA_INFO, reliable)
        self.anchors_pub = self.node.create_publisher(
            PointCloud2, topics.RANGE_INPUTS["points"], reliable
        )

    def _keep(self, key):
        def keep(msg):
            self.got[key][msg.header.stamp.sec] = msg

        return keep

    def wait_for(self, node_proc, out, timeout) -> int:
        """0 once the node subscribes (its model loaded); else 2 (it exited) or 3 (timeout)."""
        import rclpy

        deadline = time.monotonic() + timeout
        while self.image_pub.get_subscription_count() == 0:
            if node_proc.poll() is not None:
                print((out / "node.log").read_text().strip(), file=sys.stderr)
                print(
                    f"\nthe depthclip node exited (code {node_proc.returncode}) before it was "
                    "ready; see its error above",
                    file=sys.stderr,
                )
                return 2
            if time.monotonic() > deadline:
                print("timed out waiting for the depthclip node to start", file=sys.stderr)
                return 3
            rclpy.spin_once(self.node, timeout_sec=0.1)
        return 0

    def ask(self, sec, rgb, timeout, anchors=None):
        """(depth message, cloud message) of one frame stamped `sec`, or None after
        `timeout`; `anchors` (points in the optical frame) published first on anchors/points,
        with the frame's stamp."""
        import rclpy
        from sensor_msgs.msg import CameraInfo, Image

        from ..messages import outputs

        info = CameraInfo(**scene_camera_info_fields())
        msg = Image(**outputs.rgb8_image_fields(rgb))
        for m in (info, msg):
            m.header.stamp.sec, m.header.frame_id = sec, "camera_color_optical_frame"
        t0 = time.monotonic()
        if anchors is not None:  # delivered before the image: the node holds it for the frame
            while self.anchors_pub.get_subscription_count() == 0 and time.monotonic() < t0 + 10:
                rclpy.spin_once(self.node, timeout_sec=0.05)
            self.anchors_pub.publish(self._cloud(msg.header, anchors))
            time.sleep(0.2)
        self.image_pub.publish(msg)  # a driver's order: the image, then its camera_info
        self.info_pub.publish(info)
        depth, points = self.got["depth"], self.got["points"]
        while (sec not in depth or sec not in points) and time.monotonic() - t0 < timeout:
            rclpy.spin_once(self.node, timeout_sec=0.05)
        if sec not in depth or sec not in points:
            return None
        return depth[sec], points[sec]

    @staticmethod
    def _cloud(header, points: np.ndarray):
        from ..messages import outputs, point_cloud

        build = outputs.MessageBuilder.from_ros()
        zeros = np.zeros((1, len(points)), np.float32)
        fields = point_cloud.pointcloud_fields(points[None], np.zeros((1, len(points), 3)), zeros)
        return build.point_cloud(header, fields)


def _save_scene(out, name, rgb, truth, depth_msg, points_msg, bins, t0) -> dict:
    """The scene's files (depth .npy, PNGs, PLY cloud), its scores printed; its summary."""
    from ..files import save_png, write_ply
    from ..messages import decoding, point_cloud
    from ..messages.colormaps import colorize

    depth = decoding.depth_image_to_array(depth_msg)
    cloud = point_cloud.pointcloud_to_array(points_msg)
    rgb_cols = point_cloud.unpack_rgb(cloud[..., 3])
    np.save(out / f"{name}_depth.npy", depth)  # metres, NaN = no prediction
    save_png(out / f"{name}_rgb.png", rgb)
    save_png(out / f"{name}_depth.png", colorize(depth, bins[0], bins[-1]))
    save_png(
        out / f"{name}_truth.png",
        colorize(np.clip(truth, bins[0], bins[-1]), bins[0], bins[-1]),
    )
    n = write_ply(out / f"{name}_cloud.ply", cloud[..., :3], rgb_cols)
    # The eval's protocol: its crop, and ground truth within (1 mm, 10 m).
    scores = metrics.evaluate_image(truth, metrics.on_canvas(depth)) or {}
    scored = ", ".join(f"{k} {scores[k]:.3f}" for k in ("d1", "abs_rel", "rmse") if scores)
    print(
        f"{name:10s} depth {np.nanmin(depth):.2f}..{np.nanmax(depth):.2f} m "
        f"(truth {truth.min():.2f}..{truth.max():.2f} m), {scored or 'no valid pixel'}, "
        f"{n} cloud points, {time.monotonic() - t0:.2f} s"
    )
    return {
        "scene": name,
        "depth_min_m": float(np.nanmin(depth)),
        "depth_max_m": float(np.nanmax(depth)),
        "true_depth_range_m": [float(truth.min()), float(truth.max())],
        "metrics": scores,
        "cloud_points": n,
        "latency_s": round(time.monotonic() - t0, 3),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument(
        "--params", help="parameter YAML (default: the package's config/depthclip.yaml)"
    )
    p.add_argument(
        "--model", help="CLIP model name or checkpoint path (default: as in --params, RN50)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--cloud-stride", type=int, default=8)
    p.add_argument(
        "--random-weights",
        choices=("tiny", "RN50"),
        help="use a random-weight CLIP of this shape (pipeline check without the real weights)",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the node / each frame"
    )
    args = p.parse_args(argv)
    try:
        return run(
            args.out,
            args.params,
            args.model,
            args.device,
            args.cloud_stride,
            args.random_weights,
            args.timeout,
        )
    except DepthClipError as exc:  # a parameter file that cannot be read or is wrong
        print(f"depthclip-demo: error: {exc}", file=sys.stderr)
    except OSError as exc:  # the output folder: full, read-only, a file
        print(f"depthclip-demo: error: {cannot_write(args.out, exc)}", file=sys.stderr)
    return 5


if __name__ == "__main__":
    sys.exit(main())
