"""Depth-token text features, encoded once and cached on disk.

The cache key covers everything the features depend on: the model's identity
(name + checkpoint hash), the prompts and the embedding width.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import clip
import numpy as np
import torch

from .files import atomic_write
from .parameter_schema import ConfigError

log = logging.getLogger("depthclip_ros")

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    return Path("~/.cache/depthclip_ros").expanduser()


def cache_key(identity: str, prompt_sets, embed_dim: int, dtype=torch.float32) -> str:
    """Covers every template's prompts, the embedding width and the precision of the text
    normalisation (fp16 keys only for the official code's numerics, see encode_prompts)."""
    blob = {
        "format": CACHE_FORMAT,
        "model": identity,
        "prompts": [list(prompts) for prompts in prompt_sets],
        "embed_dim": int(embed_dim),
    }
    if dtype != torch.float32:
        blob["dtype"] = str(dtype)
    blob = json.dumps(blob, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def tokenize(prompts) -> torch.Tensor:
    """CLIP's tokens of the prompts; ConfigError when one does not fit CLIP's context (77)."""
    try:
        return clip.tokenize(list(prompts))
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
    tokens = len(prompt_sets[0])
    path = Path(cache_dir) / f"text_{cache_key(identity, prompt_sets, embed_dim, dtype)}.npy"
    if path.exists():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape == (embed_dim, tokens) and np.isfinite(feats).all():
                return feats.astype(np.float32, copy=False)
            raise ValueError(f"shape {feats.shape}, expected {(embed_dim, tokens)}")
        except (OSError, ValueError, EOFError) as exc:
            log.warning("text-feature cache %s is corrupt (%s); recomputing", path, exc)
    feats = encode_prompts(clip_model, prompt_sets, device, dtype)
    try:
        atomic_write(path, lambda f: np.save(f, feats, allow_pickle=False))
    except OSError as exc:  # a read-only cache must not stop inference
        log.warning("cannot write text-feature cache %s (%s); continuing without it", path, exc)
    return feats
