"""The core against an independent, step-by-step transcription of the reference DepthCLIP."""

import copy
import socket
import subprocess
import sys
import urllib.error
import warnings

import clip
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clip.model import build_model
from helpers import structured_image

from depthclip_ros.errors import ImageSizeError, ModelLoadError
from depthclip_ros.estimator import preprocessing
from depthclip_ros.estimator.clip_loading import load_clip
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.depth_head import (
    bin_probabilities,
    channel_subsample_index,
    position_embeddings,
    temperature_scale,
)
from depthclip_ros.estimator.preprocessing import preprocess
from depthclip_ros.estimator.scene_classification import global_embedding
from depthclip_ros.estimator.text_cache import default_cache_dir
from depthclip_ros.estimator.text_features import text_features
from depthclip_ros.runtime.scene_hysteresis import SceneChoice, SceneHysteresis

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def reference_layer4(v, t):
    t = v.relu1(v.bn1(v.conv1(t)))
    t = v.relu2(v.bn2(v.conv2(t)))
    t = v.relu3(v.bn3(v.conv3(t)))
    t = v.avgpool(t)
    return v.layer4(v.layer3(v.layer2(v.layer1(t))))


def reference_text(model, tokens, templates=("This {object} is {token}",), dtype=torch.float32):
    """The reference's text side: per token, each template's prompt encoded and normalised, the
    mean over templates normalised again (in `dtype`, as the official code on CUDA: fp16)."""
    text = []
    for tok in tokens:
        prompts = [template.format(object="object", token=tok) for template in templates]
        e = model.encode_text(clip.tokenize(prompts)).to(dtype)
        e = e / e.norm(dim=-1, keepdim=True)
        e = e.mean(dim=0)
        text.append(e / e.norm())
    return torch.stack(text, dim=1)


def reference_depth(
    checkpoint,
    img,
    tokens,
    bins,
    temperature,
    flip,
    templates=("This {object} is {token}",),
    dense="subsampled",
):
    """The reference pipeline written out independently (NYU crop, 640x480 input); `dense`
    'projected' is MaskCLIP's: v_proj then c_proj of the attention pool at every position."""
    model = build_model(torch.load(checkpoint, map_location="cpu")).float().eval()
    x = img[56:472, 60:604].astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    x = torch.from_numpy(x).permute(2, 0, 1)[None]
    v = model.visual

    with torch.no_grad():
        text = reference_text(model, tokens, templates)

        def depth_of(t):
            f = reference_layer4(v, t)  # (1, C, 13, 17)
            c = f.shape[1]
            f = f.permute(0, 2, 3, 1).reshape(1, 13 * 17, c)
            if dense == "projected":
                pool = v.attnpool
                f = f @ pool.v_proj.weight.T + pool.v_proj.bias
                f = f @ pool.c_proj.weight.T + pool.c_proj.bias
                f = f / f.norm(dim=-1, keepdim=True)
            else:
                f = f / f.norm(dim=-1, keepdim=True)
                f = F.interpolate(f, scale_factor=text.shape[0] / c)  # the reference's trick
            logits = 100.0 * f @ text
            logits = logits.permute(0, 2, 1).reshape(1, len(bins), 13, 17) / temperature
            p = F.softmax(logits, dim=1)
            return (p * torch.tensor(bins).view(1, -1, 1, 1)).sum(1, keepdim=True)

        d = depth_of(x)
        if flip:
            d = (d + torch.flip(depth_of(torch.flip(x, [-1])), [-1])) / 2
        return F.interpolate(d, size=(416, 544), mode="bilinear", align_corners=True)[0, 0].numpy()


@pytest.mark.parametrize("flip", [False, True])
def test_matches_reference_step_by_step(make_config, tiny_checkpoint, flip):
    cfg = make_config(preprocessing="crop", flip=flip, temperature=0.5)
    img = structured_image()
    result = DepthClip(cfg).predict(img)
    expected = reference_depth(tiny_checkpoint, img, cfg.depth_tokens, cfg.depth_bins, 0.5, flip)
    crop = result.depth[0, 56:472, 60:604]
    assert np.ptp(expected) > 1e-4  # the comparison is not between two constants
    np.testing.assert_allclose(crop, expected, atol=1e-5, rtol=0)
    # Outside the crop the depth is undefined.
    assert np.isnan(result.depth[0, :56]).all() and np.isnan(result.depth[0, :, 604:]).all()
    assert result.region == (56, 60, 416, 544)
    assert result.coarse_depth.shape == (1, 13, 17) and result.bin_probs.shape == (1, 7, 13, 17)


