"""Image and CompressedImage in every encoding -> RGB; 32FC1 depth images both ways."""

import io

import numpy as np
import pytest
from helpers import ALL_ENCODINGS, encode, structured_image
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from depthclip_ros.errors import ImageDecodeError
from depthclip_ros.messages import decoding, outputs

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
