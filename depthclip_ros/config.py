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


@dataclasses.dataclass(frozen=True)
class DepthClipConfig:
    """Everything the DepthCLIP core needs. Defaults are the paper's settings."""

    model: str = "RN50"
    download_root: str = ""  # "" -> clip's default, ~/.cache/clip
    device: str = "auto"
    precision: str = "auto"
    prompt_template: str = "This {object} is {token}"
    object_word: str = "object"
    depth_tokens: tuple = (
        "giant", "extremely close", "close", "not in distance",
        "a little remote", "far", "unseen",
    )
    depth_bins: tuple = (1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00)
    temperature: float = 0.1
    flip: bool = True
    preprocessing: str = "crop"
    input_width: int = 544
    input_height: int = 416
    normalization: str = "imagenet"
    cache_dir: str = ""  # "" -> ~/.cache/depthclip_ros

    # Fields fixed for the lifetime of a loaded model (read-only ROS parameters).
    LOAD_TIME_FIELDS = ("model", "download_root", "device", "precision", "cache_dir")

    def __post_init__(self):
        # YAML and ROS give lists; keep the frozen config hashable and immutable.
        object.__setattr__(self, "depth_tokens", tuple(self.depth_tokens))
        object.__setattr__(self, "depth_bins", tuple(self.depth_bins))

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_params(cls, params: Mapping[str, Any], base: "DepthClipConfig | None" = None):
        """Build and validate a config from a parameter mapping.

        Keys that are not core fields (node-only parameters such as
        `cloud_stride`) are ignored, so one parameter file serves every tool.
        """
        base = base or cls()
        known = {k: params[k] for k in cls.field_names() if k in params}
        cfg = dataclasses.replace(base, **known)
        cfg.validate()
        return cfg

    def to_params(self) -> dict:
        out = dataclasses.asdict(self)
        out["depth_tokens"] = list(self.depth_tokens)
        out["depth_bins"] = [float(b) for b in self.depth_bins]
        return out

    def replace(self, **changes) -> "DepthClipConfig":
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    @property
    def prompts(self) -> list:
        return [self.prompt_template.format(object=self.object_word, token=t)
                for t in self.depth_tokens]

    def validate(self) -> None:
        _check_str(self, "model")
        if not self.model.strip():
            raise ConfigError("model", self.model, "must name a CLIP model or a checkpoint file")
        _check_str(self, "download_root")
        _check_str(self, "cache_dir")
        _check_choice(self, "device", DEVICES_FIXED, extra_ok=_is_cuda_index(self.device))
        _check_choice(self, "precision", PRECISIONS)
        _check_choice(self, "preprocessing", MODES)
        _check_choice(self, "normalization", NORMALIZATIONS)
        _check_template(self.prompt_template)
        _check_str(self, "object_word")

        tokens = self.depth_tokens
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str) or not tok.strip():
                raise ConfigError("depth_tokens", list(tokens), f"token {i} is empty")
        bins = self.depth_bins
        if len(bins) < 2:
            raise ConfigError("depth_bins", list(bins), "needs at least 2 bins")
        for b in bins:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
                raise ConfigError("depth_bins", list(bins), f"{b!r} is not a finite number")
            if b <= 0:
                raise ConfigError("depth_bins", list(bins), "bins must be positive (metres)")
        if any(b2 <= b1 for b1, b2 in zip(bins, bins[1:])):
            raise ConfigError("depth_bins", list(bins), "bins must be strictly increasing")
        if len(tokens) != len(bins):
            raise ConfigError("depth_tokens", list(tokens),
                              f"{len(tokens)} tokens but {len(bins)} depth_bins; "
                              "each token needs exactly one bin")

        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ConfigError("temperature", t, "must be a finite number > 0")
        if not isinstance(self.flip, bool):
            raise ConfigError("flip", self.flip, "must be true or false")
        for name in ("input_width", "input_height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 32:
                raise ConfigError(name, v, "must be a positive multiple of 32 (CLIP ResNet stride)")


def _check_str(cfg, name):
    v = getattr(cfg, name)
    if not isinstance(v, str):
        raise ConfigError(name, v, "must be a string")


def _is_cuda_index(device) -> bool:
    return isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit()


def _check_choice(cfg, name, choices, extra_ok=False):
    v = getattr(cfg, name)
    if extra_ok:
        return
    if v not in choices:
        hint = " or cuda:N" if name == "device" else ""
        raise ConfigError(name, v, f"must be one of {', '.join(choices)}{hint}")


def _check_template(template) -> None:
    if not isinstance(template, str):
        raise ConfigError("prompt_template", template, "must be a string")
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError("prompt_template", template, f"not a format string: {exc}") from None
    for required in TEMPLATE_FIELDS:
        if required not in names:
            raise ConfigError("prompt_template", template,
                              f"must contain the placeholder {{{required}}}")
    unknown = sorted(set(names) - set(TEMPLATE_FIELDS))
    if unknown:
        raise ConfigError("prompt_template", template,
                          f"unknown placeholder(s) {unknown}; only {{object}} and {{token}}")


# --------------------------------------------------------------------------- outputs

COLORMAPS = ("turbo", "viridis", "gray")


@dataclasses.dataclass(frozen=True)
class OutputSettings:
    """Parameters of the outputs (not of the estimator), shared by the node and the bag tool."""
    cloud_stride: int = 8   # one cloud point every N pixels; 0 = one per coarse grid cell
    colormap: str = "turbo"  # of depth/colored

    @classmethod
    def from_params(cls, params: Mapping) -> "OutputSettings":
        settings = cls(**{k: params.get(k, v) for k, v in OUTPUT_DEFAULTS.items()})
        settings.validate()
        return settings

    def validate(self):
        if isinstance(self.cloud_stride, bool) or not isinstance(self.cloud_stride, int) \
                or not 0 <= self.cloud_stride <= 64:
            raise ConfigError("cloud_stride", self.cloud_stride, "must be an integer 0..64")
        if self.colormap not in COLORMAPS:
            raise ConfigError("colormap", self.colormap, f"must be one of {', '.join(COLORMAPS)}")


OUTPUT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(OutputSettings)}


