"""One request's receipt: the raw inputs of its decision as the director had them, rendered as a
plain JSON-able dict only when someone reads it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.room.core import Hold
from sluice.scheduling.record import CycleRecord, ProfileRecord

# What `footprint` counts (CPython 3.11, 64-bit; measured with tracemalloc by
# benchmarks/receipts_core.py, which checks the sum against the ring's real memory, and
# rounded up). A list several steps share is counted once per profile, a hold (shared by the
# receipts of the requests it held) at each receipt, scores as distinct floats: an upper bound.
RECEIPT_BYTES = 480  # the receipt, its floats and its share of small ints and tuples
CYCLE_BYTES = 200  # a CycleRecord with its list of profiles
PROFILE_BYTES = 200  # a ProfileRecord with its list of steps
STEP_BYTES = 128  # a PluginStep
LIST_BYTES = 64  # a list's header
SLOT_BYTES = 8  # a reference in a list or tuple
FLOAT_BYTES = 32  # a float a scorer computed, with its reference
STR_BYTES = 56  # a str's header (its text is counted by length)
HOLD_ENDPOINT_BYTES = 640  # per endpoint of a hold: its rule and the inputs the rules read


class Receipt:
    """Mutable while the request is open; kept as is when it ends (the lists it holds are the
    ones the scheduler produced, which nothing changes afterwards) and rendered (`as_dict`) when
    read."""

    __slots__ = (
        "completion_tokens",
        "cycle",
        "dispatched_at",
        "endpoint",
        "error",
        "fairness_id",
        "fallbacks",
        "finished_at",
        "hold",
        "inputs",
        "model",
        "objective",
        "outcome",
        "prefix_match_tokens",
        "priority",
        "prompt_tokens",
        "prompt_tokens_estimate",
        "queued_at",
        "reason",
        "released_at",
        "request_id",
        "seq",
        "traceparent",
        "ttft_s",
    )

    def __init__(
        self,
        seq: int,
        request_id: str,
        objective: str | None,
        model: str,
        priority: int,
        fairness_id: str,
        prompt_tokens_estimate: int,
        queued_at: float,
        traceparent: str | None = None,
    ) -> None:
        self.seq = seq
        self.traceparent = traceparent  # W3C trace context of the incoming request
        self.request_id = request_id
        self.objective = objective
        self.model = model
        self.priority = priority
        self.fairness_id = fairness_id
        self.prompt_tokens_estimate = prompt_tokens_estimate
        self.queued_at = queued_at
        self.released_at: float | None = None
        self.hold: Hold | None = None
        self.cycle: CycleRecord | None = None
        self.inputs: dict[str, dict[str, Any]] | None = None
        self.endpoint: str | None = None
        self.fallbacks: tuple[Endpoint, ...] = ()
        self.dispatched_at: float | None = None
        self.prefix_match_tokens: int | None = None
        self.outcome: str | None = None
        self.error: str | None = None
        self.reason: str | None = None
        self.finished_at: float | None = None
        self.ttft_s: float | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    @property
    def waited_s(self) -> float | None:
        end = self.released_at if self.released_at is not None else self.finished_at
        return None if end is None else end - self.queued_at

    def held_by(self) -> str | None:
        """The room rule that held the request, `queue-order` when it waited behind others with
        room to spare, None when it did not wait."""
        if self.hold is not None:
            return self.hold.rule
        waited = self.waited_s
        # a millisecond of slack: the release of a request that found room can trail its
        # arrival by the pump that released it
        return "queue-order" if waited is not None and waited > 0.001 else None

    def footprint(self) -> int:
        """An upper bound of the bytes this finished receipt keeps alive that nothing else does
        (the endpoints it names are shared with the registry; a hold is shared by the receipts
        of the requests it held, and counted at each)."""
        size = RECEIPT_BYTES + SLOT_BYTES * len(self.fallbacks)
        for text in (self.request_id, self.traceparent, self.error):
            if text is not None:
                size += STR_BYTES + len(text)
        cycle = self.cycle
        if cycle is not None:
            size += CYCLE_BYTES
            for profile in cycle.profiles:
                size += PROFILE_BYTES + LIST_BYTES + FLOAT_BYTES * len(profile.totals)
                previous = profile.input_candidates  # the placeable ones: a list of this request
                size += LIST_BYTES + SLOT_BYTES * len(previous)
                for step in profile.steps:
                    size += STEP_BYTES
                    if step.candidates is not previous:  # a filter's survivors: a new list
                        previous = step.candidates
                        size += LIST_BYTES + SLOT_BYTES * len(step.candidates)
                    if step.raw:
                        size += LIST_BYTES + FLOAT_BYTES * len(step.raw)
                    if step.picked:
                        size += LIST_BYTES + SLOT_BYTES * len(step.picked)
        if self.hold is not None:
            size += HOLD_ENDPOINT_BYTES * len(self.hold.rules)
        return size

    def as_dict(self) -> dict[str, Any]:
        hold = self.hold
        return {
            "seq": self.seq,
            "request_id": self.request_id,
            "objective": self.objective,
            "model": self.model,
            "priority": self.priority,
            "fairness_id": self.fairness_id,
            "queued_at": self.queued_at,
            "waited_s": self.waited_s,
            "held_by": self.held_by(),
            "hold": None
            if hold is None
            else {
                "at": hold.at,
                "rules": hold.rules,
                "lower_band": hold.lower_band,
                "contended": hold.contended,
                "background": hold.background,
                "inputs": hold.inputs,
            },
            "inputs": self.inputs,
            "scheduling": None if self.cycle is None else cycle_dict(self.cycle),
            "endpoint": self.endpoint,
            "fallbacks": [e.hostport for e in self.fallbacks],
            "prefix_match_tokens": self.prefix_match_tokens,
            "outcome": self.outcome,
            "error": self.error,
            "reason": self.reason,
            "ttft_s": self.ttft_s,
            "duration_s": None
            if self.finished_at is None or self.dispatched_at is None
            else self.finished_at - self.dispatched_at,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def _names(states: Sequence[EndpointState]) -> list[str]:
    return [s.endpoint.hostport for s in states]


def profile_dict(profile: ProfileRecord) -> dict[str, Any]:
    # The scorers and the picker share one candidate list: name it once.
    named: dict[int, list[str]] = {}

    def _names(states: Sequence[EndpointState]) -> list[str]:
        key = id(states)
        names = named.get(key)
        if names is None:
            names = named[key] = [s.endpoint.hostport for s in states]
        return names

    filters: list[dict[str, Any]] = []
    scorers: list[dict[str, Any]] = []
    picker: dict[str, Any] | None = None
    for step in profile.steps:
        if step.kind == "filter":
            filters.append(
                {"type": step.type_name, "name": step.name, "kept": _names(step.candidates)}
            )
        elif step.kind == "scorer":
            names = _names(step.candidates)
            scorers.append(
                {
                    "type": step.type_name,
                    "name": step.name,
                    "weight": step.weight,
                    "raw": dict(zip(names, step.raw)),
                    "weighted": {
                        n: step.weight * (0.0 if r < 0.0 else 1.0 if r > 1.0 else r)
                        for n, r in zip(names, step.raw)
                    },
                }
            )
        else:
            names = _names(step.candidates)
            picker = {
                "type": step.type_name,
                "name": step.name,
                "picked": [names[i] for i in step.picked],
            }
    scored = next((s.candidates for s in profile.steps if s.kind != "filter"), ())
    return {
        "name": profile.name,
        "candidates": _names(profile.input_candidates),
        "filters": filters,
        "scorers": scorers,
        "totals": dict(zip(_names(scored), profile.totals)),
        "picker": picker,
        "duration_s": profile.duration_s,
    }


def cycle_dict(cycle: CycleRecord) -> dict[str, Any]:
    return {
        "primary_profile": cycle.primary,
        "profiles": [profile_dict(p) for p in cycle.profiles],
        "duration_s": cycle.duration_s,
    }
