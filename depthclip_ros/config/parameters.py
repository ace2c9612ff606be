"""The core's parameters (DepthClipConfig): the model, its input, its head and where it runs;
the outputs' and the node's are in `settings`.

Defaults are the shipped config/depthclip.yaml (a test keeps them equal). No rclpy import.
"""

from __future__ import annotations

import dataclasses
import string

from ..errors import ConfigError
from .schema import Schema, derived, param

PACKAGE_NAME = "depthclip_ros"
NODE_NAME = "depthclip"
NODE_FQN = "/" + NODE_NAME  # the node without a namespace; the tools read its parameters

MODES = ("crop", "resize")
DEVICES_FIXED = ("auto", "cpu", "cuda")
OPENVINO_DEVICES = ("gpu", "npu")  # and gpu.N: OpenVINO's Intel graphics and NPU plugins
PRECISIONS = ("auto", "fp16", "fp32", "bf16", "int8")
NORMALIZATIONS = ("imagenet", "clip")
DENSE_FEATURES = ("subsampled", "projected")
SCENE_BINS = ("off", "auto")
# NYU Depth V2's scene types (the folder names of its official test split).
NYU_SCENES = (
    "bathroom",
    "bedroom",
    "bookstore",
    "classroom",
    "computer_lab",
    "dining_room",
    "foyer",
    "home_office",
    "kitchen",
    "living_room",
    "office",
    "office_kitchen",
    "playroom",
    "reception_room",
    "study",
    "study_room",
)
HEAD_PRECISIONS = ("float32", "model")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
ONNX_SUFFIX = ".onnx"
CUDA_GRAPHS = ("auto", "off")
ONNXRUNTIME_PROVIDERS = ("auto", "tensorrt", "cuda")
# ONNX Runtime CUDA provider's cudnn_conv_algo_search, lower case
CUDNN_SEARCHES = ("heuristic", "exhaustive", "default")
TEMPLATE_FIELDS = ("object", "token")
# Fields that fix the image path's structure: a CUDA graph is captured, an ONNX graph exported,
# for one value of each (text features, bins and temperature are the graphs' inputs).
IMAGE_PATH_FIELDS = (
    "preprocessing",
    "input_width",
    "input_height",
    "normalization",
    "dense_features",
    "head_precision",
    "flip",
)


