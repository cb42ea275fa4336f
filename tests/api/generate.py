"""Documents built *from the official schemas* (not from Sluice's models) with a seeded random
generator: `document(kind, rng)` makes an object the schema describes, `mutated_document(kind,
rng)` breaks one rule of such an object (a bound, a pattern, an enum, a required field, a type,
a list-map key, a CEL rule, a metadata rule...). Hypothesis supplies and shrinks the seeds; the
building itself is plain Python because it is ~50x faster than composing strategies."""

from __future__ import annotations

import copy
import random
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .official import GroupKind, api_version, kind_of, official_schema
from .regex_gen import random_match
from .structural import go_regex

Schema = dict[str, Any]
Mutation = Callable[[Any], Any]

_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_KEY = r"([a-z0-9]+(\.[a-z0-9]+)?/)?[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_ANY_TEXT = string.ascii_letters + string.digits + " -_./:é\n"


def date_time(rng: random.Random) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 4 * 10**9))
    return rng.choice(
        [
            moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            moment.isoformat(),
            moment.strftime("%Y-%m-%dT%H:%M:%S.%f-07:00"),
        ]
    )


def text(schema: Schema, rng: random.Random) -> str:
    if "enum" in schema:
        return str(rng.choice(schema["enum"]))
    if schema.get("format") == "date-time":
        return date_time(rng)
    low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
    if "pattern" in schema:
        for _ in range(20):
            candidate = random_match(schema["pattern"], rng)
            if low <= len(candidate) <= high:
                return candidate
        raise AssertionError(f"no string of length {low}..{high} for {schema['pattern']}")
    if high < 1000 and rng.random() < 0.1:
        return "a" * int(high)  # exactly at the bound
    return "".join(rng.choice(_ANY_TEXT) for _ in range(rng.randint(low, min(high, 12))))


def _format_bounds(schema: Schema) -> tuple[int, int]:
    if schema.get("format") == "int32":
        return -(2**31), 2**31 - 1
    return -(2**63), 2**63 - 1


def integer(schema: Schema, rng: random.Random) -> int:
    smallest, largest = _format_bounds(schema)
    low, high = schema.get("minimum", smallest), schema.get("maximum", largest)
    candidates = [low, high, rng.randint(low, high)]  # the bounds themselves, and between
    if "minimum" not in schema:
        candidates.append(rng.randint(-10, 10))  # everyday priorities
    return int(rng.choice(candidates))


def array(schema: Schema, rng: random.Random) -> list[Any]:
    low, high = schema.get("minItems", 0), schema.get("maxItems", 3)
    size = rng.choice([low, rng.randint(low, min(high, 3)), high])
    keys = schema.get("x-kubernetes-list-map-keys")
    items: list[Any] = []
    for _ in range(30 * size):
        if len(items) == size:
            break
        item = value(schema["items"], rng)
        if keys and any(all(o.get(k) == item.get(k) for k in keys) for o in items):
            continue  # a list-map holds one entry per key
        items.append(item)
    return items


def obj(schema: Schema, rng: random.Random) -> dict[str, Any]:
    if "additionalProperties" in schema:  # a map, like matchLabels
        low, high = schema.get("minProperties", 0), schema.get("maxProperties", 4)
        size = rng.choice([low, high, rng.randint(low, min(high, 4))])
        keys = {random_match(_LABEL_KEY, rng) for _ in range(size)}
        while len(keys) < size:
            keys.add(f"key-{len(keys)}")
        return {k: value(schema["additionalProperties"], rng) for k in keys}
    required = set(schema.get("required", []))
    return {
        name: value(sub, rng)
        for name, sub in schema.get("properties", {}).items()
        if name in required or rng.random() < 0.6
    }


def value(schema: Schema, rng: random.Random) -> Any:
    builders: dict[str, Callable[[Schema, random.Random], Any]] = {
        "string": text,
        "integer": integer,
        "array": array,
        "object": obj,
    }
    return builders[schema["type"]](schema, rng)


def metadata(rng: random.Random) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": random_match(_NAME, rng)[:253]}
    if rng.random() < 0.5:
        meta["namespace"] = random_match(_NAME, rng)[:63]
    if rng.random() < 0.5:
        meta["labels"] = {
            random_match(_LABEL_KEY, rng)[:63]: random_match(_LABEL_VALUE, rng)[:63]
            for _ in range(rng.randint(0, 3))
        }
    return meta


def document(kind: str | GroupKind, rng: random.Random) -> dict[str, Any]:
    """An object built from the official schema (it may still break a CEL rule)."""
    schema = official_schema(kind)
    doc: dict[str, Any] = {"apiVersion": api_version(kind), "kind": kind_of(kind)}
    doc["metadata"] = metadata(rng)
    for part in ("spec", "status"):
        if part in schema.get("required", []) or rng.random() < 0.8:
            doc[part] = value(schema["properties"][part], rng)
    return doc


# --- breaking one rule -------------------------------------------------------------------


