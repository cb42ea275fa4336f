"""A plugin's `parameters` as a strict pydantic model: each plugin class declares `Parameters`
(a `PluginParameters`: frozen, unknown keys refused, upstream's camelCase names on the wire,
every scalar checked by one function of `sluice.api.scalars`), and `read_parameters` validates
a spec's raw mapping against it. A mistake is a `ConfigError` worded as the rest of the config
(`sluice.api.problems`): `plugins[0].parameters.maxNumOfEndpoints: must be >= 1, got 0`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import PlainValidator, ValidationError, model_validator

from sluice.api.problems import problems
from sluice.api.scalars import Strict, field_type, integer

if TYPE_CHECKING:
    from sluice.scheduling.config import PluginSpec

__all__ = ["PluginParameters", "at_least", "positive", "read_parameters"]

N = TypeVar("N", int, float)
P = TypeVar("P", bound="PluginParameters")


class PluginParameters(Strict):
    """No parameters: every key is an unknown one. A key written without a value (`blockSize:`,
    YAML's null) takes its default, in nested sections too."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


def read_parameters(spec: PluginSpec, model: type[P]) -> P:
    """`spec`'s parameters validated by `model`; the first mistake raised as an unlocated
    `ConfigError` naming `plugins[i].parameters.<key>` (the loader adds its file and line)."""
    try:
        return model.model_validate(dict(spec.parameters))
    except ValidationError as exc:
        raise problems(model, exc, f"{spec.where}.parameters", noun="parameter")[0] from None


def at_least(low: int) -> PlainValidator:
    """An integer >= `low`: `must be >= 1, got 0`."""

    def parse(value: Any) -> int:
        number = integer(value)
        if number < low:
            raise ValueError(f"must be >= {low}, got {number}")
        return number

    return field_type(parse)


def positive(parse: Callable[[Any], N]) -> PlainValidator:
    """What `parse` reads, and > 0: `must be > 0, got 0.0`."""

    def check(value: Any) -> N:
        number = parse(value)
        if number <= 0:
            raise ValueError(f"must be > 0, got {number}")
        return number

    return field_type(check)
