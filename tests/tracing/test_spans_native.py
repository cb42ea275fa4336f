"""The span builder's native part (`tracing/_spans.c`) makes what the Python builder makes of the
same receipt — its spans' instants, the values of the spans its form leaves open, and which
form — for every kind of request: held or not, dispatched or not, answered or not, with or
without fallbacks, rejected or failed, over any layout of scheduling record; and it tells a
record of a plan's layout as the Python check does."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.receipts.model import Receipt
from sluice.room.core import Hold
from sluice.tracing import spans
from sluice.tracing.spans import _NO_CYCLE, Spans, _built, _cycle_plan, request_spans
from tracing.test_encoding import finished_receipts
from tracing.test_span_plans import profile, receipt_of

NATIVE = spans.NATIVE
needs_native = pytest.mark.skipif(NATIVE is None, reason="the span extension is not built")


def test_the_extension_is_built_where_a_compiler_is() -> None:
    """`make` builds it (setup.py); without it the Python builder serves, at several times the
    CPU a traced request."""
    assert NATIVE is not None


@contextmanager
def python_only() -> Iterator[None]:
    saved, spans.NATIVE = spans.NATIVE, None
    try:
        yield
    finally:
        spans.NATIVE = saved


def both(receipt: Receipt) -> tuple[Spans, Spans]:
    native = request_spans(receipt)
    with python_only():
        python = request_spans(receipt)
    return native, python


def assert_same(receipt: Receipt) -> None:
    native, python = both(receipt)
    assert native.form is python.form
    assert native.instants == python.instants
    assert native.values == python.values
    assert native.error == python.error
    assert native.listed() == python.listed()
    # and the builder alone, beside the plan lookup
    flat = receipt.frozen_record()
    plan = _NO_CYCLE if flat is None else _cycle_plan(flat)
    assert NATIVE is not None
    assert NATIVE.build(receipt, flat, plan.native) == tuple(_built(receipt, flat, plan))


@needs_native
def test_the_directors_own_receipts_build_the_same_spans() -> None:
    for receipt in asyncio.run(finished_receipts()):
        assert_same(receipt)


HOLD = Hold(9.5, {"10.0.0.1:8000": "pending-prefill"}, {}, False, True)
times = st.floats(0.0, 5.0, allow_nan=False)
endpoints = st.sampled_from(["10.0.0.1:8000", "10.0.0.2:8000", "[::1]:8000"])


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    profiles=st.lists(profile, max_size=3),
    held=st.sampled_from(["hold", "waited", "no"]),
    dispatched=st.none() | times,
    ttft=st.none() | times,
    fallbacks=st.lists(endpoints, max_size=2),
    outcome=st.sampled_from(["completed", "rejected", "upstream_error", "evicted", None]),
    released=st.booleans(),
    finished=st.booleans(),
    tokens=st.none() | st.integers(0, 2**70),
)
def test_any_receipt_builds_the_same_spans(
    profiles: list,
    held: str,
    dispatched: float | None,
    ttft: float | None,
    fallbacks: list[str],
    outcome: str | None,
    released: bool,
    finished: bool,
    tokens: int | None,
) -> None:
    receipt = receipt_of(profiles)
    if held == "hold":
        receipt.hold = HOLD
    elif held == "waited":
        receipt.queued_at -= 0.5  # waited with room to spare: `queue-order`
    if not released:
        receipt.released_at = None
    if not finished:
        receipt.finished_at = None
    receipt.outcome, receipt.reason = outcome, "queue_full" if outcome == "rejected" else None
    if dispatched is not None:
        receipt.endpoint = "10.0.0.4:8000"
        receipt.dispatched_at = receipt.queued_at + dispatched
        receipt.fallbacks = tuple(fallbacks)
        receipt.prefix_match_tokens = tokens
        receipt.ttft_s = ttft
        receipt.prompt_tokens, receipt.completion_tokens = tokens, 7
    assert_same(receipt)


@needs_native
@settings(max_examples=200, deadline=None)
@given(first=st.lists(profile, min_size=1, max_size=2), second=st.lists(profile, max_size=2))
def test_a_record_fits_a_plan_as_the_python_check_says(first: list, second: list) -> None:
    a, b = receipt_of(first).frozen_record(), receipt_of(second).frozen_record()
    assert a is not None and b is not None
    plan = _cycle_plan(a)
    if len(b) != len(a):  # plans are looked up by length first
        b = copy.copy(a)
    assert plan.fits(b) == (plan.check(b) == plan.expected)
    assert plan.fits(a)
    for at in plan.at:  # a record that differs anywhere the plan reads is another layout
        other = (*a[:at], object(), *a[at + 1 :])
        assert not plan.fits(other) and plan.check(other) != plan.expected


@needs_native
def test_what_is_not_a_receipt_or_a_plan_raises_instead_of_building() -> None:
    assert NATIVE is not None
    receipt = receipt_of([("p", [("scorer", "a", 1, 1e-6), ("picker", "a", 1, 1e-6)])])
    flat = receipt.frozen_record()
    with pytest.raises(AttributeError):
        NATIVE.build(object(), None, ())
    with pytest.raises(TypeError):
        NATIVE.build(receipt, flat, (("not", "a plan"),))
    with pytest.raises(IndexError):  # a plan of another, longer record
        NATIVE.build(receipt, flat, (((len(flat or ()) + 5,), (), ()),))
