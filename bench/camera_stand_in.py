"""The benchmark's camera: publishes a rendered 640x480 frame at a fixed rate, as a driver does
(reliable, image then camera_info), and reports what came back as one JSON line.

  python bench/camera_stand_in.py RATE_HZ SECONDS
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
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    latencies, arrivals, diagnostics = [], [], {}

    def on_depth(msg):
        now = time.time()
        latencies.append(now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))
        arrivals.append(now)

    def on_diagnostics(msg):
        for status in msg.status:
            diagnostics.update({kv.key: kv.value for kv in status.values})

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "depth/image", on_depth, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    # A camera driver's QoS (REP 2003: reliable, system default depth); the node adapts to it.
    image_pub = node.create_publisher(Image, "image", 10)
    info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
    threading.Thread(target=rclpy.spin, args=(node,), daemon=True).start()
    while image_pub.get_subscription_count() == 0:
        time.sleep(0.1)
    rgb, _ = render_scene("corridor")
    info = CameraInfo(**scene_camera_info_fields())
    msg = Image(**rgb8_image_fields(rgb))  # built once: a driver does not pay Python's messages
    msg.header.frame_id = "cam"

    def stream(duration):
        sent, t0 = 0, time.time()
        while time.time() - t0 < duration:
            now = time.time()
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
            info.header = msg.header
            image_pub.publish(msg)  # a driver's order: image, then camera_info
            info_pub.publish(info)
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate - time.time()))
        return sent

    stream(3.0)  # steady state first: the measured window starts warm
    time.sleep(1.0)
    latencies.clear(), arrivals.clear(), diagnostics.clear()
    start = time.time()
    sent = stream(seconds)
    end = time.time()
    time.sleep(2.0)  # the last frames' answers
    report = {
        "sent": sent,
        "received": len(arrivals),
        "lat": latencies,
        "start": start,
        "end": end,
        "node_inference_ms": diagnostics.get("inference median (ms)"),
    }
    print(json.dumps(report))
    rclpy.shutdown()


if __name__ == "__main__":
    main()
