"""A finished receipt as its request's spans — plain tuples in a flat list, parents before
children (`export` hands them to the SDK as `ReadableSpan`s, `otlp` encodes them directly):

    gateway.request                      queued → finished (the whole request)
    ├─ gateway.request_orchestration     queued → dispatched
    │  ├─ flow_control.queue_wait        queued → released (which room rule held it)
    │  └─ run_scheduler_profile          one per profile run
    │     ├─ filter_endpoints            the filter chain, as upstream (one span)
    │     ├─ score_endpoints             one per scorer
    │     └─ pick_endpoints
    ├─ gateway.dispatch                  dispatched → first byte
    └─ gateway.response                  first byte → finished (tokens)

A span is `(shape, parent, start_s, end_s, values, error)`: its `Shape` names it and its
attribute keys, `values` lines up with those keys (None: unknown, left out), `parent` is the
index of its parent in the list (-1: the root, whose parent is the incoming `traceparent`'s
span, if any), `error` the status message of a failed span. A shape with `common` carries the
request's id and model first (the root's first two values), as upstream's plugin spans do.
Strings go out as UTF-8: what the client chose that is not (lone surrogates) goes with `?` in
their place (`utf8`).

Times: the director's clock is monotonic; the exporter turns it into Unix time. Plugin spans are
laid end to end from the release, with the durations the scheduler measured.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sluice.receipts.model import Receipt
from sluice.scheduling.record import FrozenProfile

Value = str | bool | int | float | tuple[str, ...] | tuple[float, ...]


@dataclass(frozen=True, eq=False, slots=True)  # hashed by identity: a few exist
class Shape:
    name: str
    keys: tuple[str, ...]
    common: bool = False  # the request's id and model come first
    # its values are few across requests (plugin names, weights, counts): an encoder may
    # keep their encoding
    repeats: bool = False


Span = tuple[Shape, int, float, float, tuple[Value | None, ...], str | None]

COMMON = ("gen_ai.request.id", "gen_ai.request.model")
REQUEST = Shape(
    "gateway.request",
    (
        *COMMON,
        "llm_d.epp.objective",
        "llm_d.epp.priority",
        "llm_d.epp.fairness_id",
        "llm_d.epp.outcome",
        "llm_d.epp.destination_endpoint",
    ),
)
ORCHESTRATION = Shape("gateway.request_orchestration", (), repeats=True)
QUEUE_WAIT = Shape("flow_control.queue_wait", ("llm_d.epp.flow_control.held_by",), repeats=True)
PROFILE = Shape("run_scheduler_profile", ("llm_d.epp.scheduling.profile.name",), repeats=True)
FILTER = Shape(
    "filter_endpoints",
    ("llm_d.epp.filter.candidate_endpoints", "llm_d.epp.filter.filtered_endpoints"),
    common=True,
    repeats=True,
)
SCORE = Shape(
    "score_endpoints",
    (
        "llm_d.epp.scorer.type",
        "llm_d.epp.scorer.name",
        "llm_d.epp.scorer.weight",
        "llm_d.epp.scorer.candidate_endpoints",
    ),
    common=True,
    repeats=True,
)
PICK = Shape(
    "pick_endpoints",
    (
        "llm_d.epp.picker.candidate_endpoints",
        "llm_d.epp.picker.top_endpoints",
        "llm_d.epp.picker.top_scores",
    ),
    common=True,
)
DISPATCH = Shape(
    "gateway.dispatch",
    ("server.address", "llm_d.epp.fallback_endpoints", "llm_d.epp.prefix_match_tokens"),
)
RESPONSE = Shape(
    "gateway.response",
    (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.latency.time_to_first_token",
    ),
)
_ORCHESTRATION_AT = 1  # its index: the root's first child


def utf8(text: str) -> bytes:
    """A string as OTLP carries it (UTF-8; a lone surrogate becomes `?`)."""
    return text.encode("utf-8", "replace")


def attributes(spans: Sequence[Span], span: Span) -> Iterator[tuple[str, Value]]:
    """A span's known attributes, in order (`spans` is its request's list: the root has the
    common ones)."""
    shape, values = span[0], span[4]
    if shape.common:
        yield from zip(COMMON, spans[0][4][:2])  # type: ignore[misc]
    for key, value in zip(shape.keys, values):
        if value is not None:
            yield key, value


def request_spans(receipt: Receipt) -> list[Span]:
    start = receipt.queued_at
    end = receipt.finished_at if receipt.finished_at is not None else start
    released = receipt.released_at if receipt.released_at is not None else end
    dispatched = receipt.dispatched_at
    endpoint = receipt.endpoint
    error = receipt.reason if receipt.outcome == "rejected" else _failed(receipt.outcome)
    root_values = (
        receipt.request_id,
        receipt.model,
        receipt.objective,
        receipt.priority,
        receipt.fairness_id,
        receipt.outcome,
        endpoint,
    )
    # the root and the orchestration are stretched over their children: placed when known
    spans: list[Span] = [_PLACEHOLDER, _PLACEHOLDER]
    spans.append((QUEUE_WAIT, _ORCHESTRATION_AT, start, released, (receipt.held_by(),), None))
    at = released
    cycle = receipt.frozen_cycle(scores=False)  # spans carry no raw scores
    if cycle is not None:
        for profile in cycle[0]:
            at = _profile_spans(spans, profile, at)
    # The director's `now` is the same for the release and the dispatch; the measured plugin
    # durations come on top, so a parent is stretched to cover its children.
    orchestration_end = max(dispatched if dispatched is not None else end, at)
    spans[_ORCHESTRATION_AT] = (ORCHESTRATION, 0, start, orchestration_end, (), None)
    root_end = max(end, orchestration_end)
    if dispatched is not None:
        ttft = receipt.ttft_s
        first = None if ttft is None else dispatched + ttft
        dispatch_end = first if first is not None else end
        fallbacks = ",".join(receipt.fallbacks) or None
        spans.append(
            (
                DISPATCH,
                0,
                dispatched,
                dispatch_end,
                (endpoint, fallbacks, receipt.prefix_match_tokens),
                None,
            )
        )
        root_end = max(root_end, dispatch_end)
        if first is not None:
            tokens = (receipt.prompt_tokens, receipt.completion_tokens, ttft)
            spans.append((RESPONSE, 0, first, end, tokens, None))
    spans[0] = (REQUEST, -1, start, root_end, root_values, error)
    return spans


def _profile_spans(spans: list[Span], profile: FrozenProfile, at: float) -> float:
    """Appends a profile's span and its plugins' after it; returns where the profile ended."""
    name, candidates, steps, totals, duration_s = profile
    index = len(spans)
    spans.append(_PLACEHOLDER)
    t = at
    took = 0.0
    kept = None  # the last filter's survivors
    for step in steps:
        if step[0] == "filter":
            took += step[3]
            kept = step[4]
    if kept is not None:
        spans.append((FILTER, index, t, t + took, (len(candidates), len(kept)), None))
        t += took
    for kind, type_name, step_name, duration, names, weight, _, picked in steps:
        if kind == "scorer":
            scored = (type_name, step_name, weight, len(names))
            spans.append((SCORE, index, t, t + duration, scored, None))
            t += duration
        elif kind == "picker":
            top = tuple([names[i] for i in picked])
            scores = tuple([float(totals[i]) for i in picked])
            spans.append((PICK, index, t, t + duration, (len(names), top, scores), None))
            t += duration
    end = max(at + duration_s, t)
    spans[index] = (PROFILE, _ORCHESTRATION_AT, at, end, (name,), None)
    return end


def _failed(outcome: str | None) -> str | None:
    return outcome if outcome in {"upstream_error", "evicted"} else None


_PLACEHOLDER: Span = (ORCHESTRATION, -1, 0.0, 0.0, (), None)
