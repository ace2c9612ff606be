"""The text-feature cache: one .npy file per (model, prompts, width, precision), read back by
either backend. numpy only: the ONNX backend reads what the torch text encoder wrote."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..files import atomic_write

log = logging.getLogger("depthclip_ros")

CACHE_FORMAT = 1
FLOAT32 = "torch.float32"  # the key's precision names, as torch spells its dtypes
FLOAT16 = "torch.float16"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/depthclip_ros, ~/.cache/depthclip_ros where it is unset (the XDG base
    directory rule that torch's hub and pip follow; a relative value is ignored, as it says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "depthclip_ros"


def cache_key(identity: str, prompt_sets, embed_dim: int, dtype: str = FLOAT32) -> str:
    """Covers every template's prompts, the embedding width and the precision of the text
    normalisation (fp16 keys only for the official code's numerics)."""
    blob = {
        "format": CACHE_FORMAT,
        "model": identity,
        "prompts": [list(prompts) for prompts in prompt_sets],
        "embed_dim": int(embed_dim),
    }
    if dtype != FLOAT32:
        blob["dtype"] = dtype
    blob = json.dumps(blob, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cache_path(cache_dir, identity, prompt_sets, embed_dim, dtype: str = FLOAT32) -> Path:
    return Path(cache_dir) / f"text_{cache_key(identity, prompt_sets, embed_dim, dtype)}.npy"


def load_cached(path: Path, embed_dim: int, tokens: int) -> np.ndarray | None:
    """(embed_dim, tokens) float32 from `path`; None when absent or corrupt (logged)."""
    if not path.exists():
        return None
    try:
        feats = np.load(path, allow_pickle=False)
        if feats.shape == (embed_dim, tokens) and np.isfinite(feats).all():
            return feats.astype(np.float32, copy=False)
        raise ValueError(f"shape {feats.shape}, expected {(embed_dim, tokens)}")
    except (OSError, ValueError, EOFError) as exc:
        log.warning("text-feature cache %s is corrupt (%s); ignoring it", path, exc)
        return None


def store(path: Path, feats: np.ndarray) -> None:
    try:
        atomic_write(path, lambda f: np.save(f, feats, allow_pickle=False))
    except OSError as exc:  # a read-only cache must not stop inference
        log.warning("cannot write text-feature cache %s (%s); continuing without it", path, exc)


def exported_text_dir(onnx_path: Path) -> Path:
    """The folder depthclip-export fills with the text features beside the graph."""
    return onnx_path.with_name(onnx_path.stem + "_text_features")