@dataclasses.dataclass(frozen=True)
class DepthClipConfig(Schema):
    """Everything the DepthCLIP core needs. Defaults are the shipped config/depthclip.yaml: the
    paper's text side, bins and temperature with two live-camera choices (resize, no flip) that
    the `paper` preset turns back into the paper's NYU protocol (crop, flip)."""

    model: str = param(
        "RN50",
        "CLIP ResNet name (RN50, RN101, RN50x4, ...), checkpoint path, or a .onnx file written "
        "by depthclip-export",
        read_only=True,
    )
    backend: str = param(
        "auto",
        "auto (onnxruntime for a .onnx model, else torch) | torch | onnxruntime | openvino (a "
        ".onnx model on OpenVINO: pip install openvino)",
        read_only=True,
        choices=BACKENDS,
    )
    cuda_graphs: str = param(
        "auto",
        "auto (on CUDA each frame replays a captured CUDA graph, checked against the eager path "
        "on its first frame) | off (every frame eagerly)",
        read_only=True,
        choices=CUDA_GRAPHS,
    )
    download_root: str = param(
        "", "Folder of downloaded CLIP weights; empty = ~/.cache/clip", read_only=True
    )
    device: str = param(
        "auto",
        "auto | cpu | cuda | cuda:N; backend openvino: auto (OpenVINO's AUTO) | cpu | gpu | "
        "gpu.N | npu",
        read_only=True,
    )
    precision: str = param(
        "auto",
        "auto (fp16 on CUDA, fp32 on CPU; an exported graph: its own) | fp32 | fp16 (CUDA) | "
        "bf16 (a CPU with native bf16: torch, or OpenVINO's inference precision) | int8 (a "
        "graph from depthclip-export --precision int8)",
        read_only=True,
        choices=PRECISIONS,
    )
    cache_dir: str = param(
        "",
        "Text-feature cache folder; empty = $XDG_CACHE_HOME/depthclip_ros (~/.cache/depthclip_ros "
        "where XDG_CACHE_HOME is unset)",
        read_only=True,
    )
    openvino_cache_dir: str = param(
        "",
        "backend openvino: OpenVINO's compiled-model cache folder; empty = "
        "$XDG_CACHE_HOME/depthclip_ros/openvino (~/.cache/depthclip_ros/openvino where unset)",
        read_only=True,
    )
    onnxruntime_providers: str = param(
        "auto",
        "backend onnxruntime on CUDA: auto (TensorRT where installed, else CUDA; a graph TensorRT "
        "cannot build runs on CUDA, with one warning) | tensorrt (TensorRT or fail) | cuda "
        "(never TensorRT)",
        read_only=True,
        choices=ONNXRUNTIME_PROVIDERS,
    )
    cudnn_conv_algo_search: str = param(
        "heuristic",
        "backend onnxruntime on CUDA: how the CUDA provider picks each convolution's cuDNN "
        "algorithm: heuristic (cuDNN's ranking, no trial runs) | exhaustive (ONNX Runtime's "
        "default: every algorithm timed at each new input shape, at warm-up here) | default "
        "(one fixed algorithm, least memory)",
        read_only=True,
        choices=CUDNN_SEARCHES,
    )
    tensorrt_cache_dir: str = param(
        "",
        "onnxruntime on CUDA with TensorRT installed: engine cache folder; empty = "
        "$XDG_CACHE_HOME/depthclip_ros/tensorrt (~/.cache/depthclip_ros/tensorrt where unset)",
        read_only=True,
    )
    inference_threads: int = param(
        0,
        "CPU threads of the model's inference: 0 = one per core the process may use (taskset, "
        "a container's cpuset); N = N, so that the camera driver and the middleware keep the "
        "other cores; either way ONNX Runtime's do not spin while idle and OpenVINO's are not "
        "pinned to cores (measured on a shared CPU)",
        read_only=True,
        minimum=0,
        maximum=1024,
    )
    inference_streams: int = param(
        1,
        "Forwards run side by side on the CPU, each on its share of the inference threads "
        "(exported graphs: ONNX Runtime sessions, OpenVINO's NUM_STREAMS): the node starts the "
        "next frame while the last one's forward runs; more frames a second where the camera "
        "is faster than the model or other work shares the cores, each frame later; 1 = one "
        "forward on every thread, the shortest latency",
        read_only=True,
        minimum=1,
        maximum=64,
    )
    onnxruntime_session_config: tuple = param(
        (),
        "backend onnxruntime: session config entries KEY=VALUE in ONNX Runtime's own names, "
        "over the package's (e.g. session.intra_op.allow_spinning=1: ONNX Runtime's own "
        "default, threads spinning while they wait); ONNX Runtime ignores keys it does not know",
        read_only=True,
        single_ok=True,
    )
    openvino_properties: tuple = param(
        (),
        "backend openvino: CPU compile properties KEY=VALUE in OpenVINO's own names, over "
        "the package's (e.g. ENABLE_CPU_PINNING=YES: OpenVINO's own default; "
        "PERFORMANCE_HINT=THROUGHPUT: OpenVINO chooses the streams); one OpenVINO does not "
        "know fails the model's start in one line",
        read_only=True,
        single_ok=True,
    )
    prompt_template: tuple = param(
        ("This {object} is {token}",),
        "Prompt template(s) with {object} and {token}; several: each token's prompts are encoded, "
        "L2-normalised, averaged and normalised again (an ensemble; the paper uses one)",
        single_ok=True,
    )
    object_word: str = param("object", "Word put in {object}")
    depth_tokens: tuple = param(
        (
            "giant",
            "extremely close",
            "close",
            "not in distance",
            "a little remote",
            "far",
            "unseen",
        ),
        "Depth words, near to far, one per bin",
    )
    depth_bins: tuple = param(
        (1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00),
        "Depth of each token in metres, strictly increasing",
    )
    temperature: float = param(
        0.1, "Softmax temperature over bins (paper: 0.1)", minimum=1e-4, maximum=100.0
    )
    flip: bool = param(False, "Average with the mirrored image (paper protocol; doubles the cost)")
    preprocessing: str = param(
        "resize", "resize (any camera) | crop (NYU 640x480 reference box)", choices=MODES
    )
    input_width: int = param(
        544, "Network input width for 'resize'", minimum=32, maximum=4096, multiple_of=32
    )
    input_height: int = param(
        416, "Network input height for 'resize'", minimum=32, maximum=4096, multiple_of=32
    )
    normalization: str = param("imagenet", "imagenet (paper) | clip", choices=NORMALIZATIONS)
    dense_features: str = param(
        "subsampled",
        "subsampled (paper: layer4 channels subsampled to the text width) | projected (MaskCLIP: "
        "the attention pool's value and output projections at every position)",
        choices=DENSE_FEATURES,
    )
    head_precision: str = param(
        "float32",
        "float32 | model (the backbone's dtype, fp16 on CUDA: the official code's numerics)",
        choices=HEAD_PRECISIONS,
    )
    scene_bins: str = param(
        "off",
        "off (paper: one set of bins) | auto (CLIP classifies the scene; its preset's bins and "
        "tokens apply)",
        choices=SCENE_BINS,
    )
    scenes: tuple = param(NYU_SCENES, "Scene names CLIP chooses from ('_' reads as a space)")
    scene_prompt_template: str = param("a photo of a {scene}.", "Scene prompt with {scene}")
    scene_presets: tuple = param(
        ("bathroom:bins_class_dependent_3", "classroom:bins_class_dependent_4"),
        "scene:preset pairs (config/presets name or YAML); other scenes keep the base bins and "
        "tokens (paper Table 2)",
    )
    # ((scene, depth_bins, depth_tokens), ...) of scene_presets, read from the presets' files by
    # config.params_files.resolve_scene_presets (scene_bins auto); None while not read.
    scene_heads: tuple | None = derived()

    @property
    def scene_prompts(self) -> list:
        return [self.scene_prompt_template.format(scene=s.replace("_", " ")) for s in self.scenes]

    def scene_preset_map(self) -> dict:
        """{scene: preset} of scene_presets."""
        return dict(pair.split(":", 1) for pair in self.scene_presets)

    def scene_configs(self) -> dict:
        """{scene: this config with that scene's preset bins and tokens} for scene_bins auto;
        scenes without a preset keep this config's. ConfigError when the presets were not read
        (a config built without config.params_files)."""
        if self.scene_heads is None:
            raise ConfigError(
                "scene_presets",
                list(self.scene_presets),
                "not read: build the config with load_config, or pass it through "
                "resolve_scene_presets (config.params_files)",
            )
        return {
            scene: dataclasses.replace(
                self, depth_bins=bins, depth_tokens=tokens, scene_bins="off", scene_heads=None
            )
            for scene, bins, tokens in self.scene_heads
        }

    def replace(self, **changes):
        if "scene_presets" in changes and "scene_heads" not in changes:
            changes["scene_heads"] = None  # read again for the new presets
        return super().replace(**changes)

    @property
    def prompt_sets(self) -> list:
        """One list of prompts (one per depth token) for each template."""
        return [
            [template.format(object=self.object_word, token=t) for t in self.depth_tokens]
            for template in self.prompt_template
        ]

    @property
    def prompts(self) -> list:
        """Every prompt, template by template."""
        return [prompt for prompts in self.prompt_sets for prompt in prompts]

    def check(self) -> None:
        if not self.model.strip():
            raise ConfigError("model", self.model, "must name a CLIP model or a checkpoint file")
        _check_device_and_precision(self)
        for name in ("onnxruntime_session_config", "openvino_properties"):
            runtime_entries(self, name)
        for template in self.prompt_template:
            _check_template(template)
        _check_scenes(self)
        for scene, scene_bins, _ in self.scene_heads or ():
            if len(scene_bins) != len(self.depth_bins):  # a batch's images stack their bins
                raise ConfigError(
                    "scene_presets",
                    list(self.scene_presets),
                    f"scene {scene} has {len(scene_bins)} bins, the config "
                    f"{len(self.depth_bins)}: every scene needs as many",
                )
        tokens, bins = self.depth_tokens, self.depth_bins
        if len(bins) < 2:
            raise ConfigError("depth_bins", list(bins), "needs at least 2 bins")
        if bins[0] <= 0:
            raise ConfigError("depth_bins", list(bins), "bins must be positive (metres)")
        if any(b2 <= b1 for b1, b2 in zip(bins, bins[1:])):
            raise ConfigError("depth_bins", list(bins), "bins must be strictly increasing")
        if len(tokens) != len(bins):
            raise ConfigError(
                "depth_tokens",
                list(tokens),
                f"{len(tokens)} tokens but {len(bins)} depth_bins; "
                "each token needs exactly one bin",
            )


