"""The depth a pixel's bin distribution puts the surface beyond with a chosen probability: the
smallest bin whose cumulative probability reaches q. With q small, the surface is beyond that
depth with probability at least 1 - q: what a costmap may clear up to (points/clearing).

Computed from a DepthResult's coarse probabilities, upsampled as the depth is (bilinear,
align_corners, over the input region), at the pixels asked for only. NumPy only: the torch core
and the ONNX Runtime backend give the same DepthResult.
"""

from __future__ import annotations

import numpy as np


def _axis_weights(pixels: np.ndarray, start: int, size: int, cells: int) -> tuple:
    """((n, cells) bilinear weights of the coarse cells at `pixels` along one axis, as
    align_corners upsampling of `cells` cells over [start, start + size) gives them; mask of the
    pixels inside that span)."""
    pixels = np.asarray(pixels, np.float64)
    inside = (pixels >= start) & (pixels <= start + size - 1)
    position = np.clip((pixels - start) * ((cells - 1) / max(size - 1, 1)), 0, cells - 1)
    low = np.minimum(np.floor(position).astype(np.int64), max(cells - 2, 0))
    high = np.minimum(low + 1, cells - 1)
    fraction = position - low
    weights = np.zeros((len(pixels), cells))
    rows = np.arange(len(pixels))
    np.add.at(weights, (rows, low), 1.0 - fraction)
    np.add.at(weights, (rows, high), fraction)
    return weights, inside


def depth_quantile(result, index: int, q: float, rows, cols) -> np.ndarray:
    """(len(rows), len(cols)) float32: at each pixel (row, col) of image `index` of a
    DepthResult, the smallest bin b_k with P(depth <= b_k) >= q under the pixel's bin
    distribution; NaN outside the input region. `rows`, `cols`: pixel coordinates (integer
    pixels, or the coarse cells' exact positions)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile {q} is not strictly between 0 and 1")
    top, left, height, width = result.region
    probs = result.bin_probs[index].astype(np.float64)  # (K, h, w)
    row_weights, row_inside = _axis_weights(rows, top, height, probs.shape[1])
    col_weights, col_inside = _axis_weights(cols, left, width, probs.shape[2])
    # Upsampling is linear, so the cumulative probabilities are upsampled rather than each
    # bin's (then summed); separable: rows, then columns. The last bin is always reached (a
    # total a hair under a q near 1 by rounding gives the farthest bin).
    cumulative = np.cumsum(probs[:-1], axis=0)
    pixel_cumulative = row_weights @ cumulative @ col_weights.T  # (K - 1, rows, cols)
    # The cumulative rises with the bin: the first bin reaching q is the count of those below.
    first_reached = np.count_nonzero(pixel_cumulative < q, axis=0)
    bins = np.asarray(result.clearing_bins_of(index), np.float32)
    depth = bins[first_reached]
    depth[~(row_inside[:, None] & col_inside[None, :])] = np.nan
    return depth