@pytest.mark.parametrize("size", [(480, 640), (250, 333), (720, 1280)])
def test_resize_output_size_and_bin_range(make_config, size):
    cfg = make_config(preprocessing="resize", flip=False)
    model = DepthClip(cfg)
    imgs = np.stack([structured_image(*size, seed=s) for s in range(2)])
    r = model.predict(imgs)
    assert r.depth.shape == (2, *size) and r.depth.dtype == np.float32
    assert np.isfinite(r.depth).all()
    assert r.depth.min() >= cfg.depth_bins[0] - 1e-6 and r.depth.max() <= cfg.depth_bins[-1] + 1e-6
    np.testing.assert_allclose(r.bin_probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        (r.bin_probs * r.bins[None, :, None, None]).sum(1), r.coarse_depth, atol=1e-5
    )
    # align_corners=True: the image corners carry the coarse corner values exactly.
    np.testing.assert_allclose(r.depth[:, 0, 0], r.coarse_depth[:, 0, 0], atol=1e-6)
    np.testing.assert_allclose(r.depth[:, -1, -1], r.coarse_depth[:, -1, -1], atol=1e-6)


def test_flip_equivariance(make_config):
    model = DepthClip(make_config(preprocessing="resize", flip=True))
    img = structured_image(seed=3)
    a = model.predict(img).depth[0]
    b = model.predict(np.ascontiguousarray(img[:, ::-1])).depth[0]
    assert np.ptp(a) > 1e-4
    np.testing.assert_allclose(b, a[:, ::-1], atol=1e-5)
    # Without flip averaging the model is not symmetric: the test above can fail.
    model.update_config(model.config.replace(flip=False))
    a = model.predict(img).depth[0]
    b = model.predict(np.ascontiguousarray(img[:, ::-1])).depth[0]
    assert np.abs(b - a[:, ::-1]).max() > 1e-5


def test_crop_box_and_normalisation_exact(make_config):
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    x = preprocess(torch.from_numpy(img)[None], make_config(preprocessing="crop")).numpy()[0]
    expected = ((img[56:472, 60:604].astype(np.float64) / 255 - MEAN) / STD).transpose(2, 0, 1)
    assert x.shape == (3, 416, 544)
    np.testing.assert_allclose(x, expected, atol=1e-5)
    clip_x = preprocess(
        torch.from_numpy(img)[None], make_config(preprocessing="crop", normalization="clip")
    ).numpy()[0]
    mean, std = np.array(preprocessing.CLIP_MEAN), np.array(preprocessing.CLIP_STD)
    np.testing.assert_allclose(
        clip_x, ((img[56:472, 60:604] / 255 - mean) / std).transpose(2, 0, 1), atol=1e-5
    )
    with pytest.raises(ImageSizeError, match="640x480"):
        preprocess(
            torch.zeros(1, 240, 320, 3, dtype=torch.uint8), make_config(preprocessing="crop")
        )


def test_channel_subsampling_index():
    idx = channel_subsample_index(2048, 1024)
    assert idx.tolist() == list(range(0, 2048, 2))
    assert channel_subsample_index(2560, 640).tolist() == [4 * i for i in range(640)]  # RN50x4
    assert channel_subsample_index(256, 32).tolist() == list(range(0, 256, 8))  # tiny


def test_bin_change_changes_output_and_keeps_range(make_config):
    model = DepthClip(make_config(preprocessing="resize", flip=False))
    img = structured_image()
    before = model.predict(img).depth
    model.update_config(model.config.replace(depth_bins=(2.0, 2.5, 3.0, 3.25, 3.5, 3.75, 4.0)))
    after = model.predict(img).depth
    assert after.min() >= 2.0 and after.max() <= 4.0 and not np.allclose(before, after)


def test_update_config_refuses_load_time_fields(make_config):
    from depthclip_ros.errors import ConfigError

    model = DepthClip(make_config())
    with pytest.raises(ConfigError, match="device"):
        model.update_config(model.config.replace(device="cuda"))


