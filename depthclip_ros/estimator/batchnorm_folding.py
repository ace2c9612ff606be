"""BatchNorm folded into the convolution before it, for inference: y = s * (W x) + (beta - s *
mean) with s = gamma / sqrt(var + eps) is the convolution with weights s * W and that bias, one
kernel instead of two. Exact up to rounding; computed in float32, stored in the weights' dtype.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_conv_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold `bn` into `conv` in place (`bn` is then to be replaced by Identity)."""
    weight = conv.weight.detach().float()
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.detach().float() + bn.eps)
    bias = bn.bias.detach().float() - bn.running_mean.detach().float() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach().float() * scale
    folded = (weight * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
    conv.weight = nn.Parameter(folded.contiguous(memory_format=_layout(conv.weight)), False)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def _layout(t: torch.Tensor):
    return (
        torch.channels_last
        if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d: named pairs `convN` / `bnN` (CLIP's
    ModifiedResNet stem and bottlenecks) and consecutive entries of a Sequential (its
    downsample branches). Returns how many were folded."""
    folded = 0
    for parent in list(module.modules()):
        children = dict(parent.named_children())
        pairs = []
        for name, child in children.items():
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = children.get("conv" + name[2:])
                if isinstance(conv, nn.Conv2d):
                    pairs.append((conv, name))
        if isinstance(parent, nn.Sequential):
            names = list(children)
            for before, name in zip(names, names[1:]):
                conv, bn = children[before], children[name]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    pairs.append((conv, name))
        for conv, name in pairs:
            fold_conv_batchnorm(conv, children[name])
            setattr(parent, name, nn.Identity())
            folded += 1
    return folded
