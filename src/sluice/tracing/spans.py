"""A finished receipt as a tree of spans (plain data; `export` hands them to the SDK):

    gateway.request                      queued → finished (the whole request)
    ├─ gateway.request_orchestration     queued → dispatched
    │  ├─ flow_control.queue_wait        queued → released (which room rule held it)
    │  └─ run_scheduler_profile          one per profile run
    │     ├─ filter_endpoints            the filter chain, as upstream (one span)
    │     ├─ score_endpoints             one per scorer
    │     └─ pick_endpoints
    ├─ gateway.dispatch                  dispatched → first byte
    └─ gateway.response                  first byte → finished (tokens)

Times: the director's clock is monotonic; `epoch_offset_ns` turns it into Unix time. Plugin
spans are laid end to end from the release, with the durations the scheduler measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sluice.receipts.model import Receipt
from sluice.scheduling.record import ProfileRecord


@dataclass(slots=True)
class SpanData:
    name: str
    start_s: float  # on the director's clock
    end_s: float
    attributes: dict[str, Any] = field(default_factory=dict)
    children: list[SpanData] = field(default_factory=list)
    error: str | None = None

    def size(self) -> int:
        """Spans in this tree."""
        return 1 + sum(child.size() for child in self.children)

    def walk(self, parent: SpanData | None = None) -> Iterator[tuple[SpanData, SpanData | None]]:
        yield self, parent
        for child in self.children:
            yield from child.walk(self)


def request_spans(receipt: Receipt) -> SpanData:
    start = receipt.queued_at
    end = receipt.finished_at if receipt.finished_at is not None else start
    root = SpanData(
        "gateway.request",
        start,
        end,
        _without_none(
            {
                "gen_ai.request.id": receipt.request_id,
                "gen_ai.request.model": receipt.model,
                "llm_d.epp.objective": receipt.objective,
                "llm_d.epp.priority": receipt.priority,
                "llm_d.epp.fairness_id": receipt.fairness_id,
                "llm_d.epp.outcome": receipt.outcome,
                "llm_d.epp.destination_endpoint": receipt.endpoint,
            }
        ),
        error=receipt.reason if receipt.outcome == "rejected" else _failed(receipt.outcome),
    )
    released = receipt.released_at if receipt.released_at is not None else end
    dispatched = receipt.dispatched_at
    orchestration = SpanData(
        "gateway.request_orchestration", start, dispatched if dispatched is not None else end
    )
    root.children.append(orchestration)
    orchestration.children.append(
        SpanData(
            "flow_control.queue_wait",
            start,
            released,
            _without_none({"llm_d.epp.flow_control.held_by": receipt.held_by()}),
        )
    )
    at = released
    if receipt.cycle is not None:
        for profile in receipt.cycle.profiles:
            span = _profile_span(profile, at, receipt)
            orchestration.children.append(span)
            at = span.end_s
    # The director's `now` is the same for the release and the dispatch; the measured plugin
    # durations come on top, so a parent is stretched to cover its children.
    orchestration.end_s = max(orchestration.end_s, at)
    if dispatched is not None:
        first = None if receipt.ttft_s is None else dispatched + receipt.ttft_s
        root.children.append(
            SpanData(
                "gateway.dispatch",
                dispatched,
                first if first is not None else end,
                _without_none(
                    {
                        "server.address": receipt.endpoint,
                        "llm_d.epp.fallback_endpoints": ",".join(
                            e.hostport for e in receipt.fallbacks
                        )
                        or None,
                        "llm_d.epp.prefix_match_tokens": receipt.prefix_match_tokens,
                    }
                ),
            )
        )
        if first is not None:
            root.children.append(
                SpanData(
                    "gateway.response",
                    first,
                    end,
                    _without_none(
                        {
                            "gen_ai.usage.input_tokens": receipt.prompt_tokens,
                            "gen_ai.usage.output_tokens": receipt.completion_tokens,
                            "gen_ai.latency.time_to_first_token": receipt.ttft_s,
                        }
                    ),
                )
            )
    root.end_s = max([root.end_s, *(c.end_s for c in root.children)])
    return root


def _profile_span(profile: ProfileRecord, at: float, receipt: Receipt) -> SpanData:
    span = SpanData(
        "run_scheduler_profile",
        at,
        at + profile.duration_s,
        {"llm_d.epp.scheduling.profile.name": profile.name},
    )
    common = {"gen_ai.request.id": receipt.request_id, "gen_ai.request.model": receipt.model}
    filters = [s for s in profile.steps if s.kind == "filter"]
    t = at
    if filters:
        took = sum(s.duration_s for s in filters)
        span.children.append(
            SpanData(
                "filter_endpoints",
                t,
                t + took,
                {
                    **common,
                    "llm_d.epp.filter.candidate_endpoints": len(profile.input_candidates),
                    "llm_d.epp.filter.filtered_endpoints": len(filters[-1].candidates),
                },
            )
        )
        t += took
    for step in profile.steps:
        if step.kind == "scorer":
            span.children.append(
                SpanData(
                    "score_endpoints",
                    t,
                    t + step.duration_s,
                    {
                        **common,
                        "llm_d.epp.scorer.type": step.type_name,
                        "llm_d.epp.scorer.name": step.name,
                        "llm_d.epp.scorer.weight": step.weight,
                        "llm_d.epp.scorer.candidate_endpoints": len(step.candidates),
                    },
                )
            )
            t += step.duration_s
        elif step.kind == "picker":
            picked = [step.candidates[i] for i in step.picked]
            totals = profile.totals
            span.children.append(
                SpanData(
                    "pick_endpoints",
                    t,
                    t + step.duration_s,
                    {
                        **common,
                        "llm_d.epp.picker.candidate_endpoints": len(step.candidates),
                        "llm_d.epp.picker.top_endpoints": [s.endpoint.hostport for s in picked],
                        "llm_d.epp.picker.top_scores": [float(totals[i]) for i in step.picked],
                    },
                )
            )
            t += step.duration_s
    span.end_s = max(span.end_s, t)
    return span


def _failed(outcome: str | None) -> str | None:
    return outcome if outcome in {"upstream_error", "evicted"} else None


def _without_none(attributes: dict[str, Any]) -> dict[str, Any]:
    """Drop the unknowns; client-chosen text that is not UTF-8 is shown with U+FFFD (OTLP
    strings must be UTF-8)."""
    return {
        k: v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v
        for k, v in attributes.items()
        if v is not None
    }
