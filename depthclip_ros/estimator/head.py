"""What a config change swaps, in one assignment, between two frames: the config and what its
text side gives the model, for either backend. No torch import (the ONNX install has none).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config.parameters import DepthClipConfig

# Beside the prompts and the bins, the options that change a head's bin distributions. The
# geometry (preprocessing, input size: the feature grid) is not the head's: the temporal filter
# restarts on it apart; how a scene is picked (scene_bins, scenes) is not either: the scene's
# own prompts and bins are.
DISTRIBUTION_FIELDS = ("temperature", "flip", "normalization", "dense_features", "head_precision")


def head_key(cfg: DepthClipConfig) -> tuple:
    """The identity of the bin distributions a config's head makes: equal keys, the same
    distributions of the same image (what the temporal filter may fuse)."""
    prompts = tuple(tuple(prompts) for prompts in cfg.prompt_sets)
    bins = tuple(float(b) for b in cfg.depth_bins)
    return (prompts, bins, *(getattr(cfg, name) for name in DISTRIBUTION_FIELDS))


@dataclasses.dataclass(frozen=True)
class Head:
    config: DepthClipConfig
    text: Any  # (D, K) text features: a torch tensor on the device, or a float32 NumPy array
    bins: Any  # (K,) float32, likewise
    scene_heads: dict = dataclasses.field(
        default_factory=dict
    )  # scene_bins auto: scene -> (text, bins)
    classifier: Any = None  # scene_bins auto: the SceneClassifier
    scene_keys: dict = dataclasses.field(default_factory=dict)  # scene -> its head_key
    key: tuple = dataclasses.field(init=False)  # head_key(config), made once per head

    def __post_init__(self):
        object.__setattr__(self, "key", head_key(self.config))

    def key_of(self, scene) -> tuple:
        """The head_key of the head an image of `scene` runs (None: this head's)."""
        return self.scene_keys.get(scene, self.key)
