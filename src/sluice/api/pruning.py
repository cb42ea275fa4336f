"""`pruned_fields`: which fields of a manifest Sluice (like the API server) silently drops.

Pruning is the faithful behaviour, so `parse_resource` never fails on an unknown field; a
manifest-directory source can use this to warn about a typo like `spec.targetPort`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice.api.fieldpaths import element_type, wire_fields
from sluice.api.resources import resource_type


def pruned_fields(doc: Mapping[str, Any]) -> list[str]:
    """JSON paths of the fields in `doc` that no schema describes, e.g. `spec.targetPort`.
    Raises `ResourceError` if the kind is not one Sluice reads."""
    found: list[str] = []
    _collect(resource_type(doc), doc, "", found)
    return found


def _collect(annotation: Any, value: Any, path: str, found: list[str]) -> None:
    shape, inner = element_type(annotation)
    if shape == "model" and isinstance(value, Mapping):
        known = wire_fields(inner)
        keeps_unknown = inner.model_config.get("extra") == "allow"
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if key in known:
                _collect(known[key][1], item, child, found)
            elif not keeps_unknown:
                found.append(child)
    elif shape == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            _collect(inner, item, f"{path}[{index}]", found)
    elif shape == "map" and isinstance(value, Mapping):
        for key, item in value.items():
            _collect(inner, item, f"{path}[{key}]", found)
