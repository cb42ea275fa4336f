"""Client-chosen label values: always printable, and upstream's cap of 1,000 distinct values per
label, then `other`; configured model names are pinned outside the cap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sluice.util.labels import (
    MAX_DISTINCT_VALUES,
    MAX_VALUE_CHARS,
    OVERFLOW,
    BoundedLabel,
    ClientLabels,
    printable,
)


def test_header_bytes_that_are_not_utf8_export_as_replacement_characters() -> None:
    smuggled = b"tenant-\xff\xfe".decode("utf-8", "surrogateescape")  # how the proxy reads them
    assert printable(smuggled) == "tenant-\ufffd\ufffd"
    assert printable("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert printable(b"caf\xc3\xa9".decode("utf-8", "surrogateescape")) == "café"


def test_a_value_longer_than_the_limit_exports_as_other() -> None:
    assert printable("x" * MAX_VALUE_CHARS) == "x" * MAX_VALUE_CHARS
    assert printable("x" * (MAX_VALUE_CHARS + 1)) == OVERFLOW


@given(st.text())
def test_every_value_becomes_encodable_and_bounded(value: str) -> None:
    exported = printable(value)
    exported.encode("utf-8")  # never raises
    assert len(exported) <= MAX_VALUE_CHARS


def test_after_a_thousand_distinct_values_new_ones_are_other_and_old_ones_stay() -> None:
    guard = BoundedLabel()
    assert [guard.bound(f"t{i}") for i in range(MAX_DISTINCT_VALUES)] == [
        f"t{i}" for i in range(MAX_DISTINCT_VALUES)
    ]
    assert guard.bound("one-too-many") == OVERFLOW
    assert guard.bound("t0") == "t0"  # admitted values keep their series (paired inc/dec)
    assert guard.bound("") == ""  # the empty value is free
    assert guard.admitted == MAX_DISTINCT_VALUES


@given(st.lists(st.text(max_size=3), max_size=60), st.integers(1, 10))
def test_no_more_than_the_limit_of_distinct_values_is_ever_exported(
    values: list[str], limit: int
) -> None:
    guard = BoundedLabel(limit)
    exported = {guard.bound(v) for v in values} - {OVERFLOW, ""}
    assert len(exported) <= limit


def test_a_client_sending_other_does_not_take_a_slot() -> None:
    guard = BoundedLabel(1)
    assert guard.bound(OVERFLOW) == OVERFLOW
    assert guard.bound("real") == "real"


def test_pinned_model_names_are_exported_even_when_the_cap_is_full() -> None:
    labels = ClientLabels(limit=2)
    labels.pin_models(["llama-3-8b-v2"])
    assert [labels.model(m) for m in ("a", "b", "c")] == ["a", "b", OVERFLOW]
    assert labels.model("llama-3-8b-v2") == "llama-3-8b-v2"
    assert labels.fairness_id("tenant") == "tenant"  # fairness ids have their own cap
