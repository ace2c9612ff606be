"""What the two runtimes of a depthclip-export graph (ONNX Runtime, OpenVINO) share: the graph's
metadata and its checks, the text features, the config it runs, the frame's feeds and its
DepthResult. A runtime opens the graph and runs it (onnx_runtime, openvino_runtime). No torch.

The graph is the core's image path (uint8 images -> depth); text features, bins and temperature
are its inputs, so those change without re-export; it takes images of any size unless exported
for one. What the graph fixed at export (preprocessing, network input, normalisation, dense
features, flip, precision) is in its metadata and a config asking for something else is refused
with the reason. Text features come from the cache (the folder depthclip-export filled beside
the model, then cache_dir): prompts never exported need the torch text encoder and are refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config.parameters import IMAGE_PATH_FIELDS, DepthClipConfig
from ..errors import ConfigError, ImageSizeError, ModelLoadError
from ..estimator.cpu_features import cpu_description, int8_saturates
from ..estimator.head import Head
from ..estimator.reference_frames import depth_figure, load_reference, reference_path
from ..estimator.result import (
    OUTPUT_FIELDS,
    DepthResult,
    Started,
    all_started,
    as_image_batch,
    fetched_fields,
    input_region,
    network_image_size,
)
from ..estimator.text_cache import (
    FLOAT16,
    FLOAT32,
    cache_path,
    default_cache_dir,
    exported_text_dir,
    load_cached,
)

log = logging.getLogger("depthclip_ros")

EXPORT_FORMAT = "1"
GRAPH_INPUTS = ("images", "text_features", "bins", "temperature")
GRAPH_OUTPUTS = OUTPUT_FIELDS
# The tensors between the graph's three parts: images -> preprocessing -> network_input ->
# trunk (CLIP's ResNet at its fixed input size) -> features -> head and depth -> outputs. The
# metadata key lists them; graphs exported before the parts have no such key.
GRAPH_PARTS = ("network_input", "features")
PARTS_KEY = "graph_parts"
ANY_SIZE = "any"  # image_height / image_width of a graph that takes every size
# The image path's precision; inputs and outputs stay float32. int8: depthclip-export
# --precision int8 (the image trunk quantised, the head float).
GRAPH_PRECISIONS = ("fp32", "fp16", "int8")
# The int8 graph's measured difference from its fp32 graph (depthclip-export, on held-out
# calibration frames): metadata key -> words.
INT8_FIGURES = {
    "int8_depth_difference_median_m": "median",
    "int8_depth_difference_p99_m": "p99",
}
INT8_AGREEMENT = "int8_delta_agreement"
INT8_HELD_OUT = "int8_held_out_frames"
INT8_MEASURED_WITH = "int8_measured_with"  # runtime and CPU of the export's figure
# The bits of an int8 graph's weights: 7 since exact int8 on x86 without VNNI; 8 before.
INT8_WEIGHT_BITS = "int8_weight_bits"


def graph_metadata(
    cfg: DepthClipConfig, precision, identity, image_size, embed_dim, opset, exporter
):
    """The metadata depthclip-export writes into the file (ONNX metadata holds strings);
    `image_size` None: a graph for every image size."""
    meta = {name: str(getattr(cfg, name)) for name in IMAGE_PATH_FIELDS}
    meta.update(
        depthclip_export_format=EXPORT_FORMAT,
        precision=precision,
        model_identity=identity,
        checkpoint_sha256=identity.rsplit("@sha256:", 1)[-1],
        image_height=ANY_SIZE if image_size is None else str(image_size[0]),
        image_width=ANY_SIZE if image_size is None else str(image_size[1]),
        embed_dim=str(embed_dim),
        opset=str(opset),
        exporter=exporter,
    )
    meta[PARTS_KEY] = ",".join(GRAPH_PARTS)
    return meta


def graph_precision(meta: dict) -> str:
    """fp32, fp16 or int8; files exported before fp16 graphs existed say nothing and are fp32."""
    return meta.get("precision", "fp32")


def graph_image_size(meta: dict):
    """(height, width) the one size a fixed-size graph takes; None for a graph of any size."""
    if meta["image_height"] == ANY_SIZE:
        return None
    return int(meta["image_height"]), int(meta["image_width"])


def int8_weight_bits(meta: dict) -> int:
    """The bits of an int8 graph's weights: 8 for graphs exported before they were 7."""
    return int(meta.get(INT8_WEIGHT_BITS, "8"))


