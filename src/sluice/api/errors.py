"""`ResourceError`: a resource the API server would refuse, with each problem worded the way
the API server words it (`spec.poolRef.name: Required value`)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sluice.api.fieldpaths import json_path
from sluice.api.rules import RULE_ERROR, describe_value, json_type_name

Problem = tuple[str, str]
"""(field path, message), e.g. ("spec.poolRef.name", "Required value")."""


class ResourceError(ValueError):
    """A resource document that is not a valid InferencePool, InferenceObjective or
    InferenceModelRewrite. `problems` lists every (field path, message) pair."""

    def __init__(self, kind: str, name: str | None, problems: list[Problem]) -> None:
        self.kind = kind
        self.name = name
        self.problems = problems
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        listed = lines[0] if len(lines) == 1 else "[" + ", ".join(lines) + "]"
        subject = f'{kind} "{name}"' if name else kind
        super().__init__(f"{subject} is invalid: {listed}")


_TYPE_ERRORS = {
    "string_type": "string",
    "int_type": "integer",
    "bool_type": "boolean",
    "list_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}


def _supported_values(expected: str) -> str:
    # pydantic words a Literal's choices as "'A', 'B' or 'C'"; the API server as "A", "B", "C".
    return ", ".join(f'"{v}"' for v in re.findall(r"'([^']*)'", expected))


def _message(error: ErrorDetails) -> tuple[str, str]:
    """(path suffix, API-server message) for one pydantic error."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    shown = describe_value(value)
    if kind == RULE_ERROR:
        return ctx["subpath"], ctx["message"]
    if kind == "missing":
        return "", "Required value"
    if kind in _TYPE_ERRORS or (kind == "literal_error" and not isinstance(value, str)):
        expected = _TYPE_ERRORS.get(kind, "string")
        return "", f'Invalid value: "{json_type_name(value)}": must be of type {expected}'
    if kind == "literal_error":
        return "", f"Unsupported value: {shown}: supported values: " + _supported_values(
            ctx["expected"]
        )
    if kind == "string_too_long":
        return "", f"Too long: may not be more than {ctx['max_length']} characters"
    if kind == "string_too_short":
        return "", f"Invalid value: {shown}: must be at least {ctx['min_length']} chars long"
    if kind == "string_pattern_mismatch":
        return "", f"Invalid value: {shown}: must match '{ctx['pattern']}'"
    if kind == "less_than_equal":
        return "", f"Invalid value: {shown}: must be less than or equal to {ctx['le']}"
    if kind == "greater_than_equal":
        return "", f"Invalid value: {shown}: must be greater than or equal to {ctx['ge']}"
    if kind == "too_long":
        count = ctx.get("actual_length") or len(value)
        return "", f"Too many: {count}: must have at most {ctx['max_length']} items"
    if kind == "too_short":
        return "", (
            f"Invalid value: {ctx['actual_length']}: must have at least {ctx['min_length']} items"
        )
    return "", f"Invalid value: {shown}: {error['msg']}"


def problems_of(model: type[BaseModel], error: ValidationError) -> list[Problem]:
    """Every problem pydantic found in a document for `model`, as (JSON path, message)."""
    problems: list[Problem] = []
    for detail in error.errors():
        suffix, message = _message(detail)
        problems.append((json_path(model, detail["loc"]) + suffix, message))
    return problems
