"""The depth estimators: `load_estimator(config)` gives the torch core (`core.DepthClip`) or an
exported graph on ONNX Runtime (`onnx_runtime.OnnxDepthClip`), one API (`predict` ->
`result.DepthResult`, `check_config`, `update_config`, `head`); `check_prompts(config)` checks
prompts before any model loads. The torch modules: `core`, `depth_head`, `scene_classification`,
`clip_loading`, `text_features`, `export` (depthclip-export). Torch-free: `loading`, `head`,
`result`, `depth_quantile`, `file_identity`, `text_cache`, `onnx_runtime`. Nothing here reads
parameter files or imports rclpy.
"""

from .loading import check_prompts, load_estimator
from .result import DepthResult

__all__ = ["DepthResult", "check_prompts", "load_estimator"]
