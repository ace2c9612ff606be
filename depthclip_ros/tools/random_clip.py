"""CLIP ResNet checkpoints with random weights, for tests and benchmarks.

The real weights cannot be downloaded everywhere (CI has no internet). Speed does
not depend on weight values, and the math can be checked on any weights, so
tests and `bench/` build a model here, save it, and load it through the same
`load_clip` users go through.
"""

from __future__ import annotations

import torch
from clip.model import CLIP

# name -> CLIP(...) arguments (embed_dim, image_resolution, vision_layers, vision_width,
# vision_patch_size, context_length, vocab_size, transformer_width, heads, layers).
ARCHITECTURES = {
    # Tiny: layer4 has 8 * 32 = 256 channels, text width 32. Seconds to build on CPU.
    "tiny": (32, 64, (1, 1, 1, 1), 8, None, 77, 49408, 64, 1, 1),
    # OpenAI RN50 shapes: 2048-channel layer4, 1024-d text embedding.
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12),
}


def build_random_clip(arch: str = "tiny", seed: int = 0, unbiased: bool = False) -> CLIP:
    """A random CLIP of `arch`. `unbiased`: no BatchNorm shifts and no attention-pool biases,
    so each position's features follow the image rather than a shared offset: the tiny one's
    depth then varies over a structured image by up to a fifth (with biases, by under 1 %),
    which tests of per-pixel fits through the node need."""
    torch.manual_seed(seed)
    model = CLIP(*ARCHITECTURES[arch]).eval()
    # Non-trivial BatchNorm statistics so features are not dominated by init artefacts.
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(1.0 + 0.5 * torch.rand(m.num_features, generator=g))
            if unbiased:
                m.running_mean.zero_()
                m.bias.detach().zero_()
    if unbiased:
        pool = model.visual.attnpool
        for projection in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
            projection.bias.detach().zero_()
    return model


def save_random_checkpoint(
    path, arch: str = "tiny", seed: int = 0, torchscript: bool = False, unbiased: bool = False
) -> str:
    """Write a random CLIP (build_random_clip's) as a plain state_dict (default) or a
    TorchScript archive (OpenAI's format)."""
    model = build_random_clip(arch, seed, unbiased)
    if torchscript:
        res = model.visual.input_resolution
        traced = torch.jit.trace_module(
            model, {"encode_image": torch.zeros(1, 3, res, res)}, check_trace=False
        )
        torch.jit.save(traced, str(path))
    else:
        torch.save(model.state_dict(), str(path))
    return str(path)
