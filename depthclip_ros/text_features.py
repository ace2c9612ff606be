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


def cache_key(identity: str, prompts, embed_dim: int) -> str:
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "model": identity,
            "prompts": list(prompts),
            "embed_dim": int(embed_dim),
        },
        sort_keys=True,
    )
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
def encode_prompts(clip_model, prompts, device) -> np.ndarray:
    """(embed_dim, K) float32: each prompt encoded, L2-normalised, and, as the reference
    averages over templates (one here), averaged and normalised again."""
    tokens = tokenize(prompts).to(device)
    emb = clip_model.encode_text(tokens).float()  # (K, D)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    emb = emb.unsqueeze(1).mean(dim=1)  # mean over the single template
    emb = emb / emb.norm(dim=-1, keepdim=True)
    return emb.t().contiguous().cpu().numpy().astype(np.float32)


def text_features(clip_model, identity: str, prompts, device, cache_dir) -> np.ndarray:
    """Cached (embed_dim, K) text features; `encode_text` runs only on a cache miss."""
    embed_dim = clip_model.text_projection.shape[1]
    path = Path(cache_dir) / f"text_{cache_key(identity, prompts, embed_dim)}.npy"
    if path.exists():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape == (embed_dim, len(prompts)) and np.isfinite(feats).all():
                return feats.astype(np.float32, copy=False)
            raise ValueError(f"shape {feats.shape}, expected {(embed_dim, len(prompts))}")
        except (OSError, ValueError, EOFError) as exc:
            log.warning("text-feature cache %s is corrupt (%s); recomputing", path, exc)
    feats = encode_prompts(clip_model, prompts, device)
    try:
        atomic_write(path, lambda f: np.save(f, feats, allow_pickle=False))
    except OSError as exc:  # a read-only cache must not stop inference
        log.warning("cannot write text-feature cache %s (%s); continuing without it", path, exc)
    return feats
