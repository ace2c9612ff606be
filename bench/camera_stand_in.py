"""The benchmark's cameras: each publishes a rendered 640x480 frame at a fixed rate, as a driver
does (reliable, image then camera_info), and reports what came back as one JSON line.

  python bench/camera_stand_in.py RATE_HZ SECONDS [CAMERA ...]

Without CAMERA names one camera on image, camera_info -> depth/image; with names, camera X on
X/image, X/camera_info -> X/depth/image (one node's `cameras`, or a node in namespace X each).
"""

import json
import sys
import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from depthclip_ros.frame_messages import rgb8_image_fields  # noqa: E402
from depthclip_ros.synthetic_scenes import render_scene, scene_camera_info_fields  # noqa: E402


def main():
    rate, seconds = float(sys.argv[1]), float(sys.argv[2])
    names = sys.argv[3:] or [""]
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    lock = threading.Lock()
    latencies, arrivals, diagnostics = [], {n: [] for n in names}, {}

    def on_depth(name):
        def callback(msg):
            now = time.time()
            with lock:
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                latencies.append(now - stamp)
                arrivals[name].append(now)

        return callback

    def on_diagnostics(msg):
        for status in msg.status:
            diagnostics.update({kv.key: kv.value for kv in status.values})

    def topic(name, base):
        return f"{name}/{base}" if name else base

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    publishers = []
    for name in names:
        node.create_subscription(Image, topic(name, "depth/image"), on_depth(name), reliable)
        # A camera driver's QoS (REP 2003: reliable, system default depth); the node adapts.
        publishers.append(
            (
                node.create_publisher(Image, topic(name, "image"), 10),
                node.create_publisher(CameraInfo, topic(name, "camera_info"), 10),
            )
        )
    threading.Thread(target=rclpy.spin, args=(node,), daemon=True).start()
    while any(image_pub.get_subscription_count() == 0 for image_pub, _ in publishers):
        time.sleep(0.1)
    rgb, _ = render_scene("corridor")
    info = CameraInfo(**scene_camera_info_fields())
    msg = Image(**rgb8_image_fields(rgb))  # built once: a driver does not pay Python's messages

    def stream(duration):
        sent, t0 = 0, time.time()
        while time.time() - t0 < duration:
            now = time.time()
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
            for name, (image_pub, info_pub) in zip(names, publishers):
                msg.header.frame_id = f"{name or 'cam'}_optical_frame"
                info.header = msg.header
                image_pub.publish(msg)  # a driver's order: image, then camera_info
                info_pub.publish(info)
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate - time.time()))
        return sent

    stream(3.0)  # steady state first: the measured window starts warm
    time.sleep(1.0)
    with lock:
        latencies.clear(), diagnostics.clear()
        for times in arrivals.values():
            times.clear()
    start = time.time()
    sent = stream(seconds)
    end = time.time()
    time.sleep(2.0)  # the last frames' answers
    with lock:
        report = {
            "sent": sent * len(names),
            "received": sum(len(times) for times in arrivals.values()),
            "received_per_camera": {n: len(times) for n, times in arrivals.items()},
            "lat": list(latencies),
            "start": start,
            "end": end,
            "node_inference_ms": diagnostics.get("inference median (ms)"),
        }
    print(json.dumps(report))
    rclpy.shutdown()


if __name__ == "__main__":
    main()
