"""The CUDA frame path: the captured graph against the eager path, run-time config changes as
graph inputs, BatchNorm folding in fp16. Run wherever CUDA exists; elsewhere reported as
skipped (pytest -ra prints the reason)."""

import numpy as np
import pytest
import torch
from helpers import structured_image

from depthclip_ros.estimator.clip_loading import load_clip
from depthclip_ros.estimator.core import DepthClip, dense_encoder

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]
TOLERANCE = {"fp16": 1e-3, "fp32": 1e-5}  # metres, the captured path against the eager one


def frames(batch, height=480, width=640):
    return np.stack([structured_image(height, width, seed=i) for i in range(batch)])


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("preprocessing, flip", [("resize", False), ("crop", True)])
@pytest.mark.parametrize("batch", [1, 4])
def test_the_captured_frame_equals_the_eager_path(
    make_config, rn50_checkpoint, precision, preprocessing, flip, batch
):
    model = DepthClip(
        make_config(
            model=str(rn50_checkpoint),
            device="cuda",
            precision=precision,
            preprocessing=preprocessing,
            flip=flip,
        )
    )
    images = frames(batch)
    eager = model.predict_eager(images)
    for _ in range(2):  # captured on the first call, replayed on the second
        graph = model.predict(images)
        for name in ("depth", "depth_std", "coarse_depth", "coarse_std"):
            np.testing.assert_allclose(
                getattr(graph, name), getattr(eager, name), atol=TOLERANCE[precision], err_msg=name
            )
        assert np.array_equal(np.isnan(graph.depth), np.isnan(eager.depth))
    assert len(model.graphs._graphs) == 1


def test_bins_tokens_and_temperature_change_without_a_new_capture(make_config, tiny_checkpoint):
    model = DepthClip(make_config(device="cuda", precision="fp32"))
    images = frames(1)
    first = model.predict(images)
    model.update_config(
        model.config.replace(
            depth_bins=(2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0),
            temperature=0.5,
            depth_tokens=("a", "b", "c", "d", "e", "f", "g"),
        )
    )
    second = model.predict(images)
    assert len(model.graphs._graphs) == 1  # the same graph, new inputs
    np.testing.assert_allclose(second.depth, model.predict_eager(images).depth, atol=1e-5)
    assert not np.allclose(first.depth, second.depth)
    model.update_config(model.config.replace(depth_bins=(1.0, 2.0), depth_tokens=("near", "far")))
    np.testing.assert_allclose(
        model.predict(images).depth, model.predict_eager(images).depth, atol=1e-5
    )
    assert len(model.graphs._graphs) == 2  # two bins: another graph's shapes


def test_folded_batch_norms_match_the_unfolded_encoder_in_fp16(make_config, rn50_checkpoint):
    cfg = make_config(model=str(rn50_checkpoint), device="cuda", precision="fp16")
    loaded = load_clip(cfg.model, "cuda", "fp16", "")
    folded = DepthClip(cfg, loaded)
    unfolded = DepthClip(cfg, loaded)
    unfolded.encoder = dense_encoder(loaded.clip_model.visual).to(
        memory_format=torch.channels_last
    )
    images = frames(1)
    np.testing.assert_allclose(
        folded.predict_eager(images).depth, unfolded.predict_eager(images).depth, atol=1e-3
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"head_precision": "model"},  # the official fp16 head, at the paper's T 0.1
        {"dense_features": "projected"},
        {"device": "cuda:0"},
        {"preprocessing": "crop", "flip": True},
    ],
    ids=["head-model", "projected", "cuda0", "crop-flip"],
)
def test_every_structural_option_replays_the_eager_depth_at_t_0_1(
    make_config, rn50_checkpoint, changes
):
    cfg = make_config(
        model=str(rn50_checkpoint), device="cuda", precision="fp16", temperature=0.1
    ).replace(**changes)
    model = DepthClip(cfg)
    images = frames(3)  # runs as a padded batch of 4 (the last image again)
    # The eager path at the batch the graph runs: cuDNN may choose other fp16 kernels for 3.
    eager = model.predict_eager(np.concatenate([images, images[-1:]])).depth[:3]
    for _ in range(2):
        graph = model.predict(images)
        np.testing.assert_allclose(graph.depth, eager, atol=TOLERANCE["fp16"])
    assert model.graph_status == "on" and model.graphs.memory_bytes > 0
    only = model.predict(images, arrays=("bin_probs",))  # the rest stays on the device
    assert only.depth_std is None and only.bin_probs.shape[0] == 3


def test_frames_in_flight_give_one_at_a_times_arrays_to_the_bit(make_config, rn50_checkpoint):
    """The streams and events of frames in flight: frames begun before the earlier ones are
    taken (more than the two slots, so a slot serves again while its last frame's arrays wait
    to be taken), across two camera sizes and a temperature change, each equal to the bit to
    the same frame run alone, and told done once its arrays have arrived."""
    model = DepthClip(make_config(model=str(rn50_checkpoint), device="cuda", precision="fp16"))
    assert model.frames_in_flight == 2
    sequence = [frames(1), frames(2)[1:], frames(1, 240, 320), frames(1), frames(2)[1:]]
    for images in sequence:
        model.predict(images)  # each size captured and checked before the test
    begun = []
    for i, images in enumerate(sequence * 2):
        if i == len(sequence):
            model.update_config(model.config.replace(temperature=0.5))
        begun.append((model.begin_predict(images), images, model.config.temperature))
    in_flight = [(started(), images, t) for started, images, t in begun]
    torch.cuda.synchronize()
    woken = []
    begun[-1][0].when_done(lambda: woken.append(True))
    assert woken == [True] and all(started.done() for started, _, _ in begun)
    for result, images, temperature in in_flight:
        model.update_config(model.config.replace(temperature=temperature))
        alone = model.predict(images)
        for name in ("depth", "depth_std", "coarse_depth", "coarse_std", "bin_probs"):
            np.testing.assert_array_equal(getattr(result, name), getattr(alone, name), name)
