"""The pinhole camera model against image_geometry's rules, computed by hand."""

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, RegionOfInterest

from depthclip_ros.messages.camera_model import PinholeCamera


def info(
    width=1280,
    height=960,
    fx=1000.0,
    fy=900.0,
    cx=640.0,
    cy=480.0,
    p_fx=None,
    binning=(0, 0),
    roi=(0, 0, 0, 0),
    d=(0.0,) * 5,
    tx=0.0,
):
    p_fx = fx if p_fx is None else p_fx
    x, y, w, h = roi
    return CameraInfo(
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=list(d),
        k=[fx, 0, cx, 0, fy, cy, 0, 0, 1],
        r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
        p=[p_fx, 0, cx, tx, 0, fy, cy, 0, 0, 0, 1, 0],
        binning_x=binning[0],
        binning_y=binning[1],
        roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
    )


def from_fields(fields):
    fields = dict(fields)
    return CameraInfo(roi=RegionOfInterest(**fields.pop("roi")), **fields)


def test_plain_camera_and_resize():
    cam = PinholeCamera.from_camera_info(info())
    assert (cam.width, cam.height) == (1280, 960)
    assert cam.intrinsics() == (1000.0, 900.0, 640.0, 480.0)
    half = cam.scaled_to(640, 480)
    assert half.intrinsics() == (500.0, 450.0, 320.0, 240.0)
    np.testing.assert_allclose(half.k[:2], [[500, 0, 320], [0, 450, 240]])


def test_binning_and_roi_as_image_geometry_applies_them():
    """image_geometry: c' = (c - offset) / binning, f' = f / binning; size = ROI size / binning."""
    cam = PinholeCamera.from_camera_info(info(binning=(2, 4), roi=(100, 40, 800, 600), tx=-50.0))
    assert (cam.width, cam.height) == (400, 150)
    assert cam.intrinsics() == (1000 / 2, 900 / 4, (640 - 100) / 2, (480 - 40) / 4)
    np.testing.assert_allclose(cam.p[0], [500, 0, 270, -25])  # P(0,3) = fx Tx scales with fx


def test_published_camera_info_is_read_back_unchanged():
    """The written model carries binning and ROI already applied: reading it again changes
    nothing."""
    cam = PinholeCamera.from_camera_info(info(binning=(2, 2), roi=(64, 32, 640, 480))).scaled_to(
        160, 120
    )
    fields = cam.camera_info_fields()
    assert (fields["binning_x"], fields["binning_y"]) == (0, 0)
    assert fields["roi"] == {
        "x_offset": 0,
        "y_offset": 0,
        "height": 0,
        "width": 0,
        "do_rectify": False,
    }
    again = PinholeCamera.from_camera_info(from_fields(fields))
    assert (again.width, again.height) == (160, 120)
    np.testing.assert_allclose(again.k, cam.k)
    np.testing.assert_allclose(again.p, cam.p)


def test_binned_pixel_back_projects_to_the_full_resolution_ray():
    """A 3D point seen at full resolution, binned and cropped, back-projects to the same point."""
    full = info(binning=(0, 0))
    point = np.array([0.3, -0.2, 2.0])
    u = 1000.0 * point[0] / point[2] + 640.0
    v = 900.0 * point[1] / point[2] + 480.0
    cam = PinholeCamera.from_camera_info(info(binning=(2, 2), roi=(200, 100, 800, 600)))
    ub, vb = (u - 200) / 2, (v - 100) / 2
    fx, fy, cx, cy = cam.intrinsics()
    np.testing.assert_allclose([(ub - cx) * 2.0 / fx, (vb - cy) * 2.0 / fy], point[:2])
    assert PinholeCamera.from_camera_info(full).intrinsics() == (1000.0, 900.0, 640.0, 480.0)


def test_projection_matrix_first_then_k_and_uncalibrated():
    assert PinholeCamera.from_camera_info(info(p_fx=950.0)).intrinsics()[0] == 950.0
    no_p = info()
    no_p.p = [0.0] * 12
    assert PinholeCamera.from_camera_info(no_p).intrinsics()[0] == 1000.0
    uncalibrated = info(fx=0.0, fy=0.0, p_fx=0.0)
    with pytest.raises(ValueError, match="non-positive focal length"):
        PinholeCamera.from_camera_info(uncalibrated).intrinsics()


def test_distortion_flag():
    assert not PinholeCamera.from_camera_info(info()).is_distorted
    assert PinholeCamera.from_camera_info(info(d=(0.1, -0.2, 0, 0, 0))).is_distorted
