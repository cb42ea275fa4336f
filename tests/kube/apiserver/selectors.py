"""Label and field selectors, with the grammar of k8s.io/apimachinery/pkg/labels."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Requirement = Callable[[Mapping[str, str]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9._/-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")


class SelectorError(ValueError):
    pass


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def _requirement(term: str) -> Requirement:
    eq = _EQ_RE.match(term)
    if eq:
        key, op, value = eq.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    match = _SET_RE.match(term)
    if not match:
        raise SelectorError(f"unable to parse requirement: {term!r}")
    negated, key, op, values_text = match.groups()
    if op:
        if negated:
            raise SelectorError(f"unable to parse requirement: {term!r}")
        values = {v.strip() for v in values_text.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if negated:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def parse_label_selector(text: str | None) -> Requirement:
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` → a predicate over a label map."""
    if not text:
        return lambda labels: True
    requirements = [_requirement(t) for t in _split_top_level(text)]
    return lambda labels: all(r(labels) for r in requirements)


def parse_field_selector(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """Only what controllers use: metadata.name and metadata.namespace, with = / == / !=."""
    if not text:
        return lambda obj: True
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in text.split(","):
        match = _EQ_RE.match(term)
        if not match or match.group(1) not in ("metadata.name", "metadata.namespace"):
            raise SelectorError(f"field label not supported: {term!r}")
        field, op, value = match.groups()
        attr = field.split(".", 1)[1]

        def check(
            obj: Mapping[str, Any], attr: str = attr, op: str = op, value: str = value
        ) -> bool:
            actual = (obj.get("metadata") or {}).get(attr)
            return (actual != value) if op == "!=" else (actual == value)

        checks.append(check)
    return lambda obj: all(c(obj) for c in checks)
