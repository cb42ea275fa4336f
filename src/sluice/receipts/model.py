"""One request's receipt: the raw inputs of its decision as the director had them, rendered as a
plain JSON-able dict only when someone reads it."""

from __future__ import annotations

from typing import Any

from sluice.room.core import Hold
from sluice.scheduling.record import (
    CycleRecord,
    Flat,
    FrozenCycle,
    FrozenProfile,
    freeze,
    scored_candidates,
    thaw,
)

# What `footprint` counts (CPython 3.11, 64-bit; measured with tracemalloc by
# benchmarks/receipts_core.py, which checks the sum against the ring's real memory, and
# rounded up). A hold (shared by the receipts of the requests it held) is counted at each
# receipt: an upper bound. The frozen scheduling record counts itself (`record.freeze`).
RECEIPT_BYTES = 480  # the receipt, its floats and its share of small ints and tuples
SLOT_BYTES = 8  # a reference in a tuple
STR_BYTES = 56  # a str's header (its text is counted by length)
HOLD_ENDPOINT_BYTES = 640  # per endpoint of a hold: its rule and the inputs the rules read


class Receipt:
    """Mutable while the request is open; `finish`ed when it ends (its scheduling record frozen
    into one flat tuple, which the garbage collector stops tracking) and rendered (`as_dict`)
    when read."""

    __slots__ = (
        "completion_tokens",
        "cycle",
        "dispatched_at",
        "endpoint",
        "error",
        "fairness_id",
        "fallbacks",
        "finished_at",
        "frozen",
        "frozen_bytes",
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
        self.cycle: CycleRecord | None = None  # while the request is open
        self.frozen: Flat | None = None  # the cycle, once it ended (`finish`)
        self.frozen_bytes = 0
        self.inputs: dict[str, dict[str, Any]] | None = None
        self.endpoint: str | None = None
        self.fallbacks: tuple[str, ...] = ()  # as `ip:port`
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

    def finish(self, now: float) -> None:
        """The request ended: freeze what it keeps (see `scheduling.record`)."""
        self.finished_at = now
        if self.cycle is not None:
            self.frozen, self.frozen_bytes = freeze(self.cycle)
            self.cycle = None

    def frozen_record(self) -> Flat | None:
        """The scheduling record as its flat tuple (`scheduling.record`), frozen now if the
        request is still open."""
        if self.frozen is not None:
            return self.frozen
        return None if self.cycle is None else freeze(self.cycle)[0]

    def frozen_cycle(self, *, scores: bool = True) -> FrozenCycle | None:
        """The scheduling record as nested tuples (`scheduling.record.FrozenCycle`); without
        `scores`, with the scorers' raw scores left out."""
        flat = self.frozen_record()
        return None if flat is None else thaw(flat, scores=scores)

    def footprint(self) -> int:
        """An upper bound of the bytes this finished receipt keeps alive that nothing else does
        (the endpoint names are shared with the registry; a hold is shared by the receipts of
        the requests it held, and counted at each)."""
        size = RECEIPT_BYTES + SLOT_BYTES * len(self.fallbacks) + self.frozen_bytes
        for text in (self.request_id, self.traceparent, self.error):
            if text is not None:
                size += STR_BYTES + len(text)
        if self.hold is not None:
            size += HOLD_ENDPOINT_BYTES * len(self.hold.rules)
        return size

    def as_dict(self) -> dict[str, Any]:
        hold = self.hold
        cycle = self.frozen_cycle()
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
            "scheduling": None if cycle is None else cycle_dict(cycle),
            "endpoint": self.endpoint,
            "fallbacks": list(self.fallbacks),
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


def profile_dict(profile: FrozenProfile) -> dict[str, Any]:
    name, candidates, steps, totals, duration_s = profile
    filters: list[dict[str, Any]] = []
    scorers: list[dict[str, Any]] = []
    picker: dict[str, Any] | None = None
    for kind, type_name, step_name, _, names, weight, raw, picked in steps:
        if kind == "filter":
            filters.append({"type": type_name, "name": step_name, "kept": list(names)})
            continue
        if kind == "scorer":
            scorers.append(
                {
                    "type": type_name,
                    "name": step_name,
                    "weight": weight,
                    "raw": dict(zip(names, raw)),
                    "weighted": {
                        n: weight * (0.0 if r < 0.0 else 1.0 if r > 1.0 else r)
                        for n, r in zip(names, raw)
                    },
                }
            )
        else:
            picker = {"type": type_name, "name": step_name, "picked": [names[i] for i in picked]}
    return {
        "name": name,
        "candidates": list(candidates),
        "filters": filters,
        "scorers": scorers,
        "totals": dict(zip(scored_candidates(profile), totals)),
        "picker": picker,
        "duration_s": duration_s,
    }


def cycle_dict(cycle: FrozenCycle) -> dict[str, Any]:
    profiles, primary, duration_s = cycle
    return {
        "primary_profile": primary,
        "profiles": [profile_dict(p) for p in profiles],
        "duration_s": duration_s,
    }
