"""Whether the configured prompts fit CLIP's context, checked before any model loads."""

from __future__ import annotations


def check_prompts(config) -> None:
    """ConfigError when a prompt of `config` (its scenes' too, scene_bins auto) does not fit
    CLIP's context. Without torch (the ONNX install) only prompts exported with the model run,
    and depthclip-export checked them."""
    try:
        from .text_features import tokenize
    except ImportError:
        return
    tokenize(config.prompts)
    if config.scene_bins == "auto":
        for scene_config in config.scene_configs().values():
            tokenize(scene_config.prompts)
        tokenize(config.scene_prompts)
