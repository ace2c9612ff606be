"""The main job on a built-in input: the whole ROS 2 pipeline, end to end.

Starts the depthclip node as its own process, publishes a few rendered 640x480
scenes (with their camera_info) over DDS, receives depth and point clouds, and
writes coloured depth PNGs and PLY clouds. The scenes are ray-cast boxes, so their
true depth is known and reported beside the prediction.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FX = FY = 525.0
CX, CY = 319.5, 239.5
WIDTH, HEIGHT = 640, 480

# name -> (half width, floor below camera, ceiling above camera, far wall) in metres
SCENES = {
    "corridor": (1.2, 1.3, 1.3, 9.0),
    "room": (2.5, 1.2, 1.6, 4.5),
    "near_wall": (1.6, 0.9, 1.4, 2.2),
}


def render_scene(name: str):
    """Ray-cast a textured box around the camera: (rgb uint8 (H, W, 3), true depth (H, W)
    metres)."""
    half_w, floor, ceil, far = SCENES[name]
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    dx, dy = (u - CX) / FX, (v - CY) / FY  # ray (dx, dy, 1): t along it is the z depth
    with np.errstate(divide="ignore"):
        candidates = {
            "floor": np.where(dy > 0, floor / dy, np.inf),
            "ceiling": np.where(dy < 0, -ceil / dy, np.inf),
            "right": np.where(dx > 0, half_w / dx, np.inf),
            "left": np.where(dx < 0, -half_w / dx, np.inf),
            "far": np.full(dx.shape, far),
        }
    names = list(candidates)
    stack = np.stack([candidates[n] for n in names])
    surface = stack.argmin(axis=0)
    z = stack.min(axis=0)
    x, y = dx * z, dy * z
    base = np.array(
        [[150, 110, 80], [230, 230, 220], [200, 170, 140], [140, 170, 200], [120, 160, 110]], float
    )
    # Checker texture in surface coordinates (0.5 m squares): texture gradient is a depth cue.
    coords = {0: (x, z), 1: (x, z), 2: (y, z), 3: (y, z), 4: (x, y)}
    checker = np.zeros_like(z)
    for s, (a, b) in coords.items():
        m = surface == s
        checker[m] = (np.floor(a[m] / 0.5) + np.floor(b[m] / 0.5)) % 2
    shade = np.clip(1.6 / (0.6 + 0.25 * z), 0.35, 1.2)  # darker with distance
    rgb = base[surface] * (0.75 + 0.25 * checker)[..., None] * shade[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8), z.astype(np.float32)


def scene_camera_info_fields() -> dict:
    """Fields of the sensor_msgs/CameraInfo of the camera the scenes are rendered with."""
    return dict(
        width=WIDTH,
        height=HEIGHT,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def local_dds_env(domain_id=None) -> dict:
    """Environment for ROS processes that talk only to each other on this machine: loopback
    discovery on a domain of their own. The middleware itself keeps its defaults, as on a robot."""
    domain = domain_id or os.environ.get("DEPTHCLIP_DEMO_DOMAIN_ID") or str(random.randint(1, 100))
    return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain)}


def start_node_process(params_file, overrides: dict, env: dict, log_path, namespace: str = ""):
    """The depthclip node as its own process, its output going to `log_path`."""
    cmd = [
        sys.executable,
        "-m",
        "depthclip_ros.node",
        "--ros-args",
        "--params-file",
        str(params_file),
    ]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for k, v in overrides.items():
        cmd += ["-p", f"{k}:={v}"]
    log = open(log_path, "w")  # a file, not a pipe: a chatty node must never block on a full pipe
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)


def run(args) -> int:
    env = local_dds_env()
    os.environ.update(env)  # before rclpy is imported
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from . import conversions, topics
    from .config import default_params_file, read_params_file
    from .visualization import colorize, save_png, write_ply

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params_file = Path(args.params or default_params_file())
    params = read_params_file(params_file)
    overrides = {"device": args.device, "cloud_stride": args.cloud_stride}
    if args.random_weights:
        from .random_clip import save_random_checkpoint

        overrides["model"] = save_random_checkpoint(
            out / f"random_{args.random_weights}.pt", args.random_weights
        )
        overrides["temperature"] = 1.0  # a random CLIP saturates the softmax at 0.1
        print(
            f"using a RANDOM-WEIGHT CLIP ({args.random_weights}): checks the pipeline, "
            "the depth is meaningless"
        )
    elif args.model:
        overrides["model"] = args.model
    node_proc = start_node_process(params_file, overrides, env, out / "node.log")

    rclpy.init()
    node = rclpy.create_node("depthclip_demo")
    got = {"depth": {}, "points": {}}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(
        Image,
        topics.DEPTH_IMAGE,
        lambda m: got["depth"].__setitem__(m.header.stamp.sec, m),
        reliable,
    )
    node.create_subscription(
        PointCloud2,
        topics.POINTS,
        lambda m: got["points"].__setitem__(m.header.stamp.sec, m),
        reliable,
    )
    image_pub = node.create_publisher(
        Image, topics.IMAGE, reliable
    )  # reliable, as REP 2003 drivers
    info_pub = node.create_publisher(CameraInfo, topics.CAMERA_INFO, reliable)
    summary = []
    try:
        deadline = time.monotonic() + args.timeout
        while (
            image_pub.get_subscription_count() == 0
        ):  # the node subscribes once its model is loaded
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
            rclpy.spin_once(node, timeout_sec=0.1)
        bins = [float(b) for b in params.get("depth_bins", (1.0, 3.0))]
        for sec, name in enumerate(SCENES, start=1):
            rgb, truth = render_scene(name)
            info = CameraInfo(**scene_camera_info_fields())
            msg = Image(**conversions.rgb8_image_fields(rgb))
            for m in (info, msg):
                m.header.stamp.sec, m.header.frame_id = sec, "camera_color_optical_frame"
            t0 = time.monotonic()
            image_pub.publish(
                msg
            )  # a driver's order: the image, then its camera_info (same stamp)
            info_pub.publish(info)
            while (
                sec not in got["depth"] or sec not in got["points"]
            ) and time.monotonic() - t0 < args.timeout:
                rclpy.spin_once(node, timeout_sec=0.05)
            if sec not in got["depth"] or sec not in got["points"]:
                print(f"{name}: no depth/points within {args.timeout}s", file=sys.stderr)
                return 4
            depth = conversions.depth_image_to_array(got["depth"][sec])
            cloud = conversions.pointcloud_to_array(got["points"][sec])
            rgb_cols = conversions.unpack_rgb(cloud[..., 3])
            save_png(out / f"{name}_rgb.png", rgb)
            save_png(out / f"{name}_depth.png", colorize(depth, bins[0], bins[-1]))
            save_png(
                out / f"{name}_truth.png",
                colorize(np.clip(truth, bins[0], bins[-1]), bins[0], bins[-1]),
            )
            n = write_ply(out / f"{name}_cloud.ply", cloud[..., :3], rgb_cols)
            valid = np.isfinite(depth)
            absrel = float(np.mean(np.abs(depth[valid] - truth[valid]) / truth[valid]))
            summary.append(
                {
                    "scene": name,
                    "depth_min_m": float(np.nanmin(depth)),
                    "depth_max_m": float(np.nanmax(depth)),
                    "true_depth_range_m": [float(truth.min()), float(truth.max())],
                    "absrel_vs_truth": absrel,
                    "cloud_points": n,
                    "latency_s": round(time.monotonic() - t0, 3),
                }
            )
            print(
                f"{name:10s} depth {np.nanmin(depth):.2f}..{np.nanmax(depth):.2f} m "
                f"(truth {truth.min():.2f}..{truth.max():.2f} m), AbsRel {absrel:.3f}, "
                f"{n} cloud points, {time.monotonic() - t0:.2f} s"
            )
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(
            f"wrote {len(summary)} x (rgb, depth, truth PNG, PLY cloud) and summary.json to {out}/"
        )
        return 0
    finally:
        node.destroy_node()
        rclpy.shutdown()
        if node_proc.poll() is None:
            node_proc.send_signal(signal.SIGINT)
            try:
                node_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node_proc.kill()


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
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
