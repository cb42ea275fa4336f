"""`Condition` (metav1.Condition) and the rules for keeping a list of them: one entry per type
(a list-map keyed by `type`), at most eight, and a `lastTransitionTime` that moves only when the
status really changes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from sluice.api._base import (
    CONDITION_REASON_PATTERN,
    CONDITION_TYPE_PATTERN,
    DateTime,
    Generation,
    KubeModel,
)
from sluice.api.rules import rule_error

MAX_CONDITIONS = 8
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """Condition contains details for one aspect of the current state of this API Resource."""

    last_transition_time: DateTime
    """When the condition last changed status."""
    message: Annotated[str, Field(max_length=32768)]
    """A human readable message about the transition; may be empty."""
    observed_generation: Generation | None = None
    """The .metadata.generation this condition was set for."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)]
    """A CamelCase programmatic identifier of the reason for the last transition."""
    status: ConditionStatus
    """True, False or Unknown."""
    type: Annotated[str, Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)]
    """The type of condition, in CamelCase or foo.example.com/CamelCase."""


def _one_per_type(conditions: list[Condition]) -> list[Condition]:
    # x-kubernetes-list-type: map keyed by `type`: the API server rejects a second entry.
    seen: set[str] = set()
    for index, condition in enumerate(conditions):
        if condition.type in seen:
            key = json.dumps({"type": condition.type})
            raise rule_error(f"Duplicate value: {key}", subpath=f"[{index}]")
        seen.add(condition.type)
    return conditions


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
    AfterValidator(_one_per_type),
]


def pending_condition(condition_type: str) -> Condition:
    """The condition a CRD puts on a fresh object: `<type>/Unknown/Pending`."""
    return Condition(
        type=condition_type,
        status="Unknown",
        reason="Pending",
        message="Waiting for controller",
        last_transition_time=EPOCH,
    )


def waiting_for_controller(condition_type: str) -> Any:
    """The field that defaults `status.conditions` to one pending condition, as the CRDs do."""
    default = pending_condition(condition_type)
    wire_form = default.model_dump(mode="json", by_alias=True, exclude_none=True)
    return Field(
        default_factory=lambda: [default.model_copy()],
        json_schema_extra={"default": [wire_form]},
    )


def merge_conditions(
    existing: Sequence[Condition], updates: Iterable[Condition]
) -> list[Condition]:
    """`existing` with each update set by type, as a status writer should write it.

    An update whose status equals the current one keeps the current `lastTransitionTime` (only a
    transition moves it); reason, message and observedGeneration always take the new values.
    New types are appended; if that makes more than eight, the ones that changed least recently
    and were not just updated are dropped, so the list stays valid."""
    merged = list(existing)
    touched: set[str] = set()
    for update in updates:
        touched.add(update.type)
        position = next((i for i, c in enumerate(merged) if c.type == update.type), None)
        if position is None:
            merged.append(update)
            continue
        current = merged[position]
        if current.status == update.status:
            update = update.model_copy(
                update={"last_transition_time": current.last_transition_time}
            )
        merged[position] = update
    while len(merged) > MAX_CONDITIONS:
        stale = [c for c in merged if c.type not in touched] or merged
        merged.remove(min(stale, key=lambda c: c.last_transition_time))
    return merged
