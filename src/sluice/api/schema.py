"""The openAPIV3Schema of a resource, derived from its pydantic model.

pydantic writes JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: no `$ref`, no
`anyOf` for optional fields (absence is optionality), `enum` instead of `const`, no titles, and
`x-kubernetes-*` extensions (which the models carry in `json_schema_extra`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# apiVersion / kind / metadata are the same in every CRD and are not described by the models.
_TYPE_META = {
    "apiVersion": {
        "description": (
            "APIVersion defines the versioned schema of this representation of an object.\n"
            "Servers should convert recognized schemas to the latest internal value, and\n"
            "may reject unrecognized values.\n"
            "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
            "api-conventions.md#resources"
        ),
        "type": "string",
    },
    "kind": {
        "description": (
            "Kind is a string value representing the REST resource this object represents.\n"
            "Servers may infer this from the endpoint the client submits requests to.\n"
            "Cannot be updated.\n"
            "In CamelCase.\n"
            "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
            "api-conventions.md#types-kinds"
        ),
        "type": "string",
    },
    "metadata": {"type": "object"},
}


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with refs inlined and JSON-Schema-only constructs rewritten for Kubernetes."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:  # inline the definition; keys beside the $ref (description) win
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    options = node.pop("anyOf", None)
    if options is not None:  # `X | None`: Kubernetes expresses "optional" by absence
        present = [o for o in options if not _is_null(o)]
        if len(present) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {options}")
        node = {**_structural(present[0], defs), **node}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    node.pop("title", None)
    if node.get("default", ...) is None:
        node.pop("default")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "default":
            out[key] = value  # data, not schema
        else:
            out[key] = _structural(value, defs)
    return out


def open_api_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The openAPIV3Schema of a top-level resource model (InferencePool, ...)."""
    raw = model.model_json_schema(by_alias=True)
    schema = _structural({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    own = {k: v for k, v in schema["properties"].items() if k not in _TYPE_META}
    schema["properties"] = {**_TYPE_META, **own}
    # metadata is validated by the API server itself, not by the CRD schema.
    required = [name for name in schema.get("required", []) if name not in _TYPE_META]
    schema.pop("required", None)
    if required:
        schema["required"] = required
    return schema
