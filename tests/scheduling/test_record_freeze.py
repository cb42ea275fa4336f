"""A finished request's scheduling record is kept frozen — one flat tuple — and reads back as
exactly what the scheduler recorded; the garbage collector stops tracking it at once."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointRegistry, EndpointState
from sluice.scheduling.record import (
    CycleRecord,
    ProfileRecord,
    freeze,
    scored_candidates,
    thaw,
)

ENDPOINTS = [Endpoint(f"pod-{i}", f"10.0.0.{i + 1}", 8000) for i in range(6)]


def states() -> list[EndpointState]:
    registry = EndpointRegistry()
    registry.set_endpoints(ENDPOINTS)
    return list(registry.snapshot())


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
# each step: (kind, keep: how many of the current candidates a filter keeps, raw scores seed)
step = st.tuples(st.sampled_from(["filter", "scorer", "picker"]), st.integers(0, 6), finite)
profile = st.tuples(st.text(max_size=8), st.lists(step, max_size=8), finite)


def record(
    profiles: list[tuple[str, list[tuple[str, int, float]], float]],
) -> tuple[CycleRecord, tuple[object, ...]]:
    """A record made through `ProfileRecord.ran`, and the nested tuples it should thaw to."""
    pool = states()
    cycle = CycleRecord(primary=profiles[0][0] if profiles else None, duration_s=1e-4)
    expected = []
    for name, steps, took in profiles:
        candidates: list[EndpointState] = list(pool)
        live = ProfileRecord(name, candidates)
        inputs = tuple(s.endpoint.hostport for s in candidates)
        seen = []
        for i, (kind, keep, seed) in enumerate(steps):
            if kind == "filter":
                candidates = candidates[:keep]  # a new list, as a filter returns
            names = tuple(s.endpoint.hostport for s in candidates)
            raw = tuple(seed + j for j in range(len(candidates))) if kind == "scorer" else ()
            picked = tuple(range(min(2, len(candidates)))) if kind == "picker" else ()
            weight = 0.5 if kind == "scorer" else 0.0
            live.ran(kind, f"{kind}-type", f"{kind}-{i}", i * 1e-6, candidates, weight, raw, picked)
            seen.append((kind, f"{kind}-type", f"{kind}-{i}", i * 1e-6, names, weight, raw, picked))
        live.totals = tuple(float(j) for j in range(len(candidates)))
        live.duration_s = took
        cycle.profiles.append(live)
        expected.append((name, inputs, tuple(seen), live.totals, took))
    return cycle, (tuple(expected), cycle.primary, cycle.duration_s)


@settings(max_examples=200, deadline=None)
@given(st.lists(profile, max_size=3))
def test_a_frozen_record_thaws_to_what_the_scheduler_recorded(profiles) -> None:  # type: ignore[no-untyped-def]
    cycle, expected = record(profiles)
    flat, size = freeze(cycle)
    assert thaw(flat) == expected
    # the live record and the frozen one agree on what the totals are aligned with
    for live, frozen in zip(cycle.profiles, thaw(flat)[0]):
        assert live.scored == scored_candidates(frozen)
    assert size >= 56 + 8 * len(flat)  # at least the tuple and its references


def test_the_collector_stops_tracking_a_frozen_record_at_its_first_collection() -> None:
    cycle, _ = record(
        [("default", [("scorer", 0, 0.5), ("scorer", 0, 0.2), ("picker", 0, 0)], 1e-4)]
    )
    kept = [freeze(cycle)[0] for _ in range(3)]
    assert all(gc.is_tracked(flat) for flat in kept)  # as every new tuple
    gc.collect()
    assert not any(gc.is_tracked(flat) for flat in kept)
