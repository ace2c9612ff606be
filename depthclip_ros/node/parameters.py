"""The parameter schema (config) as ROS 2 parameters of a node: declared, read and validated.

Typing and limits are checked by the schema (same message as the tools'), so the descriptors
carry them as text and accept an integer where a number is expected
(`ros2 param set ... temperature 1`).
"""

from __future__ import annotations

import dataclasses

from rcl_interfaces.msg import ParameterDescriptor

from ..config.params_files import resolve_scene_presets
from ..config.schema import constraints_text
from ..config.settings import Parameters, parameter_fields
from ..estimator import check_prompts


def parameter_descriptor(field) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=field.metadata["description"],
        additional_constraints=constraints_text(field),
        read_only=field.metadata["read_only"],
        dynamic_typing=True,
    )


def declare_parameters(node) -> None:
    for _, field in parameter_fields():
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        node.declare_parameter(field.name, default, parameter_descriptor(field))


def parameter_values(node) -> dict:
    return {field.name: node.get_parameter(field.name).value for _, field in parameter_fields()}


def read_parameters(values: dict) -> Parameters:
    """Every parameter validated, the scene presets read, the prompts checked (CLIP's tokenizer
    limits their length): what the node runs, or ConfigError."""
    params = Parameters.from_params(values)
    params = dataclasses.replace(params, config=resolve_scene_presets(params.config))
    check_prompts(params.config)
    return params


def read_changes(values: dict, changes) -> Parameters | None:
    """The parameters `changes` (rclpy Parameters) would give a node whose parameters are
    `values`; None when they touch none of the schema's (e.g. use_sim_time). ConfigError when
    they are invalid."""
    names = {field.name for _, field in parameter_fields()}
    if not any(p.name in names for p in changes):
        return None
    return read_parameters({**values, **{p.name: p.value for p in changes}})
