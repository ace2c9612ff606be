"""The parameter schema: every parameter written once, as a dataclass field carrying its default,
description, read-only flag and limits. `Schema.validate` checks them; the node builds its
parameter descriptors from them, so the node, the bag tool and the eval accept and reject the
same values with the same messages. No rclpy import.
"""

from __future__ import annotations

import array
import dataclasses
import math
from typing import Any, Mapping

from ..errors import ConfigError


def param(
    default,
    description: str,
    *,
    read_only: bool = False,
    choices: tuple = (),
    minimum=None,
    maximum=None,
    multiple_of: int | None = None,
    single_ok: bool = False,
    exclusive: bool = False,
):
    """A schema field. The default's type is the parameter's type (ints pass as floats);
    `single_ok`: a list field that also takes one string as a one-item list; `exclusive`: the
    bounds themselves are refused."""
    return dataclasses.field(
        default=default,
        metadata={
            "description": description,
            "read_only": read_only,
            "choices": tuple(choices),
            "minimum": minimum,
            "maximum": maximum,
            "multiple_of": multiple_of,
            "single_ok": single_ok,
            "exclusive": exclusive,
        },
    )


def derived():
    """A field computed from parameters by config/ (never a parameter itself): e.g. the scene
    presets' bins, read from their files so that the estimator gets them as data."""
    return dataclasses.field(default=None, metadata={"derived": True})


def _kind(default) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, tuple):
        return "float_list" if default and isinstance(default[0], float) else "str_list"
    return {int: "int", float: "float", str: "str"}[type(default)]


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_list(value) -> bool:
    """A list as YAML, Python or rclpy give it: rclpy's parameter services deliver double and
    integer arrays as `array.array`."""
    return isinstance(value, (list, tuple, array.array))


def _check_kind(name: str, kind: str, value):
    """The value in the field's type (int -> float, any list -> tuple), or ConfigError."""
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(name, value, "must be true or false")
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(name, value, "must be an integer")  # as ROS refuses a double there
    if kind == "float":
        if not _number(value):
            raise ConfigError(name, value, "must be a finite number")
        return float(value)
    if kind == "str" and not isinstance(value, str):
        raise ConfigError(name, value, "must be a string")
    if kind in ("str_list", "float_list"):
        if not _is_list(value):
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
        both = ", both excluded" if m["exclusive"] else ""
        parts.append(f"from {m['minimum']} to {m['maximum']}{both}")
    elif m["minimum"] is not None:
        parts.append(f">= {m['minimum']}")
    if m["multiple_of"]:
        parts.append(f"multiple of {m['multiple_of']}")
    return "; ".join(parts)


def _outside(value, low, high, exclusive: bool) -> bool:
    if exclusive:
        return (low is not None and value <= low) or (high is not None and value >= high)
    return (low is not None and value < low) or (high is not None and value > high)


class Schema:
    """Base of the parameter dataclasses: generic checks from each field's metadata, run when an
    instance is made (ConfigError: an invalid instance never exists)."""

    @classmethod
    def schema_fields(cls) -> tuple:
        """The parameter fields (derived ones excluded)."""
        return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("derived"))

    def __post_init__(self):
        # YAML and ROS give lists and ints; the frozen dataclass keeps tuples and floats.
        for f in self.schema_fields():
            value = getattr(self, f.name)
            kind = _kind(f.default)
            if kind in ("str_list", "float_list") and value is None:
                object.__setattr__(self, f.name, ())  # rcl reads `[]` in a YAML file as unset
            elif kind in ("str_list", "float_list") and _is_list(value):
                if kind == "float_list" and all(_number(v) for v in value):
                    value = [float(v) for v in value]  # an integer array given for numbers
                object.__setattr__(self, f.name, tuple(value))
            elif kind == "str_list" and f.metadata["single_ok"] and isinstance(value, str):
                object.__setattr__(self, f.name, (value,))
            elif kind == "float" and _number(value) and isinstance(value, int):
                object.__setattr__(self, f.name, float(value))
        self.validate()  # every instance is valid: nothing downstream checks again

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in cls.schema_fields())

    @classmethod
    def read_only_fields(cls) -> tuple:
        return tuple(f.name for f in cls.schema_fields() if f.metadata["read_only"])

    def check_read_only(self, new) -> None:
        """ConfigError when `new` changes a field fixed once loaded."""
        for name in self.read_only_fields():
            if getattr(new, name) != getattr(self, name):
                raise ConfigError(
                    name, getattr(new, name), "is fixed once the model is loaded (read-only)"
                )

    @classmethod
    def from_params(cls, params: Mapping[str, Any], base=None):
        """Build and validate from a parameter mapping; keys of other schemas are ignored, so one
        parameter file serves every tool."""
        base = base or cls()
        return dataclasses.replace(
            base, **{k: params[k] for k in cls.field_names() if k in params}
        )

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in self.schema_fields()
        }

    def validate(self) -> None:
        for f in self.schema_fields():
            m = f.metadata
            value = _check_kind(f.name, _kind(f.default), getattr(self, f.name))
            if m["choices"] and value not in m["choices"]:
                raise ConfigError(f.name, value, f"must be {constraints_text(f)}")
            low, high = m["minimum"], m["maximum"]
            if _outside(value, low, high, m["exclusive"]):
                raise ConfigError(f.name, value, f"must be {constraints_text(f)}")
            if m["multiple_of"] and value % m["multiple_of"]:
                raise ConfigError(f.name, value, f"must be a multiple of {m['multiple_of']}")
        self.check()

    def check(self) -> None:
        """Rules across fields or beyond the metadata."""
