"""BatchNorm folded into the convolutions: the same features, fewer kernels, the caller's model
untouched."""

import copy

import pytest
import torch

from depthclip_ros.estimator.batchnorm_folding import fold_batch_norms
from depthclip_ros.estimator.clip_loading import load_clip
from depthclip_ros.estimator.core import dense_encoder


def trained_like(encoder):
    """Random running statistics and affine parameters: folding must use all four. RN50: 3 in
    the stem, 3 in each of 16 bottlenecks, 4 downsample branches = 55."""
    gen = torch.Generator().manual_seed(0)
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return encoder.eval()


@pytest.mark.parametrize(
    "checkpoint, expected", [("tiny_checkpoint", None), ("rn50_checkpoint", 55)]
)
def test_folded_encoder_gives_the_same_features(request, checkpoint, expected):
    loaded = load_clip(str(request.getfixturevalue(checkpoint)), "cpu", "fp32", "")
    encoder = trained_like(dense_encoder(loaded.clip_model.visual))
    folded = copy.deepcopy(encoder)
    count = fold_batch_norms(folded)
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert count == len(bns) and (expected is None or count == expected)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = encoder(x), folded(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert want.abs().mean() > 0.01  # a real signal, not zeros