def precision_detail(meta: dict) -> str:
    """The graph's precision in words, with an int8 graph's difference from fp32 as measured at
    export (and where)."""
    precision = graph_precision(meta)
    if precision != "int8" or INT8_AGREEMENT not in meta:
        return precision
    figures = ", ".join(
        f"{words} {float(meta[key]) * 1e3:.1f} mm" for key, words in INT8_FIGURES.items()
    )
    where = meta.get(INT8_MEASURED_WITH, "an unnamed runtime and CPU")
    return (
        f"int8, {int8_weight_bits(meta)}-bit weights (at export, against fp32 on "
        f"{meta[INT8_HELD_OUT]} held-out frames: |depth difference| {figures}, "
        f"{float(meta[INT8_AGREEMENT]) * 100:.1f} % within delta < 1.25, on {where})"
    )


def text_dtype(precision: str, head_precision: str) -> str:
    """The cache key's precision of the text features a graph's head takes: fp16 only for the
    official fp16 head (as DepthClip.head_dtype)."""
    return FLOAT16 if precision == "fp16" and head_precision == "model" else FLOAT32


def check_graph(path: Path, meta: dict, inputs, outputs) -> None:
    """ModelLoadError unless the graph's metadata and names are depthclip-export's."""
    if meta.get("depthclip_export_format") != EXPORT_FORMAT:
        raise ModelLoadError(
            f"{path} was not written by depthclip-export (format "
            f"{EXPORT_FORMAT}): its metadata has no depthclip_export_format "
            f"'{EXPORT_FORMAT}'; export the model with depthclip-export"
        )
    missing = [n for n in GRAPH_INPUTS if n not in set(inputs)]
    if missing:
        raise ModelLoadError(f"{path} lacks the graph inputs {', '.join(missing)}")
    if "depth_std" not in set(outputs):
        raise ModelLoadError(
            f"{path} was exported before depth/std existed (no depth_std output); "
            f"export it again with depthclip-export"
        )
    if graph_precision(meta) not in GRAPH_PRECISIONS:
        raise ModelLoadError(
            f"{path} has a {graph_precision(meta)} image path, which this version does not "
            f"run ({', '.join(GRAPH_PRECISIONS)}); export it again"
        )


