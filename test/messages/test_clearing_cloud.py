"""points/clearing: each sampled pixel at the smallest bin whose cumulative probability reaches
clearing_quantile, checked against an independent computation from the bin probabilities."""

import dataclasses

import numpy as np
import pytest
import torch
from clearing_reference import clearing_cloud, clearing_depth_everywhere
from helpers import camera_info, structured_image

from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.errors import ConfigError
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.depth_quantile import depth_quantile
from depthclip_ros.estimator.result import DepthResult, input_region
from depthclip_ros.messages import point_cloud
from depthclip_ros.messages.outputs import frame_outputs

INTRINSICS = (500.0, 480.0, 320.0, 240.0)
BINS = (1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0)


def spread_result(make_config, preprocessing="resize", flip=False, batch=2, seed=0):
    """A DepthResult of 640x480 images made by the core from bin probabilities that vary from
    cell to cell, sharp here and spread there (a tiny random CLIP's are nearly the same
    everywhere, which would hide an interpolation error)."""
    rng = np.random.default_rng(seed)
    concentration = rng.uniform(0.05, 3.0, size=(batch * (1 + flip), 13, 17, 1))
    probs = rng.gamma(concentration * np.ones(len(BINS)))  # a Dirichlet per cell
    probs = (probs / probs.sum(axis=-1, keepdims=True)).transpose(0, 3, 1, 2)
    cfg = make_config(preprocessing=preprocessing, flip=flip)
    bins = torch.tensor(BINS).expand(batch, -1)
    outputs = DepthClip.depth_from_probabilities(
        torch.from_numpy(probs.astype(np.float32)), bins, cfg, (480, 640)
    )
    region = input_region(480, 640, cfg)
    return DepthResult.from_outputs([t.numpy() for t in outputs], np.array(BINS), region)


def cloud_arrays(out):
    """(points, clearing) of FrameOutputs as (h, w, 5) arrays."""
    return tuple(
        np.frombuffer(fields["data"], "<f4").reshape(fields["height"], fields["width"], 5)
        for fields in (out.cloud.cloud, out.cloud.clearing)
    )


def test_a_known_distribution_gives_the_known_quantiles():
    """Bins 1, 2, 3 m with probabilities 0.25, 0.25, 0.5 everywhere: P(d <= 1) = 0.25,
    P(d <= 2) = 0.5."""
    probs = np.zeros((1, 3, 2, 2), np.float32)
    probs[0, 0], probs[0, 1], probs[0, 2] = 0.25, 0.25, 0.5
    result = DepthResult(
        depth=np.zeros((1, 4, 4), np.float32),
        depth_std=np.zeros((1, 4, 4), np.float32),
        coarse_depth=np.zeros((1, 2, 2), np.float32),
        coarse_std=np.zeros((1, 2, 2), np.float32),
        bin_probs=probs,
        bins=np.array([1.0, 2.0, 3.0], np.float32),
        region=(0, 0, 4, 4),
    )
    for q, depth in ((0.1, 1.0), (0.25, 1.0), (0.3, 2.0), (0.5, 2.0), (0.51, 3.0), (0.99, 3.0)):
        got = depth_quantile(result, 0, q, np.arange(4), np.arange(4))
        assert got.shape == (4, 4) and (got == depth).all(), (q, got)
    # Interpolated between a certain-near and a certain-far cell: half way, P(d <= 1) = 0.5.
    probs[0] = 0.0
    probs[0, 0, :, 0], probs[0, 2, :, 1] = 1.0, 1.0
    row = depth_quantile(result, 0, 0.4, [0], np.arange(4))[0]  # columns 0, 1/3, 2/3, 1 of a cell
    assert row.tolist() == [1.0, 1.0, 3.0, 3.0]  # P(d <= 1) = 1, 2/3, 1/3, 0
    with pytest.raises(ValueError):
        depth_quantile(result, 0, 1.0, [0], [0])


@pytest.mark.parametrize("q", [0.05, 0.1, 0.5, 0.9])
@pytest.mark.parametrize(
    "preprocessing, flip, stride, min_range",
    [("resize", False, 8, 0.0), ("crop", True, 5, 1.6), ("resize", False, 0, 1.2)],
)
def test_the_clearing_cloud_equals_the_reference(
    make_config, q, preprocessing, flip, stride, min_range
):
    """Several q; the crop's NaN pixels (no depth outside its box); cloud_min_range; a stride
    that does not divide the image; the coarse cloud (stride 0)."""
    result = spread_result(make_config, preprocessing, flip)
    settings = OutputSettings(  # cloud_max_std filters what is marked, never what is cleared
        cloud_stride=stride, clearing_quantile=q, cloud_min_range=min_range, cloud_max_std=0.05
    )
    for index in range(2):
        rgb = structured_image(seed=index)
        out = frame_outputs(rgb, result, index, camera_info(), settings, ("points", "clearing"))
        points, clearing = cloud_arrays(out)
        expected = clearing_cloud(result, index, q, INTRINSICS, stride, min_range)
        assert clearing.shape == points.shape  # organised like points: same pixels
        np.testing.assert_allclose(clearing[..., :3], expected, rtol=1e-6, atol=1e-6)
        assert np.isnan(clearing[..., :3]).any(axis=-1).sum() == np.isnan(expected[..., 0]).sum()
        np.testing.assert_array_equal(clearing[..., 3], points[..., 3])  # each pixel's colour
        z = clearing[..., 2][np.isfinite(clearing[..., 2])]
        assert np.isin(z, result.bins_of(index)).all()