@pytest.mark.parametrize("preprocessing, shape", [("crop", (480, 640)), ("resize", (96, 128))])
def test_warm_up_runs_the_network_at_its_input_size(
    make_config, monkeypatch, preprocessing, shape
):
    model = DepthClip(make_config(preprocessing=preprocessing, input_width=128, input_height=96))
    seen = []
    real = model.dense_features
    monkeypatch.setattr(model, "dense_features", lambda x: seen.append(tuple(x.shape)) or real(x))
    model.warm_up()
    frame = np.zeros((*shape, 3), np.uint8)
    model.predict(frame)
    assert len(seen) == 2 and seen[0] == seen[1]  # the real frame's forward shape was warmed up


def test_prompt_longer_than_clip_context_is_a_config_error(make_config):
    from depthclip_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="prompt_template.*too long for CLIP"):
        DepthClip(make_config(prompt_template="This {object} is " + "very " * 80 + "{token}"))


def test_text_cache_hit_skips_encode_text(make_config):
    cfg = make_config()
    loaded = load_clip(cfg.model, "cpu")
    calls = []
    original = loaded.clip_model.encode_text
    loaded.clip_model.encode_text = lambda t: calls.append(1) or original(t)
    DepthClip(cfg, loaded)
    assert len(calls) == 1
    loaded2 = load_clip(cfg.model, "cpu")
    loaded2.clip_model.encode_text = lambda t: calls.append(1) or original(t)
    m = DepthClip(cfg, loaded2)
    assert len(calls) == 1  # cache hit
    m.update_config(cfg.replace(depth_tokens=tuple(reversed(cfg.depth_tokens))))
    assert len(calls) == 2  # new prompts -> new key -> encoded


# ------------------------------------------------------------------ beyond the paper


@pytest.mark.parametrize("flip", [False, True])
def test_projected_dense_features_match_a_maskclip_transcription(
    make_config, tiny_checkpoint, flip
):
    cfg = make_config(preprocessing="crop", flip=flip, dense_features="projected")
    img = structured_image(seed=1)
    depth = DepthClip(cfg).predict(img).depth[0, 56:472, 60:604]
    expected = reference_depth(
        tiny_checkpoint, img, cfg.depth_tokens, cfg.depth_bins, 1.0, flip, dense="projected"
    )
    paper = reference_depth(tiny_checkpoint, img, cfg.depth_tokens, cfg.depth_bins, 1.0, flip)
    assert np.ptp(expected) > 1e-4 and np.abs(expected - paper).max() > 1e-3  # a real change
    np.testing.assert_allclose(depth, expected, atol=1e-5, rtol=0)


def test_template_ensemble_matches_a_transcription(make_config, tiny_checkpoint):
    templates = ("This {object} is {token}", "a photo of a {token} {object}.", "{token}: {object}")
    cfg = make_config(preprocessing="crop", prompt_template=templates)
    model = DepthClip(cfg)
    img = structured_image(seed=2)
    expected = reference_depth(
        tiny_checkpoint, img, cfg.depth_tokens, cfg.depth_bins, 1.0, False, templates
    )
    np.testing.assert_allclose(model.predict(img).depth[0, 56:472, 60:604], expected, atol=1e-5)
    # One template is the paper's text side; its cache entry is another file.
    single = cfg.replace(prompt_template=templates[:1])
    assert make_config(prompt_template=templates[0]).prompt_template == templates[:1]
    model.update_config(single)
    one = reference_depth(tiny_checkpoint, img, cfg.depth_tokens, cfg.depth_bins, 1.0, False)
    np.testing.assert_allclose(model.predict(img).depth[0, 56:472, 60:604], one, atol=1e-5)
    assert np.abs(one - expected).max() > 1e-4
    assert len(list(model.cache_dir.glob("text_*.npy"))) == 2


