"""Colour maps for depth (depth/colored, the demo's and the eval's pictures). NumPy only."""

from __future__ import annotations

import numpy as np

from ..config.settings import COLORMAPS


def _turbo(t: np.ndarray) -> np.ndarray:
    # Polynomial approximation of Google's Turbo colour map (Mikhailov, 2019).
    r = 0.13572138 + t * (
        4.61539260
        + t * (-42.66032258 + t * (132.13108234 + t * (-152.94239396 + t * 59.28637943)))
    )
    g = 0.09140261 + t * (
        2.19418839 + t * (4.84296658 + t * (-14.18503333 + t * (4.27729857 + t * 2.82956604)))
    )
    b = 0.10667330 + t * (
        12.64194608
        + t * (-60.58204836 + t * (110.36276771 + t * (-89.90310912 + t * 27.34824973)))
    )
    return np.stack([r, g, b], axis=-1)


def _viridis(t: np.ndarray) -> np.ndarray:
    # Polynomial fit of matplotlib's viridis.
    c0 = np.array([0.2777273272234177, 0.005407344544966578, 0.3340998053353061])
    c1 = np.array([0.1050930431085774, 1.404613529898575, 1.384590162594685])
    c2 = np.array([-0.3308618287255563, 0.214847559468213, 0.09509516302823659])
    c3 = np.array([-4.634230498983486, -5.799100973351585, -19.33244095627987])
    c4 = np.array([6.228269936347081, 14.17993336680509, 56.69055260068105])
    c5 = np.array([4.776384997670288, -13.74514537774601, -65.35303263337234])
    c6 = np.array([-5.435455855934631, 4.645852612178535, 26.3124352495832])
    t = t[..., None]
    return c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * (c5 + t * c6)))))


def colorize(depth: np.ndarray, vmin: float, vmax: float, colormap: str = "turbo") -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8; near is the low end of the map; NaN is black."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap '{colormap}' (use one of {', '.join(COLORMAPS)})")
    valid = np.isfinite(depth)
    t = np.clip((np.nan_to_num(depth, nan=vmin) - vmin) / max(vmax - vmin, 1e-9), 0.0, 1.0)
    if colormap == "gray":
        rgb = np.repeat(t[..., None], 3, axis=-1)
    else:
        rgb = _turbo(t) if colormap == "turbo" else _viridis(t)
    out = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out