# --------------------------------------------------------------------------- files

def node_key_matches(key: str, node_fqn: str) -> bool:
    """Whether a parameter file's node key applies to the node `node_fqn` (e.g. '/front/depthclip').

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
                raise ConfigError("params_file", str(path),
                                  f"section '{name}' has no ros__parameters mapping")
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
        raise ConfigError("params_file", str(path), "expected `/**/depthclip: ros__parameters: {...}`")
    params: dict = {}
    matched = False
    for key, section in _node_sections(data, path):
        if node_key_matches(key, node_fqn):
            matched = True
            params.update(_flatten(section))
    if not matched:
        raise ConfigError("params_file", str(path),
                          f"no section for node {node_fqn} (keys: {', '.join(map(str, data))}); "
                          f"use `/**/{node_fqn.rsplit('/', 1)[-1]}:` to match it in any namespace")
    return params


def config_dir() -> Path:
    """Where the package's config/ lives: source tree, pip prefix or colcon install."""
    candidates = [Path(__file__).resolve().parent.parent / "config",
                  Path(sys.prefix) / "share" / PACKAGE_NAME / "config"]
    try:  # a ROS 2 install (colcon) knows its share directory
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(PACKAGE_NAME)) / "config")
    except Exception:  # not a ROS install, or package not in the index
        pass
    for c in candidates:
        if (c / "depthclip.yaml").is_file():
            return c
    raise FileNotFoundError(f"config/depthclip.yaml not found; looked in {[str(c) for c in candidates]}")


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
        raise ConfigError("preset", str(preset), f"unknown preset; available: {', '.join(preset_names())}")
    return candidate


def load_params(params_file=None, presets: Iterable = (), overrides: Mapping | None = None) -> dict:
    """Parameters as the node sees them: the shipped file, overlaid with `params_file`, the presets
    (in order), then `overrides`."""
    params = read_params_file(default_params_file())
    if params_file:
        params.update(read_params_file(params_file))
    for preset in presets:
        params.update(read_params_file(resolve_preset(preset)))
    params.update(overrides or {})
    return params


def load_config(params_file=None, presets: Iterable = (), overrides: Mapping | None = None) -> DepthClipConfig:
    return DepthClipConfig.from_params(load_params(params_file, presets, overrides))


def default_cache_dir() -> Path:
    return Path(os.path.expanduser("~/.cache/depthclip_ros"))