def test_head_precision_model_is_the_official_fp16_head(make_config, tiny_checkpoint):
    """fp16 head (normalisation, logits, temperature, softmax) and fp16 text normalisation, as
    the official code runs on CUDA, transcribed on CPU on the same layer4 features."""
    cfg = make_config(preprocessing="crop")
    model = DepthClip(cfg)
    img = structured_image(seed=4)
    # On CPU the backbone is float32: 'model' is float32, to the bit.
    fp32 = model.predict(img)
    model.update_config(cfg.replace(head_precision="model"))
    np.testing.assert_array_equal(model.predict(img).depth, fp32.depth)
    # The head in fp16, through the core's own functions, against the official steps.
    with torch.no_grad():
        x = preprocess(model.to_device(img), cfg)
        feats = model.dense_features(x)
        reference = build_model(torch.load(tiny_checkpoint, map_location="cpu")).float().eval()
        text16 = reference_text(reference, cfg.depth_tokens, dtype=torch.float16)
        f = feats.permute(0, 2, 3, 1).reshape(1, 13 * 17, -1).half()
        f = f / f.norm(dim=-1, keepdim=True)
        f = F.interpolate(f, scale_factor=text16.shape[0] / f.shape[-1])
        logits = (100.0 * f @ text16).permute(0, 2, 1).reshape(1, 7, 13, 17)
        logits /= 1.0
        expected = logits.softmax(dim=1)
        positions = position_embeddings(
            feats, "subsampled", model.channel_index, model.attnpool, torch.float16
        )
        text_cached = text_features(
            model.loaded.clip_model,
            model.model_identity,
            cfg.prompt_sets,
            "cpu",
            model.cache_dir,
            torch.float16,
        )
        got = bin_probabilities(positions, torch.from_numpy(text_cached), 1.0, (13, 17))
    assert got.dtype == torch.float16
    np.testing.assert_array_equal(text_cached, text16.float().numpy())
    torch.testing.assert_close(got, expected, atol=0, rtol=0)  # the same fp16 steps, exactly
    assert (got.float() - fp32_probs(model, feats, cfg)).abs().max() > 1e-5  # fp16 differs


def fp32_probs(model, feats, cfg):
    positions = position_embeddings(
        feats, "subsampled", model.channel_index, model.attnpool, torch.float32
    )
    scale = temperature_scale(cfg.temperature)
    return bin_probabilities(positions, model.head.text, scale, (13, 17))


def test_the_callers_model_keeps_its_attention_pool(make_config):
    """The core's encoder stops at layer4 without touching the model it was given: the caller's
    CLIP still computes its global image embedding, unchanged."""
    cfg = make_config()
    loaded = load_clip(cfg.model, "cpu")
    visual = loaded.clip_model.visual
    pool = visual.attnpool
    image = torch.rand(1, 3, visual.input_resolution, visual.input_resolution)
    with torch.no_grad():
        before = loaded.clip_model.encode_image(image)
        core = DepthClip(cfg, loaded)
        after = loaded.clip_model.encode_image(image)
        dense = core.encoder(image)
    assert visual.attnpool is pool and not isinstance(pool, torch.nn.Identity)
    torch.testing.assert_close(after, before)
    assert after.shape == (1, loaded.clip_model.text_projection.shape[1])
    assert dense.shape[:2] == (1, core.image_channels)  # layer4's map, not the pooled vector


def test_corrupt_cache_recovers(make_config, caplog):
    cfg = make_config()
    reference = DepthClip(cfg)
    files = list((reference.cache_dir).glob("text_*.npy"))
    assert len(files) == 1
    files[0].write_bytes(b"\x93NUMPY garbage")
    with caplog.at_level("WARNING", logger="depthclip_ros"):
        recovered = DepthClip(cfg)
    assert "corrupt" in caplog.text
    np.testing.assert_array_equal(recovered.head.text.numpy(), reference.head.text.numpy())
    np.load(files[0])  # rewritten whole


