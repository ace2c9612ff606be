"""tf2 as the tests have it: built from geometry2's sources (`make tf2`, support/
tf2_from_source.py) where ../shared/vendor/geometry2 is, so that the tf2 tests run in CI on
Kilted and on Jazzy rather than skip."""

import pytest
import tf2_from_source


def test_tf2_ros_imports_and_chains_transforms_where_its_sources_are():
    if not tf2_from_source.SOURCES.is_dir():
        pytest.skip(f"{tf2_from_source.SOURCES} is not here: tf2 comes from a ROS install")
    assert tf2_from_source.missing() == "", tf2_from_source.missing()
    from geometry_msgs.msg import TransformStamped
    from rclpy.time import Time
    from tf2_ros import Buffer

    buffer = Buffer()
    for parent, child, x in (("odom", "base_link", 1.0), ("base_link", "laser", 0.25)):
        t = TransformStamped(child_frame_id=child)
        t.header.frame_id = parent
        t.transform.translation.x = x
        t.transform.rotation.w = 1.0
        buffer.set_transform_static(t, "test")
    looked_up = buffer.lookup_transform("odom", "laser", Time())
    assert looked_up.transform.translation.x == 1.25
