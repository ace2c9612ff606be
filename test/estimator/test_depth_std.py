"""depth/std: the standard deviation of depth under each pixel's bin distribution, checked
against an independent computation from the bin probabilities."""

import numpy as np
import pytest
import torch
from helpers import structured_image

from depthclip_ros.estimator.core import DepthClip


def upsample_align_corners(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling with align_corners=True of (..., h, w), written out in float64."""
    h, w = grid.shape[-2:]
    y = np.arange(height) * ((h - 1) / max(height - 1, 1))
    x = np.arange(width) * ((w - 1) / max(width - 1, 1))
    y0, x0 = np.minimum(np.floor(y).astype(int), h - 2), np.minimum(np.floor(x).astype(int), w - 2)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    g = grid.astype(np.float64)
    top = g[..., y0, :][..., :, x0] * (1 - fx) + g[..., y0, :][..., :, x0 + 1] * fx
    bottom = g[..., y0 + 1, :][..., :, x0] * (1 - fx) + g[..., y0 + 1, :][..., :, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def std_from_probabilities(probs: np.ndarray, bins: np.ndarray, height: int, width: int):
    """sqrt(sum_k p_k (b_k - d)^2) per pixel of the upsampled distribution, d = sum_k p_k b_k."""
    p = upsample_align_corners(probs, height, width)  # (K, H, W)
    b = bins.astype(np.float64)[:, None, None]
    depth = (p * b).sum(axis=0)
    return np.sqrt((p * (b - depth) ** 2).sum(axis=0)), depth


@pytest.mark.parametrize("temperature", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("preprocessing, flip", [("resize", False), ("crop", True)])
def test_std_equals_the_spread_of_each_pixels_bin_distribution(
    make_config, temperature, preprocessing, flip
):
    model = DepthClip(make_config(temperature=temperature, preprocessing=preprocessing, flip=flip))
    result = model.predict(structured_image(480, 640))
    top, left, height, width = result.region
    std, depth = std_from_probabilities(result.bin_probs[0], result.bins, height, width)
    inside = (slice(top, top + height), slice(left, left + width))
    np.testing.assert_allclose(result.depth[0][inside], depth, atol=1e-5)
    np.testing.assert_allclose(result.depth_std[0][inside], std, atol=2e-4)
    grid_height, grid_width = result.bin_probs.shape[-2:]  # at the grid: no upsampling
    coarse_std, _ = std_from_probabilities(
        result.bin_probs[0], result.bins, grid_height, grid_width
    )
    np.testing.assert_allclose(result.coarse_std[0], coarse_std, atol=2e-4)
    assert std.max() > 0.05  # the distributions really are spread at these temperatures
    assert np.array_equal(np.isnan(result.depth_std), np.isnan(result.depth))


def test_a_one_hot_distribution_has_no_spread(make_config):
    cfg = make_config()
    bins = torch.tensor([[1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0]])
    probs = torch.zeros(1, 7, 4, 5)
    for k in range(7):  # every bin certain somewhere
        probs[0, k, k % 4, k % 5] = 1.0
    probs[0, 3][probs[0].sum(0) == 0] = 1.0
    depth, std, coarse, coarse_std, _ = DepthClip.depth_from_probabilities(
        probs, bins, cfg, (4, 5)
    )
    assert torch.count_nonzero(std) == 0 and torch.count_nonzero(coarse_std) == 0
    assert set(torch.unique(depth).tolist()) <= set(bins[0].tolist())
    two = torch.zeros(1, 7, 2, 2)
    two[0, 0], two[0, 6] = 0.5, 0.5  # torn between 1.0 and 3.0 m: std 1.0
    _, std, _, coarse_std, _ = DepthClip.depth_from_probabilities(two, bins, cfg, (2, 2))
    torch.testing.assert_close(std, torch.ones(1, 2, 2))
    torch.testing.assert_close(coarse_std, torch.ones(1, 2, 2))
