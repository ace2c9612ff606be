"""points/clearing computed independently of the package: the coarse bin probabilities
upsampled to every pixel with torch, as the core upsamples depth (bilinear, align_corners, over
the input region), then each pixel's cumulative distribution, then the back-projection written
out."""

import numpy as np
import torch
import torch.nn.functional as F


def clearing_depth_everywhere(result, index: int, q: float) -> np.ndarray:
    """(H, W) float64: per pixel of image `index`, the smallest bin whose cumulative probability
    reaches q; NaN outside the input region."""
    top, left, height, width = result.region
    probs = torch.from_numpy(np.ascontiguousarray(result.bin_probs[index : index + 1]))
    fine = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=True)
    cdf = np.cumsum(fine[0].numpy().astype(np.float64), axis=0)  # (K, h, w)
    first = np.where((cdf >= q).any(axis=0), (cdf >= q).argmax(axis=0), cdf.shape[0] - 1)
    out = np.full(result.depth.shape[1:], np.nan)
    out[top : top + height, left : left + width] = result.bins_of(index)[first]
    return out


def clearing_depth_at_cells(result, index: int, q: float) -> np.ndarray:
    """(h, w): the same at the coarse grid's cells (cloud_stride 0), where nothing is
    interpolated."""
    cdf = np.cumsum(result.bin_probs[index].astype(np.float64), axis=0)
    first = np.where((cdf >= q).any(axis=0), (cdf >= q).argmax(axis=0), cdf.shape[0] - 1)
    return result.bins_of(index)[first].astype(np.float64)


def clearing_cloud(result, index, q, intrinsics, stride, min_range) -> np.ndarray:
    """(h, w, 3) expected x y z of points/clearing, NaN where it has no point."""
    fx, fy, cx, cy = intrinsics
    if stride > 0:
        z_all = clearing_depth_everywhere(result, index, q)
        rows = np.arange(0, z_all.shape[0], stride)
        cols = np.arange(0, z_all.shape[1], stride)
        u, v = np.meshgrid(cols.astype(np.float64), rows.astype(np.float64))
        z = z_all[np.ix_(rows, cols)]
        no_depth = np.isnan(result.depth[index][np.ix_(rows, cols)])
    else:
        z = clearing_depth_at_cells(result, index, q)
        u, v = (c.astype(np.float64) for c in result.coarse_pixel_coords())
        no_depth = np.isnan(result.coarse_depth[index])
    xyz = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)
    xyz[no_depth | ~(z >= min_range)] = np.nan
    return xyz
