"""DepthCLIP configuration: one schema, read from ROS 2 parameter files.

The node, the offline evaluation and the bag tool all read the same YAML
(`/**/depthclip: ros__parameters: ...`), validated here. No rclpy import.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import string
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

PACKAGE_NAME = "depthclip_ros"
NODE_NAME = "depthclip"
NODE_FQN = "/" + NODE_NAME  # the node without a namespace; the tools read its parameters

MODES = ("crop", "resize")
DEVICES_FIXED = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp16", "fp32")
NORMALIZATIONS = ("imagenet", "clip")
TEMPLATE_FIELDS = ("object", "token")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and value."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field = field
        self.value = value
        super().__init__(f"invalid config field '{field}' = {value!r}: {reason}")


# --------------------------------------------------------------------------- schema
# Every parameter is written once, as a dataclass field carrying its default, description,
# read-only flag and limits. `validate` checks them; the node builds its parameter descriptors
# from them, so the node, the bag tool and the eval accept and reject the same values.


def param(
    default,
    description: str,
    *,
    read_only: bool = False,
    choices: tuple = (),
    minimum=None,
    maximum=None,
    multiple_of: int | None = None,
):
    """A schema field. The default's type is the parameter's type (ints pass as floats)."""
    return dataclasses.field(
        default=default,
        metadata={
            "description": description,
            "read_only": read_only,
            "choices": tuple(choices),
            "minimum": minimum,
            "maximum": maximum,
            "multiple_of": multiple_of,
        },
    )


def _kind(default) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, tuple):
        return "float_list" if default and isinstance(default[0], float) else "str_list"
    return {int: "int", float: "float", str: "str"}[type(default)]


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_kind(name: str, kind: str, value):
    """The value in the field's type (int -> float, list -> tuple), or ConfigError."""
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(name, value, "must be true or false")
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(name, value, "must be an integer")
    if kind == "float":
        if not _number(value):
            raise ConfigError(name, value, "must be a finite number")
        return float(value)
    if kind == "str" and not isinstance(value, str):
        raise ConfigError(name, value, "must be a string")
    if kind in ("str_list", "float_list"):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(name, value, "must be a list")
        items = list(value)
        for i, item in enumerate(items):
            if kind == "str_list" and (not isinstance(item, str) or not item.strip()):
                raise ConfigError(name, items, f"item {i} is not a non-empty string")
            if kind == "float_list" and not _number(item):
                raise ConfigError(name, items, f"{item!r} is not a finite number")
        return tuple(float(v) for v in items) if kind == "float_list" else tuple(items)
    return value


def constraints_text(f: dataclasses.Field) -> str:
    """The field's limits in words (ParameterDescriptor.additional_constraints)."""
    m = f.metadata
    parts = []
    if m["choices"]:
        parts.append("one of " + ", ".join(m["choices"]))
    if m["minimum"] is not None and m["maximum"] is not None:
        parts.append(f"from {m['minimum']} to {m['maximum']}")
    elif m["minimum"] is not None:
        parts.append(f">= {m['minimum']}")
    if m["multiple_of"]:
        parts.append(f"multiple of {m['multiple_of']}")
    return "; ".join(parts)


class Schema:
    """Base of the parameter dataclasses: generic checks from each field's metadata."""

    def __post_init__(self):
        # YAML and ROS give lists and ints; the frozen dataclass keeps tuples and floats.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = _kind(f.default)
            if kind in ("str_list", "float_list") and isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            elif kind == "float" and _number(value) and isinstance(value, int):
                object.__setattr__(self, f.name, float(value))

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def read_only_fields(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["read_only"])

    @classmethod
    def from_params(cls, params: Mapping[str, Any], base=None):
        """Build and validate from a parameter mapping; keys of other schemas are ignored, so one
        parameter file serves every tool."""
        base = base or cls()
        cfg = dataclasses.replace(base, **{k: params[k] for k in cls.field_names() if k in params})
        cfg.validate()
        return cfg

    def replace(self, **changes):
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def to_params(self) -> dict:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            m = f.metadata
            value = _check_kind(f.name, _kind(f.default), getattr(self, f.name))
            if m["choices"] and value not in m["choices"]:
                raise ConfigError(f.name, value, f"must be {constraints_text(f)}")
            low, high = m["minimum"], m["maximum"]
            if (low is not None and value < low) or (high is not None and value > high):
                raise ConfigError(f.name, value, f"must be {constraints_text(f)}")
            if m["multiple_of"] and value % m["multiple_of"]:
                raise ConfigError(f.name, value, f"must be a multiple of {m['multiple_of']}")
        self.check()

    def check(self) -> None:
        """Rules across fields or beyond the metadata."""


