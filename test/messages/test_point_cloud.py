"""Back-projection and the cloud's filters, against formulas written out."""

import numpy as np
from helpers import structured_image

from depthclip_ros.messages import point_cloud


def test_backprojection_formula():
    depth = np.full((480, 640), 2.0, np.float32)
    depth[0, 8] = np.nan
    rgb = structured_image()
    spread = np.linspace(0.0, 1.0, 480 * 640, dtype=np.float32).reshape(480, 640)
    pts, cols, std = point_cloud.cloud_points(depth, spread, rgb, (500.0, 400.0, 320.0, 240.0), 8)
    assert pts.shape == (60, 80, 3) and std[3, 5] == spread[24, 40]
    np.testing.assert_allclose(
        pts[3, 5], [(40 - 320) * 2 / 500, (24 - 240) * 2 / 400, 2.0], rtol=1e-6
    )
    np.testing.assert_array_equal(cols[3, 5], rgb[24, 40])
    fields = point_cloud.pointcloud_fields(pts, cols, std)
    assert fields["is_dense"] is False and fields["row_step"] == 80 * 20
    assert [f[:2] for f in fields["fields"]] == [
        ("x", 0),
        ("y", 4),
        ("z", 8),
        ("rgb", 12),
        ("std", 16),
    ]
    arr = np.frombuffer(fields["data"], "<f4").reshape(60, 80, 5)
    assert np.isnan(arr[0, 1, :3]).all() and np.isnan(arr[0, 1, 4])
    assert arr[3, 5, 4] == spread[24, 40]
    packed = arr[3, 5, 3:4].view(np.uint32)[0]
    assert packed == (int(rgb[24, 40, 0]) << 16 | int(rgb[24, 40, 1]) << 8 | int(rgb[24, 40, 2]))
    np.testing.assert_array_equal(point_cloud.unpack_rgb(arr[..., 3]), cols)  # round trip
    # Colours of any number type pack alike (the demo's anchors are float zeros).
    as_floats = point_cloud.pack_rgb(cols.astype(np.float64)).view(np.uint32)
    np.testing.assert_array_equal(as_floats, arr[..., 3].view(np.uint32))


def test_cloud_filters_drop_exactly_the_points_they_should():
    z = np.array([[0.5, 1.0, 2.0, 3.0, 4.0, np.nan]], np.float32)
    std = np.array([[0.1, 0.9, 0.2, 0.5, 0.3, 0.1]], np.float32)
    points = np.stack([np.zeros_like(z), np.zeros_like(z), z], axis=-1)

    def kept(max_std, min_range, max_range):
        keep = point_cloud.kept_points(points, std, max_std, min_range, max_range)
        return [int(i) for i in np.flatnonzero(keep[0])]

    assert kept(0.0, 0.0, 0.0) == [0, 1, 2, 3, 4]  # no filter: every finite point
    assert kept(0.3, 0.0, 0.0) == [0, 2, 4]  # std at most 0.3 (0.3 itself kept)
    assert kept(0.0, 1.0, 3.0) == [1, 2, 3]  # range bounds inclusive
    assert kept(0.5, 1.0, 3.5) == [2, 3]
    colours = np.zeros((1, 6, 3), np.uint8)
    fields = point_cloud.pointcloud_fields(
        points, colours, std, point_cloud.kept_points(points, std, 0.5, 1.0, 3.5)
    )
    arr = np.frombuffer(fields["data"], "<f4").reshape(1, 6, 5)
    assert [int(i) for i in np.flatnonzero(np.isfinite(arr[0, :, 2]))] == [2, 3]
    assert np.isnan(arr[0, [0, 1, 4, 5], 4]).all() and fields["is_dense"] is False
