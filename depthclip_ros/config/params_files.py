"""ROS 2 parameter files as rcl reads them, the package's config/ folder and its presets.

The node, the offline evaluation and the bag tool all read the same YAML
(`/**/depthclip: ros__parameters: ...`); `load_params` overlays the shipped file, a user's file,
presets and overrides in that order. No rclpy import.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from ..errors import ConfigError
from .parameters import NODE_FQN, PACKAGE_NAME, DepthClipConfig


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
        Path(__file__).resolve().parents[2] / "config",
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
    """The core's config from parameter files (see load_params), scene presets read."""
    return config_from_params(load_params(params_file, presets, overrides))


def config_from_params(params: Mapping) -> DepthClipConfig:
    """The core's config from a parameter mapping (keys of other schemas ignored), scene
    presets read."""
    return resolve_scene_presets(DepthClipConfig.from_params(params))


def preset_configs(params_file=None) -> list:
    """The config of every shipped preset on top of the parameter file (e.g. to export their
    prompts' text features); a preset these parameters cannot take is left out."""
    configs = []
    for name in preset_names():
        try:
            configs.append(load_config(params_file, [name]))
        except ConfigError:
            continue
    return configs


SCENE_PRESET_FIELDS = ("depth_bins", "depth_tokens")


def resolve_scene_presets(config: DepthClipConfig) -> DepthClipConfig:
    """`config` with its scene presets' bins and tokens read into it (scene_bins auto; unchanged
    otherwise): the estimator gets them as data. ConfigError for an unknown preset, one without
    bins or tokens, or one with another number of bins than `config`."""
    if config.scene_bins != "auto":
        return config
    heads = []
    for scene, preset in config.scene_preset_map().items():
        try:
            params = read_params_file(resolve_preset(preset))
        except ConfigError as exc:
            raise ConfigError("scene_presets", list(config.scene_presets), str(exc)) from None
        if not any(k in params for k in SCENE_PRESET_FIELDS):
            raise ConfigError(
                "scene_presets",
                list(config.scene_presets),
                f"preset {preset} sets no bins or tokens",
            )
        # Validated as the config would be with them (strictly increasing bins, one per token).
        own = config.replace(
            scene_heads=None, **{k: params[k] for k in SCENE_PRESET_FIELDS if k in params}
        )
        heads.append((scene, own.depth_bins, own.depth_tokens))
    return config.replace(scene_heads=tuple(heads))