@dataclasses.dataclass(frozen=True)
class DepthClipConfig(Schema):
    """Everything the DepthCLIP core needs. Defaults are the shipped config/depthclip.yaml: the
    paper's text side, bins and temperature with two live-camera choices (resize, no flip) that
    the `paper` preset turns back into the paper's NYU protocol (crop, flip)."""

    model: str = param(
        "RN50", "CLIP ResNet name (RN50, RN101, RN50x4, ...) or checkpoint path", read_only=True
    )
    download_root: str = param(
        "", "Folder of downloaded CLIP weights; empty = ~/.cache/clip", read_only=True
    )
    device: str = param("auto", "auto | cpu | cuda | cuda:N", read_only=True)
    precision: str = param(
        "auto",
        "auto (fp16 on CUDA, fp32 on CPU) | fp16 | fp32",
        read_only=True,
        choices=PRECISIONS,
    )
    cache_dir: str = param(
        "", "Text-feature cache folder; empty = ~/.cache/depthclip_ros", read_only=True
    )
    prompt_template: str = param(
        "This {object} is {token}", "Prompt with {object} and {token} placeholders"
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

    @property
    def prompts(self) -> list:
        return [
            self.prompt_template.format(object=self.object_word, token=t)
            for t in self.depth_tokens
        ]

    def check(self) -> None:
        if not self.model.strip():
            raise ConfigError("model", self.model, "must name a CLIP model or a checkpoint file")
        if self.device not in DEVICES_FIXED and not _is_cuda_index(self.device):
            raise ConfigError(
                "device", self.device, f"must be one of {', '.join(DEVICES_FIXED)} or cuda:N"
            )
        _check_template(self.prompt_template)
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


def _is_cuda_index(device) -> bool:
    return device.startswith("cuda:") and device[5:].isdigit()


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


COLORMAPS = ("turbo", "viridis", "gray")


@dataclasses.dataclass(frozen=True)
class OutputSettings(Schema):
    """Parameters of the outputs (not of the estimator), shared by the node and the bag tool."""

    cloud_stride: int = param(
        8, "One cloud point every N pixels; 0 = one per coarse grid cell", minimum=0, maximum=64
    )
    colormap: str = param("turbo", "Colour map of depth/colored", choices=COLORMAPS)


@dataclasses.dataclass(frozen=True)
class NodeSettings(Schema):
    """Parameters of the ROS node only."""

    autostart: bool = param(
        True,
        "Configure and activate at start-up; false leaves the transitions to a lifecycle manager",
        read_only=True,
    )
    use_compressed: bool = param(
        False, "Subscribe to image/compressed (JPEG/PNG) instead of image", read_only=True
    )
    camera_info_wait: float = param(
        0.1,
        "Seconds an image waits (after its forward) for the "
        "camera_info with its stamp before the latest one is used",
        minimum=0.0,
        maximum=5.0,
    )
    diagnostics_period: float = param(
        1.0, "Seconds between /diagnostics messages", read_only=True, minimum=0.1, maximum=60.0
    )
    input_timeout: float = param(
        2.0,
        "Diagnostics WARN when no image arrived for this many seconds while active",
        minimum=0.1,
        maximum=3600.0,
    )
    expected_input_rate: float = param(
        0.0,
        "Camera rate in Hz the diagnostics check the input against; 0 = not checked",
        minimum=0.0,
        maximum=1000.0,
    )
    rate_tolerance: float = param(
        0.5,
        "Input rates within expected_input_rate * (1 +- this) are OK",
        minimum=0.0,
        maximum=1.0,
    )
    min_output_rate: float = param(
        0.0,
        "Diagnostics WARN when, while watched, fewer depth "
        "images per second go out; 0 = not checked",
        minimum=0.0,
        maximum=1000.0,
    )


# The node's parameters, in the order `ros2 param list` users read them.
PARAMETER_SCHEMAS = (DepthClipConfig, OutputSettings, NodeSettings)


@dataclasses.dataclass(frozen=True)
class Parameters:
    """Every parameter of the node, validated together."""

    config: DepthClipConfig
    outputs: OutputSettings
    node: NodeSettings

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Parameters":
        return cls(*(schema.from_params(params) for schema in PARAMETER_SCHEMAS))


def parameter_fields() -> list:
    """(schema, dataclasses.Field) of every node parameter."""
    return [(schema, f) for schema in PARAMETER_SCHEMAS for f in dataclasses.fields(schema)]


def parameter_defaults() -> dict:
    return {
        name: value for schema in PARAMETER_SCHEMAS for name, value in schema().to_params().items()
    }


# --------------------------------------------------------------------------- files


def node_key_matches(key: str, node_fqn: str) -> bool:
    """Whether a parameter file's node key applies to the node `node_fqn` (e.g.
    '/front/depthclip').

    rcl's rules, checked against rclpy here: a key without a leading '/' is absolute, `*` is
    one name token, `**` any number of tokens (none included), and wildcards are whole tokens.
    """
    pattern = ""
    for token in key.strip("/").split("/"):
        if token == "**":
            pattern += "(?:/[^/]+)*"
        elif token == "*":
            pattern += "/[^/]+"
        else:
            pattern += "/" + re.escape(token)
    return re.fullmatch(pattern, node_fqn) is not None


def _flatten(params: Mapping, prefix: str = "") -> dict:
    """Nested parameter mappings as rcl names them: {'a': {'b': 1}} -> {'a.b': 1}."""
    flat = {}
    for name, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _node_sections(data: Mapping, path, prefix: str = ""):
    """(node key, ros__parameters) of every section, in file order; nested namespaces joined."""
    for key, section in data.items():
        name = f"{prefix}/{str(key).strip('/')}" if prefix else str(key)
        if not isinstance(section, dict):
            raise ConfigError("params_file", str(path), f"section '{name}' is not a mapping")
        if "ros__parameters" in section:
            if not isinstance(section["ros__parameters"], dict):
                raise ConfigError(
                    "params_file", str(path), f"section '{name}' has no ros__parameters mapping"
                )
            yield name, section["ros__parameters"]
        else:
            yield from _node_sections(section, path, name)


def read_params_file(path, node_fqn: str = NODE_FQN) -> dict:
    """The parameters a ROS 2 parameter YAML gives the node `node_fqn`, as rcl reads them.

    Every section whose key matches the node (`/**/depthclip`, `/**`, `depthclip`,
    `/front/depthclip`, ...) applies, later sections overriding earlier ones.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError("params_file", str(path), f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("params_file", str(path), f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            "params_file", str(path), "expected `/**/depthclip: ros__parameters: {...}`"
        )
    params: dict = {}
    matched = False
    for key, section in _node_sections(data, path):
        if node_key_matches(key, node_fqn):
            matched = True
            params.update(_flatten(section))
    if not matched:
        raise ConfigError(
            "params_file",
            str(path),
            f"no section for node {node_fqn} (keys: {', '.join(map(str, data))}); "
            f"use `/**/{node_fqn.rsplit('/', 1)[-1]}:` to match it in any namespace",
        )
    return params


def config_dir() -> Path:
    """Where the package's config/ lives: source tree, pip prefix or colcon install."""
    candidates = [
        Path(__file__).resolve().parent.parent / "config",
        Path(sys.prefix) / "share" / PACKAGE_NAME / "config",
    ]
    try:  # a ROS 2 install (colcon) knows its share directory
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE_NAME)) / "config")
    except Exception:  # not a ROS install, or package not in the index
        pass
    for c in candidates:
        if (c / "depthclip.yaml").is_file():
            return c
    raise FileNotFoundError(
        f"config/depthclip.yaml not found; looked in {[str(c) for c in candidates]}"
    )


