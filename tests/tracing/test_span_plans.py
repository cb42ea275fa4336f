"""A traced request's plugin spans are read straight from its frozen scheduling record, through
a plan kept per layout of the record (`spans._CyclePlan`): whatever records came before, each
request's spans are what its own record says — one span per profile, one for the filter chain
(if any filter ran), one per scorer and per picker in their order, laid end to end from the
release."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointRegistry, EndpointState
from sluice.receipts.model import Receipt
from sluice.scheduling.record import CycleRecord, ProfileRecord, thaw
from sluice.tracing.spans import FILTER, PICK, PROFILE, SCORE, Span, request_spans

ENDPOINTS = [Endpoint(f"pod-{i}", f"10.0.0.{i + 1}", 8000) for i in range(4)]
RELEASED = 10.0


def states() -> list[EndpointState]:
    registry = EndpointRegistry()
    registry.set_endpoints(ENDPOINTS)
    return list(registry.snapshot())


# each step: kind, plugin name, how many of the current candidates a filter keeps, a duration
step = st.tuples(
    st.sampled_from(["filter", "scorer", "picker"]),
    st.sampled_from(["a", "b"]),
    st.integers(1, 4),
    st.sampled_from([1e-6, 2e-6]),
)
profile = st.tuples(st.sampled_from(["p", "q"]), st.lists(step, max_size=4))


def receipt_of(profiles: list[tuple[str, list[tuple[str, str, int, float]]]]) -> Receipt:
    cycle = CycleRecord(primary=profiles[0][0] if profiles else None)
    for name, steps in profiles:
        candidates = states()
        live = ProfileRecord(name, candidates)
        # the filters first, as the scheduler runs them (the totals are the survivors')
        for kind, plugin, keep, took in sorted(steps, key=lambda s: s[0] != "filter"):
            if kind == "filter":
                candidates = candidates[:keep]  # a new list, as a filter returns
            n = len(candidates)
            raw = tuple(0.1 * j for j in range(n)) if kind == "scorer" else ()
            picked = tuple(range(min(keep, n))) if kind == "picker" else ()
            weight = 0.5 if plugin == "a" else 0.25
            live.ran(kind, f"{plugin}-type", plugin, took, candidates, weight, raw, picked)
        live.totals = tuple(0.3 * j for j in range(len(candidates)))
        live.duration_s = 5e-6
        cycle.profiles.append(live)
    receipt = Receipt(1, "req-1", None, "m", 0, "tenant", 3, RELEASED)
    receipt.released_at, receipt.outcome, receipt.cycle = RELEASED, "completed", cycle
    receipt.finish(RELEASED + 1.0)
    return receipt


def expected_plugin_spans(receipt: Receipt) -> list[tuple[str, tuple, float, float]]:
    """The profile spans and their children as the thawed record says them."""
    assert receipt.frozen is not None
    out = []
    at = RELEASED
    for name, inputs, steps, totals, took in thaw(receipt.frozen)[0]:
        children = []
        t = at
        filters = [s for s in steps if s[0] == "filter"]
        if filters:
            chain = 0.0
            for s in filters:
                chain += s[3]
            children.append((FILTER.name, (len(inputs), len(filters[-1][4])), t, t + chain))
            t += chain
        for kind, type_name, plugin, step_s, names, weight, _, picked in steps:
            if kind == "scorer":
                scored = (type_name, plugin, weight, len(names))
                children.append((SCORE.name, scored, t, t + step_s))
            elif kind == "picker":
                top = tuple(names[i] for i in picked)
                chosen = (len(names), top, tuple(totals[i] for i in picked))
                children.append((PICK.name, chosen, t, t + step_s))
            else:
                continue
            t += step_s
        end = max(at + took, t)
        out += [(PROFILE.name, (name,), at, end), *children]
        at = end
    return out


def plugin_spans(spans: list[Span]) -> list[tuple[str, tuple, float, float]]:
    names = {PROFILE.name, FILTER.name, SCORE.name, PICK.name}
    return [(s[0].name, s[4], s[2], s[3]) for s in spans if s[0].name in names]


@settings(max_examples=300, deadline=None)
@given(st.lists(profile, max_size=2))
def test_each_request_gets_the_plugin_spans_its_own_record_says(profiles) -> None:  # type: ignore[no-untyped-def]
    # (the examples run in one process: the plans of earlier records, many of the same length
    # and a different layout, are in the table when each is read)
    receipt = receipt_of(profiles)
    assert plugin_spans(request_spans(receipt).listed()) == expected_plugin_spans(receipt)


def test_records_of_one_length_and_different_layouts_get_their_own_spans() -> None:
    """Same length, a few fields apart: two scorers in either order, the profile's name; a
    scorer where a picker was (neither with scores or picks)."""
    variants = [
        [("p", [("scorer", "a", 1, 1e-6), ("scorer", "b", 1, 1e-6)])],
        [("p", [("scorer", "b", 1, 1e-6), ("scorer", "a", 1, 1e-6)])],
        [("q", [("scorer", "b", 1, 1e-6), ("scorer", "a", 1, 1e-6)])],
    ]
    receipts = [receipt_of(v) for v in variants]
    assert len({len(r.frozen or ()) for r in receipts}) == 1
    for receipt in receipts * 2:
        assert plugin_spans(request_spans(receipt).listed()) == expected_plugin_spans(receipt)

    empty_scorer, empty_picker = receipt_of([]), receipt_of([])
    for receipt, kind in ((empty_scorer, "scorer"), (empty_picker, "picker")):
        live = ProfileRecord("p", [])
        live.ran(kind, "x-type", "x", 1e-6, [], 0.0, (), ())
        receipt.cycle, receipt.frozen = CycleRecord([live], "p"), None
        receipt.finish(RELEASED + 1.0)
    assert len(empty_scorer.frozen or ()) == len(empty_picker.frozen or ())
    for receipt in (empty_scorer, empty_picker, empty_scorer):
        assert plugin_spans(request_spans(receipt).listed()) == expected_plugin_spans(receipt)