def test_the_default_cache_follows_xdg_cache_home(make_config, tmp_path, monkeypatch):
    """An empty cache_dir is $XDG_CACHE_HOME/depthclip_ros (a relative one ignored, as the XDG
    rule says), else ~/.cache/depthclip_ros; the text features are written there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model = DepthClip(make_config().replace(cache_dir=""))
    assert model.cache_dir == tmp_path / "xdg" / "depthclip_ros"
    assert len(list(model.cache_dir.glob("text_*.npy"))) == 1
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in ("relative/cache", ""):
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "depthclip_ros"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "depthclip_ros"


def test_torchscript_archive_loads_like_state_dict(tmp_path, make_config):
    from depthclip_ros.tools.random_clip import save_random_checkpoint

    ts = save_random_checkpoint(tmp_path / "ts.pt", torchscript=True)
    sd = save_random_checkpoint(tmp_path / "sd.pt")
    img = structured_image()
    a = DepthClip(make_config(model=ts)).predict(img).depth
    b = DepthClip(make_config(model=sd)).predict(img).depth
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], atol=1e-6)


def test_reading_either_checkpoint_format_warns_nothing(tmp_path):
    # OpenAI's RN50.pt is a TorchScript archive: a deprecation warning of torch.jit.load would
    # reach the user on every start of the node and every tool.
    from depthclip_ros.estimator.clip_loading import read_state_dict
    from depthclip_ros.tools.random_clip import save_random_checkpoint

    for name, torchscript in (("ts.pt", True), ("sd.pt", False)):
        path = save_random_checkpoint(tmp_path / name, torchscript=torchscript)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert "text_projection" in read_state_dict(path)


def test_missing_weights_error_names_the_file(tmp_path, monkeypatch):
    def no_network(url, root):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(clip.clip, "_download", no_network)
    before = socket.getdefaulttimeout()
    with pytest.raises(ModelLoadError) as err:
        load_clip("RN50", "cpu", download_root=str(tmp_path / "weights"))
    msg = str(err.value)
    assert str(tmp_path / "weights" / "RN50.pt") in msg and "download failed" in msg
    assert "model to the path" in msg
    assert socket.getdefaulttimeout() == before  # the download's timeout is not left behind


def test_bad_model_names_and_files(tmp_path):
    with pytest.raises(ModelLoadError, match="not supported"):
        load_clip("ViT-B/32", "cpu")
    with pytest.raises(ModelLoadError, match="neither a CLIP model name"):
        load_clip(str(tmp_path / "nothing.pt"), "cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="neither a TorchScript archive nor"):
        load_clip(str(junk), "cpu")


@pytest.mark.slow
def test_core_does_not_import_rclpy():
    code = (
        "import sys, depthclip_ros.estimator.core, depthclip_ros.config.parameters,"
        " depthclip_ros.messages.decoding, depthclip_ros.messages.outputs,"
        " depthclip_ros.runtime.worker, depthclip_ros.tools.demo, depthclip_ros.bag.cli,"
        " depthclip_ros.node.launch_arguments, offline_eval.cli;"
        "sys.exit('rclpy' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------ scene-adaptive bins


def test_global_embedding_is_clips_image_embedding(tiny_checkpoint):
    """At CLIP's own grid it equals encode_image; on another grid it is the attention pool with
    its 7x7 positional embedding resized bicubically (the class position kept)."""
    model = build_model(torch.load(tiny_checkpoint, map_location="cpu")).float().eval()
    v = model.visual
    with torch.no_grad():
        x = torch.randn(2, 3, v.input_resolution, v.input_resolution)
        torch.testing.assert_close(
            global_embedding(reference_layer4(v, x), v.attnpool), model.encode_image(x)
        )
        x = torch.randn(1, 3, 416, 544)
        pool = copy.deepcopy(v.attnpool)
        pos = pool.positional_embedding.data
        side = int((pos.shape[0] - 1) ** 0.5)
        grid = pos[1:].T.reshape(1, -1, side, side)
        grid = F.interpolate(grid, size=(13, 17), mode="bicubic", align_corners=False)
        pool.positional_embedding = torch.nn.Parameter(
            torch.cat([pos[:1], grid.reshape(pos.shape[1], -1).T])
        )
        feats = reference_layer4(v, x)
        torch.testing.assert_close(global_embedding(feats, v.attnpool), pool(feats))


def test_scene_bins_use_the_scenes_preset(make_config, tiny_checkpoint):
    """Each image's depth is the reference's with its scene's bins (paper Table 2: bathroom ->
    class-dependent 3); other scenes keep the config's; CLIP's scene probabilities are the
    global embedding against the scene prompts."""
    cfg = make_config(preprocessing="crop", scene_bins="auto")
    model = DepthClip(cfg)
    img = structured_image(seed=5)
    cd3 = (1.00, 1.25, 1.50, 1.75, 2.00, 2.25, 2.50)
    r = model.predict(np.stack([img, img]), scenes=["bathroom", "kitchen"])
    for i, bins in enumerate((cd3, cfg.depth_bins)):
        expected = reference_depth(tiny_checkpoint, img, cfg.depth_tokens, bins, 1.0, False)
        np.testing.assert_allclose(r.depth[i, 56:472, 60:604], expected, atol=1e-5)
        np.testing.assert_allclose(r.image_bins[i], bins)
    assert r.scenes == ["bathroom", "kitchen"]
    # Scene probabilities, written out: CLIP's embedding against "a photo of a <scene>.".
    reference = build_model(torch.load(tiny_checkpoint, map_location="cpu")).float().eval()
    with torch.no_grad():
        x = preprocess(torch.from_numpy(img)[None], cfg)
        emb = global_embedding(reference_layer4(reference.visual, x), reference.visual.attnpool)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        prompts = [f"a photo of a {s.replace('_', ' ')}." for s in cfg.scenes]
        text = reference.encode_text(clip.tokenize(prompts))
        text = text / text.norm(dim=-1, keepdim=True)
        expected_scores = (100.0 * emb @ text.T).softmax(dim=-1).numpy()
    np.testing.assert_allclose(r.scene_scores[0], expected_scores[0], atol=1e-5)
    auto = model.predict(img)  # the most probable scene
    assert auto.scenes == [cfg.scenes[int(expected_scores[0].argmax())]]


def test_a_scene_preset_must_exist_and_keep_the_bin_count(make_config, tmp_path):
    from depthclip_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="scene_presets.*unknown preset"):
        DepthClip(make_config(scene_bins="auto", scene_presets=("bathroom:no_such_preset",)))
    with pytest.raises(ConfigError, match="scene_presets.*not one of scenes"):
        make_config(scene_presets=("garage:bins_class_dependent_3",)).validate()
    three = tmp_path / "three.yaml"
    three.write_text(
        "/**/depthclip:\n  ros__parameters:\n    depth_bins: [1.0, 2.0, 3.0]\n"
        "    depth_tokens: [close, middle, far]\n"
    )
    with pytest.raises(ConfigError, match="scene bathroom has 3 bins, the config 7"):
        DepthClip(make_config(scene_bins="auto", scene_presets=(f"bathroom:{three}",)))


def test_the_node_scene_switches_after_n_consecutive_wins():
    names = ("bathroom", "kitchen")
    hysteresis = SceneHysteresis()
    seen = []
    for winner in [0, 1, 1, 0, 1, 1, 1, 0]:
        scores = np.array([[0.9, 0.1] if winner == 0 else [0.2, 0.8]])
        seen.append(hysteresis.choose(names, scores, frames=3)[0])
    b, k = "bathroom", "kitchen"
    assert seen == [b, b, b, b, b, b, k, k]  # kitchen won frames 5-7: it takes over at 7
    assert hysteresis.score == pytest.approx(0.1)  # kitchen's probability in the last frame


def test_a_scene_choice_runs_each_cameras_hysteresis_in_batch_order_and_travels():
    """One batch holding two frames of camera A then one of camera B: each image takes its own
    camera's scene, A's second frame after its first; pickled (another process runs it, as
    the fleet's model workers do) and adopted back, the cameras' states are the ones it
    left there."""
    import pickle

    names = ("bathroom", "kitchen")
    a, b = SceneHysteresis(), SceneHysteresis()
    kitchen, bathroom = [0.2, 0.8], [0.9, 0.1]
    choice = SceneChoice([a, a, b], frames=2)
    assert choice(names, np.array([bathroom, kitchen, kitchen])) == [
        "bathroom",
        "bathroom",  # kitchen has won once: not yet
        "kitchen",
    ]
    travelled = pickle.loads(pickle.dumps(SceneChoice([a, b], frames=2)))
    assert travelled(names, np.array([kitchen, bathroom])) == ["kitchen", "kitchen"]
    assert a.scene == "bathroom"  # not yet adopted: the copies ran
    SceneChoice([a, b], frames=2).adopt(travelled)
    assert (a.scene, b.scene) == ("kitchen", "kitchen") and b._wins == 1


def test_a_result_names_the_head_that_made_each_image(make_config):
    """head_keys: one per image, the head the image ran: under scene_bins auto a scene with a
    preset has its own (its bins), scenes without one share the config's; a new config's
    results name the new head."""
    from depthclip_ros.estimator.head import head_key

    cfg = make_config(scene_bins="auto")
    model = DepthClip(cfg)
    img = np.stack([structured_image(seed=1)] * 3)
    result = model.predict(img, scenes=["bathroom", "kitchen", "office"], arrays=())
    bathroom = cfg.scene_configs()["bathroom"]
    assert result.head_keys[0] == head_key(bathroom) != head_key(cfg)
    assert result.head_keys[1] == result.head_keys[2] == head_key(cfg)
    plain = DepthClip(make_config())
    assert plain.predict(img[:2], arrays=()).head_keys == (head_key(make_config()),) * 2
    warmer = make_config(temperature=2.0)
    plain.update_config(warmer)
    assert plain.predict(img[:1], arrays=()).head_keys == (head_key(warmer),)
    assert head_key(warmer) != head_key(make_config())


@pytest.mark.slow
def test_projected_features_and_global_embedding_at_rn50_shapes(make_config, rn50_checkpoint):
    """The same transcriptions with RN50's shapes: 2048 channels projected to 1024, 32 heads."""
    cfg = make_config(model=rn50_checkpoint, preprocessing="crop", dense_features="projected")
    img = structured_image(seed=6)
    depth = DepthClip(cfg).predict(img).depth[0, 56:472, 60:604]
    expected = reference_depth(
        rn50_checkpoint, img, cfg.depth_tokens, cfg.depth_bins, 1.0, False, dense="projected"
    )
    assert np.ptp(expected) > 1e-4
    np.testing.assert_allclose(depth, expected, atol=1e-5, rtol=0)
    model = build_model(torch.load(rn50_checkpoint, map_location="cpu")).float().eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(
            global_embedding(reference_layer4(model.visual, x), model.visual.attnpool),
            model.encode_image(x),
            atol=1e-4,
            rtol=1e-4,
        )


def test_scene_presets_come_as_data_read_by_config(make_config, tiny_checkpoint, tmp_path):
    """The core reads no parameter file: a scene_bins auto config built without config/'s
    reading is refused, naming the fix; read, it carries each scene's bins and tokens."""
    from depthclip_ros.config.parameters import DepthClipConfig
    from depthclip_ros.errors import ConfigError

    unread = DepthClipConfig(
        model=tiny_checkpoint, device="cpu", cache_dir=str(tmp_path), scene_bins="auto"
    )
    with pytest.raises(ConfigError, match="scene_presets.*not read: build the config with"):
        DepthClip(unread)
    read = make_config(scene_bins="auto")
    cd3 = (1.00, 1.25, 1.50, 1.75, 2.00, 2.25, 2.50)
    assert dict((s, b) for s, b, _ in read.scene_heads)["bathroom"] == cd3
    assert read.replace(scene_presets=()).scene_heads is None  # other presets: read again


def test_clips_modules_without_import_clip_are_clips_own():
    """clip_modules: the tokenizer's tokens and its refusal, the model list and the model class
    equal clip's own (`import clip`), on the shipped prompts and odd text."""
    from depthclip_ros.config.params_files import load_config
    from depthclip_ros.estimator import clip_modules

    config = load_config()
    texts = [*config.prompts, *config.scene_prompts, "Ünïcödé ☃  spaced\ttext", "word " * 70]
    assert torch.equal(clip_modules.tokenize(texts), clip.tokenize(texts))
    assert clip_modules.tokenize(texts).dtype == clip.tokenize(texts).dtype == torch.int32
    too_long = ["word " * 80]
    with pytest.raises(RuntimeError) as ours:
        clip_modules.tokenize(too_long)
    with pytest.raises(RuntimeError) as theirs:
        clip.tokenize(too_long)
    assert str(ours.value) == str(theirs.value)
    assert clip_modules.model_urls() == clip.clip._MODELS
    ours_model = clip_modules.clip_module("model")
    assert ours_model.__file__ == clip.model.__file__ and ours_model is not clip.model


def test_the_core_starts_without_torchvision():
    """The node's model path imports neither torchvision nor torch._dynamo (clip's `import
    clip` brings both: seconds of every node's start-up): checked in a process of its own."""
    script = (
        "import sys; from depthclip_ros.model_loading import load_estimator; "
        "import depthclip_ros.estimator.core, depthclip_ros.node.lifecycle_node; "
        "print(sorted(m for m in ('clip', 'torchvision', 'torch._dynamo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
