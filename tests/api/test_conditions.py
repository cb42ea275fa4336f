"""merge_conditions: what a status writer needs — one condition per type, at most eight, and a
lastTransitionTime that only moves when the status changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sluice.api import Condition, merge_conditions, pending_condition

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def condition(type_: str, status: str, at: datetime, reason: str = "Reason") -> Condition:
    return Condition(
        type=type_,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message="",
        last_transition_time=at,
    )


def test_a_new_type_is_appended() -> None:
    merged = merge_conditions([pending_condition("Ready")], [condition("Accepted", "True", T0)])
    assert [c.type for c in merged] == ["Ready", "Accepted"]


def test_same_status_keeps_the_transition_time_but_takes_the_new_reason() -> None:
    existing = [condition("Accepted", "True", T0, reason="Accepted")]
    later = condition("Accepted", "True", T0 + timedelta(hours=1), reason="StillAccepted")
    (merged,) = merge_conditions(existing, [later])
    assert merged.last_transition_time == T0
    assert merged.reason == "StillAccepted"


def test_a_status_change_moves_the_transition_time() -> None:
    existing = [condition("Accepted", "Unknown", T0)]
    later = T0 + timedelta(hours=1)
    (merged,) = merge_conditions(existing, [condition("Accepted", "True", later)])
    assert (merged.status, merged.last_transition_time) == ("True", later)


def test_the_list_never_exceeds_eight_and_drops_the_stalest() -> None:
    existing = [condition(f"Type{i}", "True", T0 + timedelta(minutes=i)) for i in range(8)]
    merged = merge_conditions(existing, [condition("Fresh", "True", T0 - timedelta(days=1))])
    assert len(merged) == 8
    assert "Type0" not in {c.type for c in merged}  # the least recently changed
    assert "Fresh" in {c.type for c in merged}  # just written, so kept even though older


def test_the_input_is_not_modified() -> None:
    existing = [condition("Accepted", "Unknown", T0)]
    merge_conditions(existing, [condition("Accepted", "True", T0 + timedelta(hours=1))])
    assert existing[0].status == "Unknown"