def runtime_entries(cfg, name: str) -> dict:
    """{KEY: VALUE} of the KEY=VALUE list parameter `name` (a runtime's own option names)."""
    entries = {}
    for entry in getattr(cfg, name):
        key, equals, value = entry.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise ConfigError(name, list(getattr(cfg, name)), f"'{entry}' is not KEY=VALUE")
        entries[key.strip()] = value.strip()
    return entries


def _check_device_and_precision(cfg) -> None:
    """The combinations of backend, device and precision that exist, one line for each other."""
    onnx_model = cfg.model.endswith(ONNX_SUFFIX)
    backend = cfg.backend if cfg.backend != "auto" else ("onnx" if onnx_model else "torch")
    openvino_device = cfg.device in OPENVINO_DEVICES or _is_indexed(cfg.device, "gpu.")
    if cfg.device not in DEVICES_FIXED and not (
        _is_indexed(cfg.device, "cuda:") or openvino_device
    ):
        raise ConfigError(
            "device",
            cfg.device,
            f"must be one of {', '.join(DEVICES_FIXED)}, cuda:N, or for backend openvino "
            f"{', '.join(OPENVINO_DEVICES)}, gpu.N",
        )
    if openvino_device and cfg.backend != "openvino":
        raise ConfigError(
            "device",
            cfg.device,
            "is an OpenVINO device (Intel graphics, NPU): set backend openvino",
        )
    if cfg.backend == "openvino" and cfg.device.startswith("cuda"):
        raise ConfigError(
            "device", cfg.device, "backend openvino has no CUDA device; use backend onnxruntime"
        )
    if cfg.inference_streams > 1 and backend == "torch":
        raise ConfigError(
            "inference_streams",
            cfg.inference_streams,
            "runs an exported graph's forwards side by side (backend onnxruntime or openvino); "
            "the torch backend runs one forward at a time",
        )
    if cfg.precision == "int8" and backend == "torch":
        raise ConfigError(
            "precision",
            "int8",
            "runs a graph quantised by depthclip-export --precision int8 (backend onnxruntime "
            "or openvino); the torch backend has no int8 path",
        )
    if cfg.precision == "bf16":
        if backend in ("onnx", "onnxruntime"):
            raise ConfigError(
                "precision",
                "bf16",
                "ONNX Runtime has no bf16 CPU path; use backend openvino (its bf16 inference "
                "precision) or the torch backend",
            )
        if cfg.device.startswith("cuda"):
            raise ConfigError(
                "precision", "bf16", "is the CPU's lower precision; on CUDA use fp16"
            )
        if cfg.device.startswith(("gpu", "npu")):
            raise ConfigError(
                "precision",
                "bf16",
                "is the CPU's lower precision; OpenVINO's GPU runs f16 (precision auto) or f32 "
                "(precision fp32), its NPU f16",
            )
        if cfg.head_precision == "model":
            raise ConfigError(
                "head_precision",
                "model",
                "with precision bf16 the logits would be bf16 (steps of 2 at CLIP's logits of "
                "200-400 at temperature 0.1); use float32",
            )


