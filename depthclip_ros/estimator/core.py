"""The DepthCLIP estimator (Zhang et al., ACM MM 2022), as the reference code computes it.

uint8 RGB in, metric depth out. Every tool (ROS node, offline eval, bag tool,
benchmark) calls `DepthClip.predict`; none preprocesses or predicts on its own.
No rclpy import here.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config.parameters import DepthClipConfig
from ..synthetic_scenes import SCENES, render_scene
from .batchnorm_folding import fold_batch_norms
from .clip_loading import LoadedModel, load_clip
from .cpu_features import cpu_description
from .cuda_graph import SLOTS, CapturedFrames, PinnedBuffers, padded_batches
from .depth_head import (
    bin_probabilities,
    channel_subsample_index,
    position_embeddings,
    scene_bin_probabilities,
    temperature_scale,
)
from .head import Head, head_key
from .preprocessing import normalization, preprocess
from .reference_frames import depth_figure
from .result import (
    OUTPUT_FIELDS,
    DepthResult,
    Started,
    as_image_batch,
    fetched_fields,
    input_region,
    network_image_size,
)
from .scene_classification import SceneClassifier
from .text_cache import default_cache_dir
from .text_features import text_features

PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def dense_encoder(visual: torch.nn.Module) -> torch.nn.Module:
    """CLIP's visual ResNet up to layer4, the reference's dense features: CLIP's own forward
    (stem, dtype cast, layers) with the attention pool replaced by Identity, on a shallow copy
    that shares the weights, so the caller's model keeps its pool (CLIP's global embedding)."""
    encoder = copy.copy(visual)
    encoder._modules = dict(visual._modules)  # a copy's own submodule table; weights shared
    encoder.attnpool = torch.nn.Identity()
    return encoder


class DepthClip:
    """DepthCLIP on a CLIP ResNet. Thread-safe for one predicting thread plus config updates."""

    def __init__(self, config: DepthClipConfig, loaded: LoadedModel | None = None):
        owned = loaded is None
        self.loaded = loaded or load_clip(
            config.model, config.device, config.precision, config.download_root
        )
        self.device = self.loaded.device
        self.dtype = self.loaded.dtype
        self.runtime = f"torch {torch.__version__}"
        if config.inference_threads and self.device.type == "cpu":  # torch's are the process's
            torch.set_num_threads(config.inference_threads)
        visual = self.loaded.clip_model.visual
        # NHWC convolutions: faster with cuDNN (tensor cores) and with oneDNN on CPU too
        # (measured: bench/results/performance.md). Layout only: the weights' values do not change.
        encoder = dense_encoder(visual)
        # The caller's model stays as it was, and in bf16 CLIP's own modules (text encoder,
        # attention pool) stay float32: fold, and cast, a copy of the trunk.
        if not owned or self.dtype == torch.bfloat16:
            encoder = copy.deepcopy(encoder)
        # Inference only: each BatchNorm folded into its convolution, one kernel instead of two
        # (measured: bench/results/performance.md).
        fold_batch_norms(encoder)
        if self.dtype == torch.bfloat16:  # weights cast: oneDNN's bf16 kernels (AVX-512, AMX)
            encoder = encoder.to(torch.bfloat16)
        self.encoder = encoder.to(memory_format=torch.channels_last)
        self.attnpool = visual.attnpool  # its projections serve dense_features 'projected'
        # On CUDA the whole frame replays as one captured graph (cuda_graph; scene_bins auto and
        # an oracle's scenes run eagerly): Python issuing each kernel cost more than the model.
        self.graphs = None
        self._pinned = PinnedBuffers()  # the eager CUDA upload's host buffers, bounded
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: autotune once
            if config.cuda_graphs == "auto":
                self.graphs = CapturedFrames(self)
        self.image_channels = visual.layer4[-1].conv3.out_channels
        self.embed_dim = self.loaded.clip_model.text_projection.shape[1]
        self.channel_index = channel_subsample_index(self.image_channels, self.embed_dim).to(
            self.device
        )
        self.cache_dir = Path(config.cache_dir or default_cache_dir()).expanduser()
        self.depth_figure = None  # bf16: DepthFigure against its float32 trunk, at warm-up
        self._checked = None  # the last config check_config accepted
        self._head = self._make_head(config)

    @property
    def head(self) -> Head:
        """The config in use and its text features and bins (replaced whole by update_config)."""
        return self._head

    @property
    def config(self) -> DepthClipConfig:
        return self._head.config

    @property
    def graph_status(self) -> str:
        """CUDA graphs: "on", "off: <why>" (refused for some frames, or the parameter), or
        "not used" (CPU)."""
        if self.graphs is not None:
            return self.graphs.status
        if self.device.type == "cuda":
            return "off: cuda_graphs off"
        return "not used"

    def normalization_constants(self, cfg: DepthClipConfig) -> tuple:
        """(mean, std) tensors preprocessing reads for `cfg` on this device."""
        return normalization(cfg.normalization, self.device)

    @property
    def model_identity(self) -> str:
        return self.loaded.identity

    @property
    def precision(self) -> str:
        """The image trunk's precision: fp32, fp16 or bf16 (the head: head_precision)."""
        return PRECISION_NAMES[self.dtype]

    @property
    def precision_detail(self) -> str:
        return self.precision

    @property
    def cpu_threads(self) -> int:
        """Threads torch's CPU kernels use (tools decide from it what else can run beside)."""
        return torch.get_num_threads()

    def _text_and_bins(self, cfg: DepthClipConfig) -> tuple:
        feats = text_features(
            self.loaded.clip_model,
            self.loaded.identity,
            cfg.prompt_sets,
            self.device,
            self.cache_dir,
            self.head_dtype(cfg),
        )
        bins = torch.tensor(cfg.depth_bins, dtype=torch.float32, device=self.device)
        return torch.from_numpy(feats).to(self.device), bins

    def _make_head(self, cfg: DepthClipConfig) -> Head:
        head = Head(cfg, *self._text_and_bins(cfg))
        if cfg.scene_bins == "auto":
            for scene, scene_cfg in cfg.scene_configs().items():
                head.scene_heads[scene] = self._text_and_bins(scene_cfg)
                head.scene_keys[scene] = head_key(scene_cfg)
            classifier = SceneClassifier(
                self.loaded.clip_model,
                self.loaded.identity,
                cfg.scene_prompts,
                self.device,
                self.cache_dir,
            )
            head = dataclasses.replace(head, classifier=classifier)
        return head

    def head_dtype(self, cfg: DepthClipConfig) -> torch.dtype:
        """The precision of the text normalisation and of the head (normalisation, logits,
        softmax): float32, or the backbone's dtype as in the official code (fp16 on CUDA)."""
        return self.dtype if cfg.head_precision == "model" else torch.float32

    def check_config(self, cfg: DepthClipConfig) -> None:
        """ConfigError when `cfg` cannot replace the running config (a field fixed at load)."""
        self.config.check_read_only(cfg)
        self._checked = cfg

    def update_config(self, cfg: DepthClipConfig) -> None:
        """Apply a new config from the next `predict` on; load-time fields cannot change. A
        config check_config accepted is not checked again."""
        if cfg is not self._checked:
            self.check_config(cfg)
        self._head = self._make_head(cfg)  # built first, then swapped in one assignment

    def to_device(self, images) -> torch.Tensor:
        """uint8 (H, W, 3) or (B, H, W, 3) array -> uint8 tensor on the device."""
        t = torch.from_numpy(as_image_batch(images))
        if self.device.type == "cuda":  # through a pinned buffer of this shape, reused
            pinned = self._pinned.like(t)
            pinned.copy_(t)
            t = pinned.to(self.device, non_blocking=True)
        return t

    def dense_features(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP ResNet layer4 feature map (B, C, H/32, W/32) of a normalised input."""
        return self.encoder(x.to(self.dtype).contiguous(memory_format=torch.channels_last))

    @property
    def prepares_image_sizes(self) -> bool:
        """Whether a camera's frames gain from warm_up at its size before the first (CUDA
        graphs: captured there, not mid-stream)."""
        return self.graphs is not None

    def warm_up(self, image_size=None, max_batch: int = 1) -> None:
        """Predict on blank frames of `image_size` (height, width; default the network's input
        size), so that the first real frame of that size does not pay for lazy initialisation
        (allocator, oneDNN / cuDNN kernel choice, its CUDA graphs' captures): with CUDA graphs
        at every padded batch up to `max_batch`, else at one image. bf16: the first warm-up
        also measures its depth figure."""
        size = image_size or network_image_size(self.config)
        batches = padded_batches(max_batch) if self.graphs is not None else [1]
        for batch in batches:
            self.predict(np.zeros((batch, *size, 3), np.uint8), arrays=())
        self.measure_depth_figure()

    @property
    def depth_figure_words(self):
        """bf16: its depth figure measured here, in words; None for fp32 and fp16 (fp32 is the
        reference; fp16's is gpu-check's)."""
        if self.dtype != torch.bfloat16:
            return None
        return self.depth_figure.words if self.depth_figure else "not measured yet (at warm-up)"

    def measure_depth_figure(self):
        """bf16: the demo scenes through this bf16 trunk and through the float32 trunk it was
        cast from (CLIP's own, folded on a copy for the moment), at the config's temperature:
        how far bf16's depth lies from fp32's on this CPU (once). The DepthFigure, or None."""
        if self.dtype != torch.bfloat16 or self.depth_figure is not None:
            return self.depth_figure
        frames = [render_scene(name)[0] for name in SCENES]
        low = np.stack([self.predict(frame).depth[0] for frame in frames])
        float32 = copy.deepcopy(dense_encoder(self.loaded.clip_model.visual))
        fold_batch_norms(float32)
        encoder, dtype = self.encoder, self.dtype
        self.encoder, self.dtype = float32.to(memory_format=torch.channels_last), torch.float32
        try:
            reference = np.stack([self.predict(frame).depth[0] for frame in frames])
        finally:
            self.encoder, self.dtype = encoder, dtype
        where = f"{self.runtime} bf16 against its float32 trunk, {cpu_description()}"
        self.depth_figure = depth_figure(reference, low, where)
        return self.depth_figure

    def positions(self, imgs: torch.Tensor, cfg: DepthClipConfig) -> tuple:
        """uint8 (B, H, W, 3) on the device -> (position embeddings (B or 2B, hw, D), layer4
        features, grid (h, w)); with flip the mirrored images follow the B originals."""
        feats = self.trunk(preprocess(imgs, cfg), cfg)
        return self.positions_of(feats, cfg), feats, feats.shape[-2:]

    def trunk(self, x: torch.Tensor, cfg: DepthClipConfig) -> torch.Tensor:
        """Normalised network input (B, 3, h, w) -> layer4 features (B or 2B, C, h/32, w/32):
        with flip, one batched forward for the images and their mirrors (which follow)."""
        if cfg.flip:
            return self.dense_features(torch.cat([x, x.flip(-1)]))
        return self.dense_features(x)

    def positions_of(self, feats: torch.Tensor, cfg: DepthClipConfig) -> torch.Tensor:
        """Layer4 features -> position embeddings (B, hw, D) in the head's precision."""
        return position_embeddings(
            feats, cfg.dense_features, self.channel_index, self.attnpool, self.head_dtype(cfg)
        )

    @staticmethod
    def depth_from_probabilities(probs, bins, cfg: DepthClipConfig, image_size) -> tuple:
        """Per-bin probabilities (B or 2B, K, h, w) and bins (B, K) -> (depth (B, H, W) with
        NaN outside the input region, its standard deviation (B, H, W) under each pixel's bin
        distribution, coarse depth (B, h, w), its std (B, h, w), probabilities (B, K, h, w))."""
        batch = bins.shape[0]
        height, width = image_size
        probs = probs.float()  # the depth sum in float32, as the reference's float32 bins give
        if cfg.flip:
            # Averaging probabilities equals the reference's averaging of depths (depth is linear
            # in p).
            probs = 0.5 * (probs[:batch] + probs[batch:].flip(-1))
        # The mean and the second moment about the bins' centre c are linear in p, so upsampling
        # them is upsampling the distribution: std = sqrt(E[(b - c)^2] - (E[b] - c)^2) per pixel.
        # About c, both stay small (no cancellation), and a one-hot p gives exactly 0.
        centre = 0.5 * (bins[:, :1] + bins[:, -1:])  # (B, 1)
        offsets = (bins - centre)[:, :, None, None]  # (B, K, 1, 1)
        coarse = (probs * bins[:, :, None, None]).sum(dim=1, keepdim=True)  # (B, 1, h, w)
        moments = torch.cat(
            [
                (probs * offsets).sum(dim=1, keepdim=True),
                (probs * offsets**2).sum(dim=1, keepdim=True),
            ],
            dim=1,
        )
        top, left, h, w = input_region(height, width, cfg)
        fine = F.interpolate(
            torch.cat([coarse, moments], dim=1), size=(h, w), mode="bilinear", align_corners=True
        )
        std = torch.sqrt(torch.clamp(fine[:, 2] - fine[:, 1] ** 2, min=0.0))
        coarse_std = torch.sqrt(torch.clamp(moments[:, 1] - moments[:, 0] ** 2, min=0.0))
        fine = torch.stack([fine[:, 0], std], dim=1)  # (B, 2, h, w): depth, std
        if (h, w) == (height, width):
            out = fine
        else:
            out = torch.full((batch, 2, height, width), float("nan"), device=fine.device)
            out[:, :, top : top + h, left : left + w] = fine
        return out[:, 0], out[:, 1], coarse[:, 0], coarse_std, probs

    def predict(self, images, scenes=None, arrays=None) -> DepthResult:
        """Depth of uint8 RGB images (H, W, 3) or (B, H, W, 3).

        With scene_bins auto, each image's bins and tokens are its scene's: by default the
        scene CLIP finds most probable; `scenes` may instead be a list (one scene per image: an
        oracle) or a callable(scene names, probabilities (B, S)) -> one scene per image.
        `arrays`: the DepthResult arrays to bring to the host (None: all);
        on a GPU the others never leave it.
        """
        return self.begin_predict(images, scenes, arrays)()

    @property
    def frames_in_flight(self) -> int:
        """Frames worth starting before the earlier ones are taken: with CUDA graphs, one
        replays while the next uploads and the last one's arrays come back; otherwise one
        forward at a time (torch's threads are the process's)."""
        return SLOTS if self.graphs is not None else 1

    forwards_side_by_side = 1  # frames in flight run one after another, each its whole batch

    def begin_predict(self, images, scenes=None, arrays=None) -> Started:
        """predict begun: a Started whose call gives its DepthResult. With CUDA graphs the
        frame replays while the caller goes on (starts the next one); otherwise it runs here.
        The Starteds are to be called in the order they were begun."""
        head = self._head  # one frame, one config
        pending = None
        if self.graphs is not None and head.classifier is None:
            imgs = as_image_batch(images)
            cfg = head.config
            region = input_region(imgs.shape[1], imgs.shape[2], cfg)  # a crop's size refused
            fields = fetched_fields(arrays)
            pending = self.graphs.start(imgs, head, fields)
        if pending is None:  # no graphs, scene_bins auto, or this size's graph refused
            result = self.predict_eager(images, scenes, arrays, head)
            return Started(lambda: result)
        return Started(
            lambda: DepthResult.from_outputs(
                pending(),
                bins=np.asarray(cfg.depth_bins, np.float32),  # the head's bins, without a sync
                region=region,
                fields=fields,
                head_keys=(head.key,) * len(imgs),
            ),
            pending.done,
            pending.when_done,
        )

    @torch.inference_mode()
    def predict_eager(self, images, scenes=None, arrays=None, head=None) -> DepthResult:
        """`predict`, kernel by kernel (CPU, scene_bins auto, and the reference for the captured
        CUDA path). `head`: the Head to run (default: the one in use now; a captured graph's
        check passes the head it was captured with, which a parameter change may have replaced
        since)."""
        head = self._head if head is None else head  # one frame, one config
        cfg = head.config
        imgs = self.to_device(images)
        batch, height, width, _ = imgs.shape
        region = input_region(height, width, cfg)
        positions, feats, grid = self.positions(imgs, cfg)
        chosen, scores = None, None
        if head.classifier is not None:
            scores = head.classifier.probabilities(feats[:batch])
            chosen = self._choose_scenes(cfg, scores, scenes)
            heads = [head.scene_heads.get(s, (head.text, head.bins)) for s in chosen]
            row_heads = heads * (2 if cfg.flip else 1)
            scale = temperature_scale(cfg.temperature)
            probs = scene_bin_probabilities(positions, row_heads, scale, grid)
            bins = torch.stack([b for _, b in heads])  # (B, K)
        else:
            probs = bin_probabilities(
                positions, head.text, temperature_scale(cfg.temperature), grid
            )
            bins = head.bins.expand(batch, -1)
        outputs = self.depth_from_probabilities(probs, bins, cfg, (height, width))
        fields = fetched_fields(arrays)
        return DepthResult.from_outputs(
            [t.cpu().numpy() for name, t in zip(OUTPUT_FIELDS, outputs) if name in fields],
            bins=np.asarray(cfg.depth_bins, np.float32),
            region=region,
            fields=fields,
            scenes=chosen,
            scene_scores=None if scores is None else scores.cpu().numpy(),
            image_bins=None if chosen is None else bins.cpu().numpy(),
            head_keys=tuple(head.key_of(s) for s in chosen or [None] * batch),
        )

    @staticmethod
    def _choose_scenes(cfg: DepthClipConfig, scores: torch.Tensor, scenes) -> list:
        if scenes is None:
            return [cfg.scenes[i] for i in scores.argmax(dim=-1).tolist()]
        chosen = list(scenes(cfg.scenes, scores.cpu().numpy()) if callable(scenes) else scenes)
        if len(chosen) != scores.shape[0]:
            raise ValueError(f"{len(chosen)} scenes for {scores.shape[0]} images")
        return chosen
