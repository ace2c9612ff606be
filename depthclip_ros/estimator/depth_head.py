"""The DepthCLIP head: dense layer4 features -> per-bin probabilities, as the reference computes
them, plus the options beyond it (projected features, head precision, per-image scene bins).
No rclpy import.
"""

from __future__ import annotations

import numpy as np
import torch

LOGIT_SCALE = 100.0  # the reference's fixed CLIP logit scale


def channel_subsample_index(image_channels: int, embed_dim: int) -> torch.Tensor:
    """Nearest-neighbour channel index floor(i * C_img / D): 0, 2, ..., 2046 for RN50."""
    return torch.arange(embed_dim, dtype=torch.int64) * image_channels // embed_dim


def position_embeddings(
    features: torch.Tensor, mode: str, channel_index: torch.Tensor, attnpool, dtype
) -> torch.Tensor:
    """Dense features (B, C, h, w) -> (B, hw, D) L2-normalised vectors in the text's width.

    subsampled (the reference): normalise over the C channels, keep channels `channel_index`
    (no re-normalisation). projected (MaskCLIP, Zhou et al. 2022): the attention pool's value
    projection, then its output projection, at every position (no query, key or positional
    embedding), then normalise. The normalisation runs in `dtype` (the head's precision).
    """
    f = features.flatten(2).transpose(1, 2)  # (B, hw, C)
    if mode == "projected":
        f = attnpool.c_proj(attnpool.v_proj(f.to(attnpool.v_proj.weight.dtype))).to(dtype)
        return f / f.norm(dim=-1, keepdim=True)
    f = f.to(dtype)
    f = f / f.norm(dim=-1, keepdim=True)
    return f.index_select(-1, channel_index)


def temperature_scale(temperature: float) -> float:
    """1 / temperature as the float32 number CUDA's division by a Python float multiplies by
    (the official code's fp16 head on CUDA): computed once on the host, it is what the eager
    path and the CUDA graph's scale tensor both multiply the logits by, to the bit."""
    return float(np.float32(1.0) / np.float32(temperature))


def bin_probabilities(positions: torch.Tensor, text: torch.Tensor, scale, grid: tuple):
    """(B, hw, D) position embeddings -> (B, K, h, w) per-bin probabilities in their dtype:
    logits = 100 * f @ text, times `scale` (1 / temperature: temperature_scale's number, or a
    0-dim float32 tensor), softmax over the bins."""
    logits = (LOGIT_SCALE * positions) @ text.to(positions.dtype)  # (B, hw, K), as the reference
    logits = logits.transpose(1, 2).reshape(positions.shape[0], -1, *grid)
    # In float32, rounded back to the head's dtype: with a float divisor an fp16 tensor would
    # first round 0.1 to 0.0999756.
    return (logits.float() * scale).to(positions.dtype).softmax(dim=1)


def scene_bin_probabilities(
    positions: torch.Tensor, heads: list, scale: float, grid: tuple
) -> torch.Tensor:
    """bin_probabilities with each row's own text features: `heads[r]` is (text, bins) of row r.
    Rows sharing a head go through one product."""
    probs = [None] * len(heads)
    groups: dict = {}
    for row, head in enumerate(heads):
        groups.setdefault(id(head[0]), []).append(row)
    for rows in groups.values():
        text = heads[rows[0]][0]
        out = bin_probabilities(positions[rows], text, scale, grid)
        for k, row in enumerate(rows):
            probs[row] = out[k]
    return torch.stack(probs)
