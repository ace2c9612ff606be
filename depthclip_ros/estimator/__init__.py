"""The depth estimator: the torch core (`core.DepthClip`) and what the exported graphs'
runtimes (graph_runtimes/) share with it, one API (`predict` -> `result.DepthResult`,
`check_config`, `update_config`, `head`); `check_prompts(config)` checks prompts before any
model loads; `depthclip_ros.model_loading.load_estimator` picks the core or a graph runtime.
The torch modules: `core`, `depth_head`, `scene_classification`, `clip_loading`,
`text_features`, `batchnorm_folding`, `cuda_graph`. Torch-free: `head`, `result`,
`depth_quantile`, `file_identity`, `text_cache`, `cpu_features`, `reference_frames`, `prompts`.
Nothing here reads parameter files or imports rclpy.
"""

from .prompts import check_prompts
from .result import DepthResult

__all__ = ["DepthResult", "check_prompts"]
