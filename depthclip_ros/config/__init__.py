"""The parameters: `schema` (param() fields and their checks, one ConfigError text),
`parameters` (DepthClipConfig, the estimator's), `settings` (OutputSettings, NodeSettings, all
of them together: Parameters), `params_files`
(parameter YAML read as rcl reads it, config/ and its presets, scene presets resolved). No
rclpy, no torch.
"""

from .parameters import DepthClipConfig
from .params_files import load_config, load_params
from .settings import NodeSettings, OutputSettings, Parameters

__all__ = [
    "DepthClipConfig",
    "NodeSettings",
    "OutputSettings",
    "Parameters",
    "load_config",
    "load_params",
]
