"""A camera driver stand-in, run as its own process: publishes frames one at a time and waits for
each frame's depth, as the node's users see it across processes.

  python camera_process.py WIDTH HEIGHT reliable|best_effort COUNT [TIMEOUT_S] [NAMESPACE]

Prints one JSON line: {"answered": [...stamps...], "sent": N, "depth_range": [min, max]}.
Image first, camera_info right after with the same stamp (image_transport's CameraPublisher order).
"""

import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from depthclip_ros.messages import decoding


def main():
    width, height, reliability, count = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
    )
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 20.0
    namespace = sys.argv[6] if len(sys.argv) > 6 else ""
    rclpy.init()
    node = rclpy.create_node("camera_stand_in", namespace=namespace)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy[reliability.upper()])
    image_pub = node.create_publisher(Image, "image", qos)
    info_pub = node.create_publisher(CameraInfo, "camera_info", qos)
    answered, ranges = set(), []

    def on_depth(msg):
        depth = decoding.depth_image_to_array(msg)
        answered.add(msg.header.stamp.sec)
        ranges.append((float(np.nanmin(depth)), float(np.nanmax(depth))))

    node.create_subscription(
        Image,
        "depth/image",
        on_depth,
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )
    deadline = time.monotonic() + 60
    while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes()
    sent = 0
    for sec in range(1, count + 1):
        image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=pixels)
        info = CameraInfo(
            width=width,
            height=height,
            k=[width, 0.0, width / 2, 0.0, width, height / 2, 0.0, 0.0, 1.0],
        )
        for msg in (image, info):
            msg.header.stamp.sec, msg.header.frame_id = sec, "camera_optical_frame"
        image_pub.publish(image)
        info_pub.publish(info)
        sent += 1
        end = time.monotonic() + timeout
        while sec not in answered and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    depth_range = [min(r[0] for r in ranges), max(r[1] for r in ranges)] if ranges else None
    print(
        json.dumps({"answered": sorted(answered), "sent": sent, "depth_range": depth_range}),
        flush=True,
    )
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
