"""The depth estimators: `load_estimator(config)` gives the torch core (`core.DepthClip`) or an
exported graph on ONNX Runtime or OpenVINO (graph_runtimes), one API (`predict` ->
`result.DepthResult`, `check_config`, `update_config`, `head`); `check_prompts(config)` checks
prompts before any model loads. Here: the model and its head. The torch modules: `core`,
`depth_head`, `scene_classification`, `clip_loading`, `text_features`, `batchnorm_folding`,
`cuda_graph`. Torch-free (what the graph runtimes share with the core): `loading`, `head`,
`result`, `depth_quantile`, `file_identity`, `text_cache`, `cpu_features`. Nothing here reads
parameter files or imports rclpy.
"""

from .loading import check_prompts, load_estimator
from .result import DepthResult

__all__ = ["DepthResult", "check_prompts", "load_estimator"]