class ExportedGraph:
    """The DepthClip interface (predict, check_config, update_config, warm_up, head, config,
    device, dtype, precision) on a graph written by depthclip-export. A runtime subclass reads
    the graph (`_read_graph`: metadata, input and output names), opens it (`_open`, which sets
    `runtime`, `device` and `cpu_threads`) and runs one batch (`_run`; `_start_one` where it can
    run forwards side by side). Thread-safe for one predicting thread plus config updates."""

    def __init__(self, config: DepthClipConfig, max_batch: int = 1):
        """`max_batch`: the most images predict will be given at once, as far as known at load
        (what a runtime builds ahead for: TensorRT's engine)."""
        self.path = Path(config.model).expanduser()
        if not self.path.is_file():
            raise ModelLoadError(f"exported model {self.path.resolve()} does not exist")
        meta, inputs, outputs = self._read_graph()
        check_graph(self.path, meta, inputs, outputs)
        self.metadata = meta
        self.graph_precision = graph_precision(meta)
        self.precision = self._inference_precision(config.precision)
        # None: any size (the resize is in the graph); else the one size the graph takes.
        self.image_size = graph_image_size(meta)
        self.embed_dim = int(meta["embed_dim"])
        self.model_identity = meta["model_identity"]
        self.max_batch = max_batch
        self._open(config)
        self.dtype = {"fp16": "float16", "bf16": "bfloat16"}.get(self.precision, "float32")
        self.cache_dirs = [
            exported_text_dir(self.path),
            Path(config.cache_dir or default_cache_dir()).expanduser(),
        ]
        self._checked = None  # (config, its Head) of the last config check_config accepted
        self._head = self._make_head(config)
        self.reference = load_reference(self.path)
        self.depth_figure = None  # DepthFigure: the reference frames run here, at warm-up
        self.figure_failure = ""  # why the reference frames did not run here

    # --- what a runtime provides
    def _read_graph(self) -> tuple:
        """(metadata dict, input names, output names) of the file."""
        raise NotImplementedError

    def _open(self, config: DepthClipConfig) -> None:
        raise NotImplementedError

    def _run(self, fields: tuple, feeds: dict) -> list:
        """The graph's outputs `fields` (in that order) for `feeds`."""
        raise NotImplementedError

    def _start_one(self, fields: tuple, feeds: dict) -> Started:
        """_run's outputs as a Started; a runtime that runs forwards side by side
        (frames_in_flight > 1) begins one here and returns at once."""
        outputs = self._run(fields, feeds)
        return Started(lambda: outputs)

    @property
    def frames_in_flight(self) -> int:
        """How many forwards the runtime runs side by side, each on its own share of the
        threads (inference_streams): worth starting before the earlier ones end."""
        return 1

    @property
    def forwards_side_by_side(self) -> int:
        """Its frames in flight run side by side, a batch split among them (_start)."""
        return self.frames_in_flight

    # --- shared
    def _start(self, fields: tuple, feeds: dict) -> Started:
        """The forward of `feeds` begun (_start_one): a batch split into one part per forward
        in flight where the runtime runs several side by side. The Started gives the outputs
        `fields`."""
        images = feeds["images"]
        streams = self.frames_in_flight
        if len(images) > 1 and streams > 1:
            parts = np.array_split(images, min(streams, len(images)))
            starts = [self._start_one(fields, {**feeds, "images": part}) for part in parts]
            return all_started(
                starts, lambda: [np.concatenate(each) for each in zip(*(s() for s in starts))]
            )
        return self._start_one(fields, feeds)

    def _inference_precision(self, requested: str) -> str:
        """The precision it runs in: the graph's; `precision` auto takes it, any other value
        must match it (a runtime with an inference precision of its own widens this)."""
        if requested not in ("auto", self.graph_precision):
            raise ConfigError(
                "precision",
                requested,
                f"the exported graph {self.path.name} is {self.graph_precision}; export it with "
                f"depthclip-export --precision {requested}, or set precision auto",
            )
        return self.graph_precision

    @property
    def saturates_here(self) -> bool:
        """True for an int8 graph with 8-bit weights (exported before 7-bit weights) on an x86
        CPU without VNNI, whose u8s8 kernels saturate its products (each runtime says what it
        does about it)."""
        return (
            self.graph_precision == "int8"
            and int8_weight_bits(self.metadata) > 7
            and int8_saturates()
        )

    @property
    def precision_detail(self) -> str:
        """The precision in words, with an int8 graph's difference from fp32 measured at
        export."""
        detail = precision_detail(self.metadata)
        if self.precision != self.graph_precision:
            return f"{self.precision} inference of the {detail} graph"
        return detail

    @property
    def depth_figure_words(self) -> str:
        """The depth figure measured here at warm-up, in words (/diagnostics)."""
        if self.depth_figure is not None:
            return self.depth_figure.words
        if self.figure_failure:
            return self.figure_failure
        if self.reference is None:
            return (
                f"not measured (no {reference_path(self.path).name} beside the graph: export "
                f"it again with this version)"
            )
        return "not measured yet (at warm-up)"

    def measure_depth_figure(self):
        """Run the reference frames on this runtime, device and CPU: their depth against the
        float32 depth stored at export (once; warm_up calls it); the DepthFigure, or None."""
        ref = self.reference
        if self.depth_figure is not None or ref is None:
            return self.depth_figure
        try:
            depth = [self._run(("depth",), ref.feeds(i))[0][0] for i in range(len(ref.frames))]
            where = f"{self.runtime}, device {self.device}, {cpu_description()}"
            self.depth_figure = depth_figure(ref.depth, np.stack(depth), where)
        except Exception as exc:  # a file that is not this graph's: the model still runs
            reason = (str(exc).strip().splitlines() or [""])[-1][:200]
            self.figure_failure = (
                f"not measured ({reference_path(self.path).name} does not run on "
                f"{self.path.name}: {type(exc).__name__}: {reason})"
            )
            log.warning("reference frames: %s", self.figure_failure)
            self.reference = None
        return self.depth_figure

    @property
    def head(self) -> Head:
        """The config in use and its text features and bins (replaced whole by update_config)."""
        return self._head

    @property
    def config(self) -> DepthClipConfig:
        return self._head.config

    def _make_head(self, cfg: DepthClipConfig) -> Head:
        """The Head of `cfg`, or ConfigError saying why the exported graph cannot run it."""
        if cfg.scene_bins != "off":
            raise ConfigError(
                "scene_bins", cfg.scene_bins, "needs the torch backend (not in the exported graph)"
            )
        for name in IMAGE_PATH_FIELDS:
            if str(getattr(cfg, name)) != self.metadata[name]:
                raise ConfigError(
                    name,
                    getattr(cfg, name),
                    f"the exported graph {self.path.name} was built with {name} "
                    f"{self.metadata[name]}; export again with this value, or use the torch "
                    f"backend",
                )
        tokens = len(cfg.prompt_sets[0])
        dtype = text_dtype(self.graph_precision, cfg.head_precision)
        for folder in self.cache_dirs:
            path = cache_path(folder, self.model_identity, cfg.prompt_sets, self.embed_dim, dtype)
            text = load_cached(path, self.embed_dim, tokens)
            if text is not None:
                break
        else:
            raise ConfigError(
                "depth_tokens",
                list(cfg.depth_tokens),
                "these prompts' text features were not exported with the model (they need the "
                "torch text encoder): run depthclip-export with these parameters, or use the "
                "torch backend",
            )
        return Head(cfg, text, np.asarray(cfg.depth_bins, np.float32))

    def check_config(self, cfg: DepthClipConfig) -> None:
        """ConfigError when the exported graph cannot run `cfg` (its text features loaded: what
        update_config then uses)."""
        self.config.check_read_only(cfg)
        self._checked = (cfg, self._make_head(cfg))

    def update_config(self, cfg: DepthClipConfig) -> None:
        """Apply a new config from the next `predict` on, if the exported graph can run it."""
        checked = self._checked
        if checked is None or checked[0] is not cfg:
            self.check_config(cfg)
            checked = self._checked
        self._head = checked[1]

    @property
    def prepares_image_sizes(self) -> bool:
        """Whether a camera's frames gain from warm_up at its size and max_batch before the
        first (TensorRT: its engine's largest batch; CUDA: cuDNN's choice per input shape)."""
        return False

    def warm_up(self, image_size=None, max_batch: int = 1) -> None:
        """Predict once on a blank frame of `image_size` (a fixed-size graph: its size) in each
        stream, after what the runtime prepares for it and batches up to `max_batch`
        (_prepare). The first warm-up also measures the depth figure on the reference
        frames."""
        size = self.image_size or image_size or network_image_size(self.config)
        self._prepare(size, max_batch)
        self.predict(np.zeros((self.frames_in_flight, *size, 3), np.uint8), arrays=())
        self.measure_depth_figure()

    def _prepare(self, image_size: tuple, max_batch: int) -> None:
        """Whatever the runtime builds for `image_size` and batches up to `max_batch`."""

    def predict(self, images, scenes=None, arrays=None) -> DepthResult:
        """Depth of uint8 RGB images (H, W, 3) or (B, H, W, 3): any size, or the one size a
        graph exported with --image-size takes. `arrays`: the DepthResult arrays to fetch
        (None: all)."""
        return self.begin_predict(images, scenes=scenes, arrays=arrays)()

    def begin_predict(self, images, scenes=None, arrays=None):
        """predict begun: a Started whose call gives its DepthResult. With frames_in_flight > 1
        the forward runs while the caller goes on (starts the next frame's); the Starteds are
        to be called in the order they were begun."""
        head = self._head  # one frame, one config
        cfg, bins = head.config, head.bins
        imgs = as_image_batch(images)
        height, width = imgs.shape[1:3]
        if self.image_size is not None and (height, width) != self.image_size:
            raise ImageSizeError(
                f"the exported graph {self.path.name} takes {self.image_size[1]}x"
                f"{self.image_size[0]} images, got {width}x{height}; export it again without "
                f"--image-size (a graph for every size)"
            )
        region = input_region(height, width, cfg)  # before the forward: a crop's size refused
        fields = fetched_fields(arrays)
        outputs = self._start(
            fields or ("depth",),  # a run fetches something (ONNX Runtime's none: all of them)
            {
                "images": imgs,
                "text_features": head.text,
                "bins": bins,
                "temperature": np.asarray(cfg.temperature, np.float32),
            },
        )
        return Started(
            lambda: DepthResult.from_outputs(
                outputs(),
                bins=bins,
                region=region,
                fields=fields,
                head_keys=(head.key,) * len(imgs),
            ),
            outputs.done,
            outputs.when_done,
        )
