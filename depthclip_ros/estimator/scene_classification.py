"""Zero-shot scene classification with CLIP's own global image embedding, for scene-adaptive bins
(the paper's future work, its Section 5).

The global embedding is CLIP's attention pool applied to the layer4 features the depth already
computed, so a frame pays only for the pool, computed so that no position is projected. CLIP
learnt the pool's positional embedding on a 7x7 grid (224x224 inputs); for another grid its 7x7
part is resized bicubically to the grid, the class position kept as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .depth_head import LOGIT_SCALE
from .text_features import text_features


def resized_positional_embedding(attnpool, height: int, width: int) -> torch.Tensor:
    """(1 + height * width, C): the class position, then the spatial grid resized bicubically."""
    pos = attnpool.positional_embedding
    side = int(round((pos.shape[0] - 1) ** 0.5))
    if (side, side) == (height, width):
        return pos
    grid = pos[1:].reshape(side, side, -1).permute(2, 0, 1)[None].float()
    grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
    grid = grid[0].permute(1, 2, 0).reshape(height * width, -1).to(pos.dtype)
    return torch.cat([pos[:1], grid])


def global_embedding(features: torch.Tensor, attnpool, positions=None) -> torch.Tensor:
    """CLIP's image embedding (B, D) of layer4 features (B, C, h, w): the attention pool's output
    for its one query, the mean token. `positions`: the pool's positional embedding resized to
    the grid (resized_positional_embedding), when the caller keeps it.

    Computed in the features' space instead of projecting every position: a head's score of
    position j is q_h . (W_k x_j + b_k) = (W_k,h^T q_h) . x_j + const (the constant drops out of
    the softmax), and its output W_v,h (sum_j a_hj x_j) + b_v,h, since the weights sum to one.
    Equal to the pool's forward, at about 1 % of its cost (no C x C product per position).
    """
    b, c, h, w = features.shape
    heads = attnpool.num_heads
    # In the pool's dtype: a bf16 trunk's features meet the float32 pool (CUDA fp16: both fp16).
    x = features.to(attnpool.q_proj.weight.dtype).reshape(b, c, h * w).transpose(1, 2)
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (B, 1 + hw, C)
    if positions is None:
        positions = resized_positional_embedding(attnpool, h, w)
    x = x + positions[None].to(x.dtype)
    q = F.linear(x[:, 0], attnpool.q_proj.weight, attnpool.q_proj.bias) * (c // heads) ** -0.5
    q = q.reshape(b, heads, c // heads)  # (B, H, d)
    w_k = attnpool.k_proj.weight.reshape(heads, c // heads, c)
    w_v = attnpool.v_proj.weight.reshape(heads, c // heads, c)
    scores = torch.einsum("bhc,bnc->bhn", torch.einsum("bhd,hdc->bhc", q, w_k), x)
    pooled = torch.einsum("bhn,bnc->bhc", scores.softmax(dim=-1), x)  # (B, H, C)
    values = torch.einsum("bhc,hdc->bhd", pooled, w_v) + attnpool.v_proj.bias.reshape(heads, -1)
    return F.linear(values.reshape(b, c), attnpool.c_proj.weight, attnpool.c_proj.bias)


class SceneClassifier:
    """Scene probabilities (B, S) of layer4 features against the scene prompts."""

    def __init__(self, clip_model, identity: str, prompts, device, cache_dir):
        feats = text_features(clip_model, identity, [list(prompts)], device, cache_dir)
        self.text = torch.from_numpy(feats).to(device)  # (D, S), normalised
        self.attnpool = clip_model.visual.attnpool
        self._positions = {}  # (h, w) -> resized positional embedding: resized once per grid

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        grid = tuple(features.shape[-2:])
        if grid not in self._positions:
            self._positions[grid] = resized_positional_embedding(self.attnpool, *grid)
        emb = global_embedding(features, self.attnpool, self._positions[grid]).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return (LOGIT_SCALE * emb @ self.text).softmax(dim=-1)
