"""The parameter schema (config) as ROS 2 parameters of a node: declared, read and validated.

Typing and limits are checked by the schema (same message as the tools'), so the descriptors
carry them as text and accept an integer where a number is expected
(`ros2 param set ... temperature 1`).
"""

from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from ..config.parameters import Parameters, parameter_fields
from ..config.params_files import scene_configs
from ..config.schema import constraints_text
from ..errors import ConfigError


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


def _check_prompts(prompts) -> None:
    """CLIP's tokenizer limits a prompt's length; without torch (the ONNX install) only the
    prompts exported with the model run, and they were checked at export."""
    try:
        from ..estimator.text_features import tokenize
    except ImportError:
        return
    tokenize(prompts)


def read_parameters(values: dict) -> Parameters:
    """Every parameter validated, prompts included (CLIP's tokenizer limits their length)."""
    params = Parameters.from_params(values)
    _check_prompts(params.config.prompts)
    if params.config.scene_bins == "auto":  # presets exist and fit the config's bins
        for scene_config in scene_configs(params.config).values():
            _check_prompts(scene_config.prompts)
        _check_prompts(params.config.scene_prompts)
    return params


def check_changes(node, changes) -> SetParametersResult:
    """An on-set-parameters callback: the schema's checks and the loaded model's, before a
    change is stored."""
    names = {field.name for _, field in parameter_fields()}
    if not any(p.name in names for p in changes):
        return SetParametersResult(successful=True)
    values = parameter_values(node)
    values.update({p.name: p.value for p in changes})
    try:
        params = read_parameters(values)
        if node.estimator is not None:  # what the loaded model can run (an exported graph)
            node.estimator.check_config(params.config)
    except ConfigError as exc:
        return SetParametersResult(successful=False, reason=str(exc))
    return SetParametersResult(successful=True)
