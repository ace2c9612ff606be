"""What a config change swaps, in one assignment, between two frames: the config and what its
text side gives the model, for either backend. No torch import (the ONNX install has none).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config.parameters import DepthClipConfig


@dataclasses.dataclass(frozen=True)
class Head:
    config: DepthClipConfig
    text: Any  # (D, K) text features: a torch tensor on the device, or a float32 NumPy array
    bins: Any  # (K,) float32, likewise
    scene_heads: dict = dataclasses.field(
        default_factory=dict
    )  # scene_bins auto: scene -> (text, bins)
    classifier: Any = None  # scene_bins auto: the SceneClassifier
