"""Sluice accepts exactly the objects the official schemas accept, reports the same field paths,
and stores the same defaulted object. Objects are generated from the official CRD files (read
from ../shared at test time) and checked by an independent validator (`structural.py`)."""

from __future__ import annotations

import os
import random
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from sluice.api import ResourceError, parse_resource, to_dict

from .generate import document, mutated_document
from .official import RESOURCES, GroupKind, official_schema
from .structural import admit, is_date_time

# SLUICE_API_EXAMPLES lowers the count for quick local iterations; CI uses the default.
EXAMPLES_PER_KIND = int(os.environ.get("SLUICE_API_EXAMPLES", "1000"))


def comparable(value: Any) -> Any:
    """Normalise what may legitimately differ in spelling: timestamps and integral floats."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, str) and is_date_time(value):
        return datetime.fromisoformat(value.upper())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def stored_by_sluice(doc: dict[str, Any]) -> tuple[dict[str, Any] | None, set[str]]:
    try:
        return to_dict(parse_resource(doc)), set()
    except ResourceError as error:
        # The API server reports every label problem at `metadata.labels`, pydantic a type error
        # at the key; both name the field.
        return None, {
            "metadata.labels" if path.startswith("metadata.labels") else path
            for path, _ in error.problems
        }


def check_agreement(doc: dict[str, Any]) -> bool:
    """Assert Sluice and the schema agree on `doc`; return whether it was accepted."""
    resource = (doc["apiVersion"].split("/")[0], doc["kind"])
    expected, problems = admit(official_schema(resource), doc)
    stored, sluice_paths = stored_by_sluice(doc)
    assert (stored is not None) == (not problems), (
        f"schema problems {problems} but Sluice {'accepted' if stored else sluice_paths}"
    )
    if stored is None:
        # Sluice names real problems only; it may name fewer (pydantic does not look inside a
        # list that is already too long).
        assert sluice_paths and sluice_paths <= {path for path, _ in problems}
        return False
    # Defaults: the object Sluice would store is the one the API server would store.
    for part in ("spec", "status"):
        assert comparable(stored.get(part)) == comparable(expected.get(part)), part
    meta = stored["metadata"]
    for key in ("name", "namespace"):
        assert meta.get(key) == expected["metadata"].get(key)
    assert meta["labels"] == expected["metadata"].get("labels", {})
    return True


@pytest.mark.parametrize("kind", RESOURCES, ids=lambda r: f"{r[1]}.{r[0]}")
def test_sluice_accepts_exactly_what_the_schema_accepts(kind: GroupKind) -> None:
    verdicts: Counter[bool] = Counter()
    official_schema(kind)  # skip early if the shared specs are absent

    @settings(
        max_examples=EXAMPLES_PER_KIND,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(seed=st.integers(0, 2**64), broken=st.integers(0, 2))
    def agree(seed: int, broken: int) -> None:
        rng = random.Random(seed)
        doc = mutated_document(kind, rng) if broken else document(kind, rng)
        note(f"document: {doc}")
        verdicts[check_agreement(doc)] += 1

    agree()
    assert sum(verdicts.values()) >= EXAMPLES_PER_KIND
    assert verdicts[True] >= EXAMPLES_PER_KIND // 10, verdicts
    assert verdicts[False] >= EXAMPLES_PER_KIND // 4, verdicts