def default_params_file() -> Path:
    return config_dir() / "depthclip.yaml"


def preset_names() -> list:
    return sorted(p.stem for p in (config_dir() / "presets").glob("*.yaml"))


def resolve_preset(preset) -> Path:
    """A preset is a name from config/presets/ or a path to a parameter file."""
    p = Path(preset)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = config_dir() / "presets" / f"{preset}.yaml"
    if not candidate.is_file():
        raise ConfigError(
            "preset", str(preset), f"unknown preset; available: {', '.join(preset_names())}"
        )
    return candidate


def load_params(
    params_file=None, presets: Iterable = (), overrides: Mapping | None = None
) -> dict:
    """Parameters as the node sees them: the shipped file, overlaid with `params_file`, the presets
    (in order), then `overrides`."""
    params = read_params_file(default_params_file())
    if params_file:
        params.update(read_params_file(params_file))
    for preset in presets:
        params.update(read_params_file(resolve_preset(preset)))
    params.update(overrides or {})
    return params


def load_config(
    params_file=None, presets: Iterable = (), overrides: Mapping | None = None
) -> DepthClipConfig:
    return DepthClipConfig.from_params(load_params(params_file, presets, overrides))


def default_cache_dir() -> Path:
    return Path(os.path.expanduser("~/.cache/depthclip_ros"))
