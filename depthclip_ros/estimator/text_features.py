"""Depth-token text features: CLIP's text encoder, run once per prompt set and cached on disk
(text_cache: the key covers the model's identity, the prompts, the width and the precision)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .clip_modules import tokenize as clip_tokenize
from .text_cache import cache_path, load_cached, store


def tokenize(prompts) -> torch.Tensor:
    """CLIP's tokens of the prompts; ConfigError when one does not fit CLIP's context (77)."""
    try:
        return clip_tokenize(list(prompts))
    except RuntimeError as exc:  # clip: "Input ... is too long for context length 77"
        raise ConfigError(
            "prompt_template", list(prompts)[0], f"a prompt is too long for CLIP: {exc}"
        ) from None


@torch.inference_mode()
def encode_prompts(clip_model, prompt_sets, device, dtype=torch.float32) -> np.ndarray:
    """(embed_dim, K) float32 from T templates x K tokens: each prompt encoded and
    L2-normalised, then per token the mean over templates normalised again (the reference's
    text path; it has one template). The normalisations run in `dtype`: fp16 is the official
    code's numerics on CUDA, whose values are returned exactly as float32."""
    templates, tokens = len(prompt_sets), len(prompt_sets[0])
    flat = [prompt for prompts in prompt_sets for prompt in prompts]
    emb = clip_model.encode_text(tokenize(flat).to(device)).to(dtype)  # (T*K, D)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    emb = emb.reshape(templates, tokens, -1).mean(dim=0)  # (K, D)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    return emb.t().contiguous().float().cpu().numpy()


def text_features(
    clip_model, identity: str, prompt_sets, device, cache_dir, dtype=torch.float32
) -> np.ndarray:
    """Cached (embed_dim, K) text features; `encode_text` runs only on a cache miss."""
    embed_dim = clip_model.text_projection.shape[1]
    path = cache_path(cache_dir, identity, prompt_sets, embed_dim, str(dtype))
    feats = load_cached(path, embed_dim, len(prompt_sets[0]))
    if feats is None:
        feats = encode_prompts(clip_model, prompt_sets, device, dtype)
        store(path, feats)
    return feats
