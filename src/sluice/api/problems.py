"""A pydantic `ValidationError` on a config model → `ConfigError`s (field path and fix), worded
as Sluice's config errors always were. Walks the models with `api`'s field lookup (`wire_fields`,
`element_type`), the same that words the Kubernetes resources' errors. Shared by the YAML's
sections (`sluice.config`) and the plugins' parameters (`sluice.scheduling`)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sluice.api.fieldpaths import element_type, wire_fields
from sluice.api.rules import RULE_ERROR
from sluice.util.located import ConfigError

_REQUIRED_HINTS = {"priority": "required; add e.g. 'priority: 0'"}
_SHAPES = {
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
}


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    annotation: Any = model
    for item in loc:
        shape, inner = element_type(annotation)
        if shape == "model" and isinstance(item, str) and item in wire_fields(inner):
            annotation = wire_fields(inner)[item][1]
        elif shape in ("list", "map"):
            annotation = inner
        else:
            return None
    shape, inner = element_type(annotation)
    return inner if shape == "model" else None


def unknown_field(key: str, allowed: list[str], noun: str = "field") -> str:
    """`unknown field 'x'; did you mean 'y'?` (a plugin's parameters: `unknown parameter`)."""
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        fix = f"did you mean '{close[0]}'?"
    elif noun == "parameter":
        fix = f"known: {', '.join(allowed) or 'none'}"
    else:
        fix = f"allowed keys: {', '.join(allowed)}"
    return f"unknown {noun} {key!r}; {fix}"


def _problem(model: type[BaseModel], error: ErrorDetails, noun: str) -> tuple[str, str]:
    loc = tuple(error["loc"])
    # pydantic's loc holds wire names already (validated by alias); map keys read as fields,
    # as Sluice's config errors always named them (`fairnessWeights.gold`).
    path = "".join(f"[{item}]" if isinstance(item, int) else f".{item}" for item in loc)
    path = path.removeprefix(".")
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == RULE_ERROR:
        return (path + ctx["subpath"]).lstrip("."), ctx["message"]
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = sorted({w for w, _ in wire_fields(parent).values()}) if parent else []
        return path, unknown_field(str(loc[-1]), allowed, noun)
    if kind == "missing":
        return path, _REQUIRED_HINTS.get(str(loc[-1]), "missing required field")
    if kind in _SHAPES:
        return path, f"expected {_SHAPES[kind]}, got {error.get('input')!r}"
    return path, error["msg"]


def problems(
    model: type[BaseModel], error: ValidationError, prefix: str = "", noun: str = "field"
) -> list[ConfigError]:
    """Every problem pydantic found, as unlocated `ConfigError`s under `prefix`; `noun` names
    what an unknown key is (`field`, or `parameter` in a plugin's parameters)."""
    found: list[ConfigError] = []
    for detail in error.errors():
        path, message = _problem(model, detail, noun)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
        found.append(ConfigError(path, message))
    return found