def test_cloud_max_range_pulls_farther_clearing_points_in_along_their_rays(make_config):
    """Bins 1 ... 3 m and cloud_max_range 2.1: a clearing point beyond 2.1 m (along the optical
    axis) lies at 2.1 m on its own ray (the same x / z and y / z); the others where they were;
    the marking cloud's farther points dropped, as before."""
    result = spread_result(make_config, batch=1)
    base = dict(cloud_stride=8, clearing_quantile=0.5)
    rgb = structured_image()
    clouds = [
        cloud_arrays(
            frame_outputs(rgb, result, 0, camera_info(), OutputSettings(**base, **cap), OUTPUTS)
        )
        for cap in ({}, {"cloud_max_range": 2.1})
    ]
    (points, free), (capped_points, capped) = clouds
    beyond = free[..., 2] > 2.1
    assert beyond.sum() > 10 and (~beyond & np.isfinite(free[..., 2])).sum() > 10
    np.testing.assert_array_equal(capped[~beyond], free[~beyond])
    np.testing.assert_allclose(capped[beyond][:, 2], 2.1, rtol=1e-6)
    ray = free[beyond][:, :2] / free[beyond][:, 2:3]
    np.testing.assert_allclose(capped[beyond][:, :2] / capped[beyond][:, 2:3], ray, rtol=1e-5)
    np.testing.assert_array_equal(capped[beyond][:, 3:], free[beyond][:, 3:])  # colour, std
    assert not (capped_points[..., 2] > 2.1).any() and (points[..., 2] > 2.1).any()


OUTPUTS = ("points", "clearing")


def test_the_models_own_probabilities_give_the_reference(make_config):
    """Through a real forward (crop and flip: probabilities averaged with the mirror's)."""
    model = DepthClip(make_config(preprocessing="crop", flip=True, temperature=0.3))
    result = model.predict(structured_image())
    out = frame_outputs(
        structured_image(), result, 0, camera_info(), OutputSettings(cloud_stride=4), ("clearing",)
    )
    clearing = np.frombuffer(out.cloud.clearing["data"], "<f4").reshape(120, 160, 5)
    expected = clearing_cloud(result, 0, 0.1, INTRINSICS, 4, 0.0)
    np.testing.assert_allclose(clearing[..., :3], expected, rtol=1e-6, atol=1e-6)


def test_a_higher_quantile_never_clears_less(make_config):
    result = spread_result(make_config, batch=1)
    depths = [clearing_depth_everywhere(result, 0, q) for q in (0.05, 0.2, 0.5, 0.8, 0.95)]
    for near, far in zip(depths, depths[1:]):
        assert (far >= near).all()
    assert len(np.unique(depths[1][np.isfinite(depths[1])])) >= 4  # it varies from pixel to pixel
    assert (depths[-1] > depths[0]).any()  # spread distributions: q matters
    # The mean depth lies between the low and the high quantile, up to the interpolation of the
    # mean itself (a mean of cells, not a quantile of them).
    assert (depths[0] <= result.depth[0] + 1e-4).mean() > 0.99


def test_clearing_quantile_is_checked_as_every_parameter():
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="clearing_quantile"):
            OutputSettings(clearing_quantile=bad)
    assert dataclasses.replace(OutputSettings(), clearing_quantile=0.999).clearing_quantile


def test_pixels_without_depth_and_the_cloud_layout(make_config):
    result = spread_result(make_config, "crop", batch=1)
    out = frame_outputs(
        structured_image(), result, 0, camera_info(), OutputSettings(), ("clearing",)
    )
    fields = out.cloud.clearing
    assert out.cloud.cloud is None  # points not wanted: made for the clearing cloud, not sent
    info_only = frame_outputs(
        structured_image(), result, 0, camera_info(), OutputSettings(), ("camera_info",)
    )
    np.testing.assert_array_equal(info_only.cloud.camera_info["k"], out.cloud.camera_info["k"])
    assert (info_only.cloud.cloud, info_only.cloud.clearing) == (None, None)
    assert fields["height"] == 60 and fields["width"] == 80 and fields["is_dense"] is False
    assert [f[0] for f in fields["fields"]] == [n for n, _ in point_cloud.CLOUD_FIELDS]
    arr = np.frombuffer(fields["data"], "<f4").reshape(60, 80, 5)
    assert np.isnan(arr[:7, :, :3]).all() and np.isfinite(arr[8:59, 8:68, :3]).all()  # the box


def test_the_outputs_wanted_name_the_arrays_predict_brings_back():
    from depthclip_ros.messages.outputs import arrays_for

    stride8, coarse = OutputSettings(cloud_stride=8), OutputSettings(cloud_stride=0)
    assert arrays_for({"depth"}, stride8) == ("depth",)
    assert arrays_for({"depth", "colored", "compressed_depth"}, stride8) == ("depth",)
    assert arrays_for({"std"}, stride8) == ("depth", "depth_std")
    assert arrays_for({"camera_info"}, stride8) == ("depth",)  # no cloud for it
    assert arrays_for({"points"}, coarse) == ("coarse_depth", "coarse_std", "depth")
    assert arrays_for({"clearing"}, stride8) == ("bin_probs", "depth", "depth_std")


def test_without_the_arrays_it_needs_a_frame_has_no_cloud_and_no_warning(make_config):
    model = DepthClip(make_config())
    result = model.predict(structured_image(), arrays=("depth",))
    out = frame_outputs(structured_image(), result, 0, camera_info(), OutputSettings())
    assert out.depth is not None and out.std is None
    assert out.cloud.cloud is None and out.cloud.clearing is None and out.cloud.warning is None
