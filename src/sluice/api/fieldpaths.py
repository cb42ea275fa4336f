"""Turn a pydantic error location into the JSON field path the API server prints:
`("spec", "targetPorts", 0, "number")` → `spec.targetPorts[0].number`, with map keys in
brackets (`spec.selector.matchLabels[app]`). Needs the model, because a location alone cannot
tell a map key from a field name."""

from __future__ import annotations

import types
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `X | None` down to X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


@cache
def wire_fields(model: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    """Field lookup for `model` by wire name or Python name → (wire name, annotation)."""
    lookup: dict[str, tuple[str, Any]] = {}
    for name, info in model.model_fields.items():
        wire = info.alias or name
        lookup[wire] = lookup[name] = (wire, info.annotation)
    return lookup


def element_type(annotation: Any) -> tuple[str, Any]:
    """What `annotation` is on the wire: ("model", cls), ("list", item), ("map", value), or
    ("scalar", annotation)."""
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin is list:
        return "list", get_args(annotation)[0]
    if origin is dict:
        return "map", get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    return "scalar", annotation


def json_path(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    path = ""
    annotation: Any = model
    for item in loc:
        shape, inner = element_type(annotation)
        if shape == "model" and isinstance(item, str) and item in wire_fields(inner):
            wire, annotation = wire_fields(inner)[item]
            path += f".{wire}"
        elif shape in ("list", "map"):
            path += f"[{item}]"
            annotation = inner
        else:  # not described by the model (e.g. an extra metadata field): keep it readable
            path += f"[{item}]" if isinstance(item, int) else f".{item}"
            annotation = Any
    return path.removeprefix(".")
