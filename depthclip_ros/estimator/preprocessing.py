"""The reference's preprocessing: uint8 RGB images -> the network's normalised input (the NYU
crop or a resize to the network's size, then ImageNet's or CLIP's mean and std), on the device
the images are on. The core, its CUDA graphs and the ONNX export all run this one function.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..config.parameters import DepthClipConfig
from .result import input_region

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NORMALIZATION = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}


def preprocess(images: torch.Tensor, cfg: DepthClipConfig) -> torch.Tensor:
    """(B, H, W, 3) uint8 on the target device -> normalised (B, 3, h, w) float32 network input."""
    _, height, width, _ = images.shape
    top, left, h, w = input_region(height, width, cfg)
    x = images[:, top : top + h, left : left + w].permute(0, 3, 1, 2).float().div_(255.0)
    if cfg.preprocessing == "resize" and (h, w) != (cfg.input_height, cfg.input_width):
        x = F.interpolate(
            x,
            size=(cfg.input_height, cfg.input_width),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    if type(x) is torch.Tensor:
        mean, std = normalization(cfg.normalization, x.device)
    else:  # traced by an export (fake tensors): its own constants, never kept for real frames
        mean, std = normalization.__wrapped__(cfg.normalization, x.device)
    return (x - mean) / std


@functools.lru_cache(maxsize=None)
def normalization(name: str, device: torch.device) -> tuple:
    """(mean, std) as (1, 3, 1, 1) tensors on `device`, made once: no host-to-device copy per
    frame (and none inside a CUDA graph's capture)."""
    mean, std = NORMALIZATION[name]
    return (
        torch.tensor(mean, device=device).view(1, 3, 1, 1),
        torch.tensor(std, device=device).view(1, 3, 1, 1),
    )
