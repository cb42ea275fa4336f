"""The one entry point from a decoded YAML/JSON document to a typed resource, and back.

Documents are treated as the API server treats a create request for a structural schema:
`null` values are dropped (no field here is nullable), unknown fields are pruned (ignored; ask
`pruned_fields` to report them), defaults are applied, then everything is validated and all
problems are reported together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from sluice.api.errors import ResourceError, problems_of
from sluice.api.inferencemodelrewrite import InferenceModelRewrite, LegacyInferenceModelRewrite
from sluice.api.inferenceobjective import InferenceObjective, LegacyInferenceObjective
from sluice.api.inferencepool import InferencePool

# The legacy classes subclass the llm-d.ai ones, so these unions cover both groups.
Resource = InferencePool | InferenceObjective | InferenceModelRewrite
ResourceType = type[InferencePool] | type[InferenceObjective] | type[InferenceModelRewrite]

RESOURCE_TYPES: dict[tuple[str, str], ResourceType] = {
    (cls.API_VERSION, cls.KIND): cls
    for cls in (
        InferencePool,
        InferenceObjective,
        InferenceModelRewrite,
        LegacyInferenceObjective,
        LegacyInferenceModelRewrite,
    )
}


def without_nulls(value: Any) -> Any:
    """`value` with every `key: null` removed from its objects, as the API server prunes them
    before defaulting."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def resource_type(doc: Mapping[str, Any]) -> ResourceType:
    """The model for a document's apiVersion and kind; `ResourceError` if Sluice has none."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    missing = [
        (f, "Required value") for f, v in (("apiVersion", api_version), ("kind", kind)) if not v
    ]
    if missing:
        raise ResourceError(str(kind or "resource"), None, missing)
    cls = RESOURCE_TYPES.get((str(api_version), str(kind)))
    if cls is None:
        supported = ", ".join(f"{k} ({v})" for v, k in RESOURCE_TYPES)
        message = (
            f'Unsupported value: "{kind}" (apiVersion "{api_version}"): '
            f"supported kinds are {supported}"
        )
        raise ResourceError(str(kind), _name_of(doc), [("kind", message)])
    return cls


def _name_of(doc: Mapping[str, Any]) -> str | None:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) else None


def parse_resource(doc: Mapping[str, Any]) -> Resource:
    """A typed, defaulted resource from a decoded manifest, or `ResourceError` listing every
    problem with its field path, as `kubectl apply` would."""
    if not isinstance(doc, Mapping):
        raise ResourceError("resource", None, [("", "Invalid value: must be an object")])
    cls = resource_type(doc)
    try:
        return cls.model_validate(without_nulls(doc))
    except ValidationError as error:
        group = cls.API_VERSION.split("/")[0]
        raise ResourceError(f"{cls.KIND}.{group}", _name_of(doc), problems_of(cls, error)) from None


def to_dict(resource: Resource) -> dict[str, Any]:
    """The wire form of a resource: camelCase, JSON types, defaults included, unset fields
    omitted. `parse_resource(to_dict(r)) == r`."""
    return resource.model_dump(mode="json", by_alias=True, exclude_none=True)