def _check_scenes(cfg) -> None:
    if len(set(cfg.scenes)) != len(cfg.scenes):
        raise ConfigError("scenes", list(cfg.scenes), "scene names must be unique")
    try:
        cfg.scene_prompt_template.format(scene="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            "scene_prompt_template", cfg.scene_prompt_template, f"only {{scene}} allowed: {exc}"
        ) from None
    if "{scene}" not in cfg.scene_prompt_template:
        raise ConfigError(
            "scene_prompt_template", cfg.scene_prompt_template, "must contain {scene}"
        )
    for pair in cfg.scene_presets:
        scene, _, preset = pair.partition(":")
        if not preset.strip():
            raise ConfigError(
                "scene_presets", list(cfg.scene_presets), f"'{pair}' is not scene:preset"
            )
        if scene not in cfg.scenes:
            raise ConfigError(
                "scene_presets", list(cfg.scene_presets), f"'{scene}' is not one of scenes"
            )


def _is_indexed(device: str, prefix: str) -> bool:
    """cuda:N or gpu.N."""
    return device.startswith(prefix) and device[len(prefix) :].isdigit()


def _check_template(template: str) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError("prompt_template", template, f"not a format string: {exc}") from None
    for required in TEMPLATE_FIELDS:
        if required not in names:
            raise ConfigError(
                "prompt_template", template, f"must contain the placeholder {{{required}}}"
            )
    unknown = sorted(set(names) - set(TEMPLATE_FIELDS))
    if unknown:
        raise ConfigError(
            "prompt_template",
            template,
            f"unknown placeholder(s) {unknown}; only {{object}} and {{token}}",
        )
