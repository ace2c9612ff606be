"""The parameters: `schema` (param() fields and their checks, one ConfigError text),
`parameters` (DepthClipConfig for the estimator, OutputSettings, NodeSettings), `params_files`
(parameter YAML read as rcl reads it, config/ and its presets, scene presets resolved). No
rclpy, no torch.
"""

from .parameters import DepthClipConfig, NodeSettings, OutputSettings, Parameters
from .params_files import load_config, load_params

__all__ = [
    "DepthClipConfig",
    "NodeSettings",
    "OutputSettings",
    "Parameters",
    "load_config",
    "load_params",
]
