"""An independent, deliberately small model of what the API server does with a create request
for a custom resource with a structural schema — written from the Kubernetes docs, sharing no
code with `sluice.api`, so the two can be checked against each other:

1. `null` values are dropped (no field in these schemas is nullable);
2. defaults are applied where a field is absent and its parent object exists;
3. unknown fields are pruned;
4. the object is validated: OpenAPI v3 keywords, `x-kubernetes-list-type: map` keys, the CEL
   rules the CRDs contain, and the ObjectMeta rules the API server applies to `metadata`.

Patterns are searched with Go semantics (`$` is end of text, not "before a final newline")."""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from functools import cache
from typing import Any

Problem = tuple[str, str]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@cache
def go_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled so Python's `re.search` behaves like Go's regexp.MatchString."""
    out, in_class, escaped = [], False, False
    for char in pattern:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            out.append(char)
            escaped = True
        elif char == "[":
            in_class = True
            out.append(char)
        elif char == "]":
            in_class = False
            out.append(char)
        elif char == "$" and not in_class:
            out.append(r"\Z")
        else:
            out.append(char)
    return re.compile("".join(out))


_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[tT](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?"
    r"(?:[zZ]|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)


def is_date_time(text: str) -> bool:
    """go-openapi strfmt `date-time`: RFC 3339 with a mandatory zone and a real calendar date."""
    match = _DATE_TIME.fullmatch(text)
    if not match:
        return False
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


# --- 1-3: what happens before validation -------------------------------------------------


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def apply_defaults(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                apply_defaults(extra, item)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(schema["items"], item)


def prune(schema: dict[str, Any], value: Any, *, root: bool = False) -> None:
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties")
        if properties is not None:
            for name in [k for k in value if k not in properties]:
                del value[name]
            for name, sub in properties.items():
                # metadata is ObjectMeta, handled by the API server, not by the CRD schema
                if name in value and not (root and name == "metadata"):
                    prune(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                prune(extra, item)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            prune(schema["items"], item)


# --- 4: validation --------------------------------------------------------------------------


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "string":
        return isinstance(value, str)
    if expected == "integer":
        integral_float = isinstance(value, float) and value.is_integer()
        is_int = isinstance(value, int) and not isinstance(value, bool)
        return (is_int or integral_float) and INT64_MIN <= value <= INT64_MAX
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "boolean":
        return isinstance(value, bool)
    raise AssertionError(f"type {expected!r} not modelled")


def _cel(rule: str, value: Any) -> bool:
    """The CEL rules that occur in the official CRDs, by their exact text."""
    if rule == "self.kind != 'Service' || has(self.port)":
        return value.get("kind") != "Service" or "port" in value
    if rule == "self.all(p1, self.exists_one(p2, p1.number==p2.number))":
        numbers = [p.get("number") for p in value]
        return all(numbers.count(n) == 1 for n in numbers)
    raise AssertionError(f"CEL rule not modelled by the test validator: {rule}")


KNOWN_KEYWORDS = {
    "description", "type", "properties", "required", "items", "additionalProperties",
    "enum", "pattern", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems",
    "minProperties", "maxProperties", "format", "default", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-validations",
}  # fmt: skip


def validate(schema: dict[str, Any], value: Any, path: str) -> list[Problem]:
    unknown = set(schema) - KNOWN_KEYWORDS
    assert not unknown, f"schema keyword(s) not modelled by the test validator: {unknown}"
    if "type" in schema and not _type_ok(schema["type"], value):
        return [(path, f"must be of type {schema['type']}")]
    problems: list[Problem] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append((path, "Unsupported value"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append((path, "Too long"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append((path, "too short"))
        if "pattern" in schema and not go_regex(schema["pattern"]).search(value):
            problems.append((path, "pattern"))
        if schema.get("format") == "date-time" and not is_date_time(value):
            problems.append((path, "date-time"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        # The API server checks an integer against its format's range (kube-openapi's
        # IsValueValidAgainstRange) even where the schema sets no bounds.
        if schema.get("format") == "int32" and not -(2**31) <= value <= 2**31 - 1:
            problems.append((path, "must be of type int32"))
        if "maximum" in schema and value > schema["maximum"]:
            problems.append((path, "maximum"))
        if "minimum" in schema and value < schema["minimum"]:
            problems.append((path, "minimum"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append((path, "Too many"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append((path, "minItems"))
        for index, item in enumerate(value):
            problems += validate(schema["items"], item, f"{path}[{index}]")
        if schema.get("x-kubernetes-list-type") == "map" and not problems:
            keys = schema["x-kubernetes-list-map-keys"]
            seen: set[str] = set()
            for index, item in enumerate(value):
                key = json.dumps([item.get(k) for k in keys])
                if key in seen:
                    problems.append((f"{path}[{index}]", "Duplicate value"))
                seen.add(key)
    if isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            problems.append((path, "Too many"))
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            problems.append((path, "minProperties"))
        for name in schema.get("required", []):
            if name not in value:
                problems.append((_join(path, name), "Required value"))
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                problems += validate(sub, value[name], _join(path, name))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                problems += validate(extra, item, f"{path}[{key}]")
    # CEL rules run on values that passed the OpenAPI checks.
    if not problems:
        for rule in schema.get("x-kubernetes-validations", []):
            if not _cel(rule["rule"], value):
                problems.append((path, rule["message"]))
    return problems


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# --- ObjectMeta, validated by the API server for every custom resource --------------------

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_PART = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"


def _subdomain(text: str) -> bool:
    return len(text) <= 253 and re.fullmatch(_SUBDOMAIN, text) is not None


def _label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not _subdomain(prefix):
        return False
    return len(name) <= 63 and re.fullmatch(_NAME_PART, name) is not None


def _label_value(value: str) -> bool:
    return len(value) <= 63 and (value == "" or re.fullmatch(_NAME_PART, value) is not None)


def validate_metadata(metadata: Any) -> list[Problem]:
    if not isinstance(metadata, dict):
        return [("metadata", "must be of type object")]
    problems: list[Problem] = []
    name = metadata.get("name")
    if name is None:
        problems.append(("metadata.name", "Required value"))
    elif not isinstance(name, str) or not _subdomain(name):
        problems.append(("metadata.name", "Invalid value"))
    namespace = metadata.get("namespace")
    if namespace is not None and not (
        isinstance(namespace, str) and len(namespace) <= 63 and re.fullmatch(_LABEL, namespace)
    ):
        problems.append(("metadata.namespace", "Invalid value"))
    labels = metadata.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _label_key(k) and _label_value(v)
        for k, v in labels.items()
    ):
        problems.append(("metadata.labels", "Invalid value"))
    return problems


def admit(schema: dict[str, Any], doc: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """(the object as it would be stored, the problems that would reject it)."""
    obj = drop_nulls(doc)
    apply_defaults(schema, obj)
    prune(schema, obj, root=True)
    problems = validate_metadata(obj.get("metadata"))
    problems += validate({**schema, "properties": _without_metadata(schema)}, obj, "")
    return obj, problems


def _without_metadata(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema["properties"].items() if k != "metadata"}
