"""How a model states a broken rule so that `ResourceError` can print it the way the API server
does. Built-in pydantic constraints are translated in `errors.py`; rules pydantic cannot express
(CEL rules, list-map keys, metadata formats) raise these errors directly."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import PydanticCustomError

RULE_ERROR = "kubernetes_rule"


def describe_value(value: Any) -> str:
    """A value as the API server quotes it: scalars as JSON, containers by their type name."""
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    try:
        return json.dumps(value, default=str)
    except ValueError:
        return repr(value)


def rule_error(message: str, *, subpath: str = "") -> PydanticCustomError:
    """An error whose message is already in API-server form. `subpath` extends the field path,
    e.g. "[2]" for the duplicate entry of a list."""
    return PydanticCustomError(RULE_ERROR, "{message}", {"message": message, "subpath": subpath})


def invalid_value(value: Any, detail: str, *, subpath: str = "") -> PydanticCustomError:
    """`Invalid value: <value>: <detail>`, the API server's most common complaint."""
    return rule_error(f"Invalid value: {describe_value(value)}: {detail}", subpath=subpath)


def json_type_name(value: Any) -> str:
    """The JSON type of a decoded value, in the words of an OpenAPI schema."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def type_error(value: Any, expected: str) -> PydanticCustomError:
    """`Invalid value: "integer": must be of type string`, as the API server words it."""
    return rule_error(f'Invalid value: "{json_type_name(value)}": must be of type {expected}')
