import io

import numpy as np
import pytest
from helpers import ALL_ENCODINGS, encode, structured_image
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from depthclip_ros.errors import ImageDecodeError
from depthclip_ros.messages import decoding, outputs, point_cloud

RGB = structured_image(48, 64)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16"])
@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("bigendian", [False, True])
def test_colour_encodings_round_trip_exactly(encoding, padding, bigendian):
    out = decoding.image_to_rgb8(encode(RGB, encoding, padding, bigendian))
    np.testing.assert_array_equal(out, RGB)


def test_mono_replicates_first_channel():
    grey = np.repeat(RGB[..., :1], 3, axis=2)
    np.testing.assert_array_equal(decoding.image_to_rgb8(encode(RGB, "mono8", 3)), grey)
    np.testing.assert_array_equal(decoding.image_to_rgb8(encode(RGB, "mono16", 2, True)), grey)
    np.testing.assert_array_equal(decoding.image_to_rgb8(encode(RGB, "mono16", 0, False)), grey)


@pytest.mark.parametrize("encoding", [e for e in ALL_ENCODINGS if e.startswith(("bayer", "yuv"))])
def test_subsampled_encodings_are_close(encoding):
    out = decoding.image_to_rgb8(encode(RGB, encoding, padding=4))
    err = np.abs(out.astype(int) - RGB.astype(int))
    # Exact where the colour was sampled; small mean error elsewhere on this smooth image.
    assert err.mean() < 12, err.mean()


def test_bayer_keeps_sampled_pixels_exactly():
    out = decoding.image_to_rgb8(encode(RGB, "bayer_rggb8"))
    np.testing.assert_array_equal(out[0::2, 0::2, 0], RGB[0::2, 0::2, 0])
    np.testing.assert_array_equal(out[1::2, 1::2, 2], RGB[1::2, 1::2, 2])


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (dict(encoding="16UC1"), "depth image"),
        (dict(encoding="32FC1"), "depth image"),
        (dict(encoding="weird"), "unsupported encoding"),
        (dict(width=0), "empty image"),
        (dict(height=0), "empty image"),
        (dict(step=10), "smaller than one row"),
        (dict(data=b"\x00" * 100), "data has 100 bytes"),
    ],
)
def test_malformed_images_are_rejected_with_reason(mutate, reason):
    msg = encode(RGB, "rgb8")
    for k, v in mutate.items():
        setattr(msg, k, v)
    with pytest.raises(ImageDecodeError, match=reason):
        decoding.image_to_rgb8(msg)


def test_compressed_jpeg_png_and_garbage():
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        PILImage.fromarray(RGB).save(buf, format=fmt, quality=95)
        msg = CompressedImage(format=fmt.lower(), data=buf.getvalue())
        out = decoding.compressed_to_rgb8(msg)
        assert out.shape == RGB.shape
        assert np.abs(out.astype(int) - RGB).mean() < (0.01 if fmt == "PNG" else 4)
    with pytest.raises(ImageDecodeError, match="undecodable"):
        decoding.compressed_to_rgb8(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"))
    with pytest.raises(ImageDecodeError, match="no data"):
        decoding.compressed_to_rgb8(CompressedImage(format="jpeg", data=b""))


def test_depth_image_round_trip():
    depth = np.random.default_rng(0).uniform(1, 3, (7, 9)).astype(np.float32)
    depth[2, 3] = np.nan
    msg = Image(**outputs.depth_image_fields(depth))
    assert msg.encoding == "32FC1" and msg.step == 36
    np.testing.assert_array_equal(decoding.depth_image_to_array(msg), depth)


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
