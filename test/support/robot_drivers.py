"""A mobile robot's drivers as the node meets them, each run as its own process:

  python robot_drivers.py frames FRAMES.json   # robot_state_publisher and odometry
  python robot_drivers.py scan SCAN.json       # a 2D lidar

`frames`: the static_transform_publisher texts of FRAMES.json on /tf_static through tf2_ros's
StaticTransformBroadcaster (latched, as robot_state_publisher publishes a URDF's fixed joints),
and odom -> base_link (the robot standing) on /tf through its TransformBroadcaster at 50 Hz,
stamped now. `scan`: a LaserScan (SCAN.json: angle_min, angle_increment, ranges, frame) on
/scan at 20 Hz, stamped now, with the sensor-data QoS lidar drivers use. Each runs until killed.
"""

import json
import sys
from pathlib import Path

import rclpy
from geometry_msgs.msg import TransformStamped
from range_factory import quaternion_of
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import LaserScan

from depthclip_ros.transforms import parse_static_transform


def transform_stamped(text: str, stamp) -> TransformStamped:
    t = parse_static_transform(text)
    msg = TransformStamped(child_frame_id=t.child)
    msg.header.frame_id, msg.header.stamp = t.parent, stamp
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(v) for v in t.translation
    )
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in quaternion_of(t.rotation))
    return msg


def frames(node, texts) -> None:
    from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster

    now = node.get_clock().now().to_msg()
    static = StaticTransformBroadcaster(node)
    static.sendTransform([transform_stamped(text, now) for text in texts])
    odometry = TransformBroadcaster(node)
    node.create_timer(
        0.02,
        lambda: odometry.sendTransform(
            transform_stamped("0 0 0 0 0 0 odom base_link", node.get_clock().now().to_msg())
        ),
    )


def scan(node, given) -> None:
    publisher = node.create_publisher(LaserScan, "/scan", qos_profile_sensor_data)

    def publish():
        msg = LaserScan(
            angle_min=given["angle_min"],
            angle_max=given["angle_min"] + given["angle_increment"] * (len(given["ranges"]) - 1),
            angle_increment=given["angle_increment"],
            range_min=0.05,
            range_max=100.0,
            ranges=given["ranges"],
        )
        msg.header.frame_id, msg.header.stamp = given["frame"], node.get_clock().now().to_msg()
        publisher.publish(msg)

    node.create_timer(0.05, publish)


def main() -> None:
    role, path = sys.argv[1], Path(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node(f"robot_{role}")
    {"frames": frames, "scan": scan}[role](node, json.loads(path.read_text()))
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