def _rule_breakers(schema: Schema, present: Any) -> list[Mutation]:
    """Every way to break one rule of `schema` at a value (each returns the new value)."""
    out: list[Mutation] = []
    kind = schema.get("type")
    wrong_type: Any = 7 if kind != "integer" else "7"
    out.append(lambda _: wrong_type)
    if kind == "string":
        if "enum" in schema:
            out.append(lambda v: v.lower())
        if "maxLength" in schema:
            out.append(lambda _: "a" * (schema["maxLength"] + 1))
        if schema.get("minLength", 0) > 0:
            out.append(lambda _: "")
        if "pattern" in schema or schema.get("format") == "date-time":
            out += [
                lambda v: v + "\n",  # Go's `$` does not match before a final newline
                lambda v: "-" + v,
                lambda v: v.upper() + "_",
                lambda v: v + " ",
                lambda v: v[:4] + "/" + v[4:],
            ]
        if schema.get("format") == "date-time":
            out += [lambda _: "2024-02-30T00:00:00Z", lambda _: "2024-01-01T00:00:00"]
    if kind == "integer":
        out += [lambda _: True, lambda _: 1.5]
        smallest, largest = _format_bounds(schema)
        out.append(lambda _: schema.get("maximum", largest) + 1)
        out.append(lambda _: schema.get("minimum", smallest) - 1)
        out.append(lambda v: float(v))  # integral floats are integers in JSON: still valid
    if kind == "array":
        if "maxItems" in schema and present:
            out.append(lambda v: (v * (schema["maxItems"] + 1))[: schema["maxItems"] + 1])
        if schema.get("minItems", 0) > 0:
            out.append(lambda _: [])
        if present:
            out.append(lambda v: [*v, copy.deepcopy(v[0])])  # duplicate key / duplicate port
            out.append(lambda v: [*v, None])
    if kind == "object":
        for name in schema.get("required", []):
            out.append(_without(name))
            out.append(_null(name))  # null is pruned: still missing
        out.append(lambda v: {**v, "unknownField": "pruned"})  # pruned: still valid
        if "additionalProperties" in schema:
            high = schema.get("maxProperties")
            if high is not None:
                out.append(lambda _: {f"k{i}": "v" for i in range(high + 1)})
            if schema.get("minProperties", 0) > 0:
                out.append(lambda _: {})
        for name, sub in schema.get("properties", {}).items():
            if "default" in sub and name not in present:
                out.append(_null(name))  # null → the default
    return out


def _without(name: str) -> Mutation:
    return lambda v: {k: x for k, x in v.items() if k != name}


def _null(name: str) -> Mutation:
    return lambda v: {**v, name: None}


def _sites(schema: Schema, present: Any, path: tuple[Any, ...]) -> list[tuple[Any, Mutation]]:
    """(location, mutation) for every rule reachable inside `present`."""
    sites = [(path, m) for m in _rule_breakers(schema, present)]
    if isinstance(present, dict):
        if "additionalProperties" in schema:
            for key, item in present.items():
                sites += _sites(schema["additionalProperties"], item, (*path, key))
        for name, sub in schema.get("properties", {}).items():
            if name in present:
                sites += _sites(sub, present[name], (*path, name))
    if isinstance(present, list):
        for index, item in enumerate(present):
            sites += _sites(schema["items"], item, (*path, index))
    return sites


_METADATA_BREAKERS: list[Mutation] = [
    lambda m: {k: v for k, v in m.items() if k != "name"},
    lambda m: {**m, "name": "Not_A_Name"},
    lambda m: {**m, "name": "a" * 254},
    lambda m: {**m, "namespace": "a." + m["name"]},
    lambda m: {**m, "labels": {"-bad": "x"}},
    lambda m: {**m, "labels": {"ok": "-bad"}},
    lambda m: {**m, "labels": {"ok": 1}},
    lambda m: {**m, "managedFields": [{"manager": "kubectl"}]},  # kept as is: valid
]


def _replace(doc: Any, path: tuple[Any, ...], mutation: Mutation) -> Any:
    if not path:
        return mutation(doc)
    head, *rest = path
    clone = copy.copy(doc)
    clone[head] = _replace(doc[head], tuple(rest), mutation)
    return clone


def mutated_document(kind: str | GroupKind, rng: random.Random) -> dict[str, Any]:
    """A schema-built object with one rule broken (a few mutations stay valid on purpose:
    pruned fields, integral floats, nulls that become defaults, extra metadata)."""
    doc = document(kind, rng)
    schema = official_schema(kind)
    sites: list[tuple[Any, Mutation]] = [(("metadata",), m) for m in _METADATA_BREAKERS]
    for part in ("spec", "status"):
        if part in doc:
            sites += _sites(schema["properties"][part], doc[part], (part,))
    sites.append(((), lambda d: {k: v for k, v in d.items() if k != "spec"}))
    path, mutation = rng.choice(sites)
    return _replace(doc, path, mutation)  # type: ignore[no-any-return]


__all__ = ["document", "go_regex", "mutated_document"]
