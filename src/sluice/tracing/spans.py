"""A finished receipt as its request's spans, parents before children (`export` hands them to
the SDK as `ReadableSpan`s, `otlp` encodes them directly):

    gateway.request                      queued → finished (the whole request)
    ├─ gateway.request_orchestration     queued → dispatched
    │  ├─ flow_control.queue_wait        queued → released (which room rule held it)
    │  └─ run_scheduler_profile          one per profile run
    │     ├─ filter_endpoints            the filter chain, as upstream (one span)
    │     ├─ score_endpoints             one per scorer
    │     └─ pick_endpoints
    ├─ gateway.dispatch                  dispatched → first byte
    └─ gateway.response                  first byte → finished (tokens)

A request's spans are a `Spans`: its `Form`, which every request with the same tree shares
(each span's `Shape`, which names it and its attribute keys; its parent, as an index, -1 for
the root, whose parent is the incoming `traceparent`'s span, if any; the values of the spans
the tree fixes: the profiles' names, the plugins' names, types, weights and counts), and what
is the request's own: the instants its spans start and end at (the form holds each span's two
indices), the values of the spans the form leaves open (the root, the queue wait, the picks,
the dispatch, the response), in span order, and the root's status message if it failed.
Values line up with their shape's keys (None: unknown, left out). A shape with `common` carries
the request's id and model first (the root's first two values), as upstream's plugin spans do.
`Spans.listed` gives them one by one (`Span`), as the SDK's `ReadableSpan`s want them.
Strings go out as UTF-8: what the client chose that is not (lone surrogates) goes with `?` in
their place (`utf8`).

Forms, and how each layout of a frozen scheduling record becomes spans (`_CyclePlan`), are kept
in small tables: a traced request reads its plugins' durations and picks straight from the flat
record (`scheduling.record`) instead of thawing it, and an encoder keeps what it made of a form
(`otlp`).

Where the extension `_spans.c` is built (`NATIVE`; `SLUICE_OTLP_NATIVE=0` turns the tracer's
native parts off), `NATIVE.build` makes a request's instants and open values in one call, and
`NATIVE.same` tells a record of a plan's layout: the same lists and answers as `_built` and
`_CyclePlan.check` (tests/tracing/test_spans_native.py), at ~2.5x less CPU a request
(`benchmarks/tracing_batch_cost.py`).

Times: the director's clock is monotonic; the exporter turns it into Unix time. Plugin spans are
laid end to end from the release, with the durations the scheduler measured.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter
from typing import Any, NamedTuple

from sluice.receipts.model import Receipt
from sluice.scheduling.record import Flat, ProfileAt, layout


def native_part(module: str) -> Any:
    """One of the tracer's C extensions, by its full module name; None where it is not built, or
    with `SLUICE_OTLP_NATIVE=0` (the tracer's Python parts alone, for every part at once)."""
    if os.environ.get("SLUICE_OTLP_NATIVE", "1") == "0":
        return None
    try:  # by its full name: `from sluice.tracing import` would import the package from here
        return importlib.import_module(module)
    except ImportError:
        return None


NATIVE: Any = native_part("sluice.tracing._spans")

Value = str | bool | int | float | tuple[str, ...] | tuple[float, ...]


@dataclass(frozen=True, eq=False, slots=True)  # hashed by identity: a few exist
class Shape:
    name: str
    keys: tuple[str, ...]
    common: bool = False  # the request's id and model come first
    # its values are few across requests (plugin names, weights, counts): an encoder may
    # keep their encoding
    repeats: bool = False


Values = tuple[Value | None, ...]
# (shape, parent, start_s, end_s, values, error): one span, as `Spans.listed` gives it
Span = tuple[Shape, int, float, float, Values, str | None]

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


@dataclass(frozen=True, eq=False, slots=True)  # hashed by identity: kept in `_FORMS`
class Form:
    """What every request with the same span tree shares (see the module's docstring)."""

    shapes: tuple[Shape, ...]
    parents: tuple[int, ...]
    bounds: tuple[int, ...]  # start, end of each span: indices into the request's instants
    fixed: tuple[Values | None, ...]  # None: the request's own (`Spans.values`, in order)

    def __len__(self) -> int:
        return len(self.shapes)


class Spans(NamedTuple):
    form: Form
    instants: list[float]
    values: list[Values]  # of the spans the form leaves open, in span order
    error: str | None  # the root's status message

    def listed(self) -> list[Span]:
        form, instants, error = self.form, self.instants, self.error
        own = iter(self.values)
        out: list[Span] = []
        for i, (shape, up, fixed) in enumerate(zip(form.shapes, form.parents, form.fixed)):
            start, end = instants[form.bounds[2 * i]], instants[form.bounds[2 * i + 1]]
            values = next(own) if fixed is None else fixed
            out.append((shape, up, start, end, values, error if i == 0 else None))
        return out


def request_spans(receipt: Receipt) -> Spans:
    flat = receipt.frozen_record()
    plan = _NO_CYCLE if flat is None else _cycle_plan(flat)
    error = receipt.reason if receipt.outcome == "rejected" else _failed(receipt.outcome)
    if NATIVE is not None:
        instants, values, dispatched, responded = NATIVE.build(receipt, flat, plan.native)
    else:
        instants, values, dispatched, responded = _built(receipt, flat, plan)
    key = (plan, dispatched, responded)
    form = _FORMS.get(key) or _form(*key)
    return Spans(form, instants, values, error)


def _built(
    receipt: Receipt, flat: Flat | None, plan: _CyclePlan
) -> tuple[list[float], list[Values], bool, bool]:
    """The request's instants and its open spans' values, and whether it was dispatched and
    responded (what `NATIVE.build` makes in one call)."""
    start = receipt.queued_at
    end = receipt.finished_at if receipt.finished_at is not None else start
    released = receipt.released_at if receipt.released_at is not None else end
    dispatched = receipt.dispatched_at
    endpoint = receipt.endpoint
    root_values = (
        receipt.request_id,
        receipt.model,
        receipt.objective,
        receipt.priority,
        receipt.fairness_id,
        receipt.outcome,
        endpoint,
    )
    # the root's and the orchestration's ends (1, 2) are placed once their children are
    instants = [start, end, end, released]
    values: list[Values] = [root_values, (receipt.held_by(),)]
    at = released
    for profile in plan.profiles:
        at = profile.place(flat, at, instants, values)
    # The director's `now` is the same for the release and the dispatch; the measured plugin
    # durations come on top, so a parent is stretched to cover its children.
    orchestration_end = max(dispatched if dispatched is not None else end, at)
    root_end = max(end, orchestration_end)
    first = None
    if dispatched is not None:
        ttft = receipt.ttft_s
        first = None if ttft is None else dispatched + ttft
        dispatch_end = first if first is not None else end
        fallbacks = ",".join(receipt.fallbacks) or None
        values.append((endpoint, fallbacks, receipt.prefix_match_tokens))
        instants += (dispatched, dispatch_end)  # the response starts at the dispatch's end
        root_end = max(root_end, dispatch_end)
        if first is not None:
            values.append((receipt.prompt_tokens, receipt.completion_tokens, ttft))
            instants.append(end)
    instants[1], instants[2] = root_end, orchestration_end
    return instants, values, dispatched is not None, first is not None


def _failed(outcome: str | None) -> str | None:
    return outcome if outcome in {"upstream_error", "evicted"} else None


def _getter(positions: Sequence[int]) -> Callable[[Any], tuple[Any, ...]]:
    """The fields at `positions` of a tuple, as a tuple (`itemgetter` gives one field bare)."""
    if len(positions) == 1:
        [only] = positions
        return lambda t: (t[only],)
    return itemgetter(*positions) if positions else lambda t: ()


class _ProfilePlan:
    """One layout of a frozen profile as spans: the profile's, then the filter chain's (one
    span, as upstream), each scorer's and picker's in their order — what the layout fixes of
    them, and where in the flat record the rest is."""

    def __init__(self, flat: Any, at: ProfileAt) -> None:
        filters = [s for s in at.steps if flat[s.kind] == "filter"]
        self.filters_s = tuple(s.duration_s for s in filters)
        children: list[tuple[Shape, Values | None]] = []
        if filters:
            survivors = filters[-1].candidates
            children.append((FILTER, (len(at.inputs), len(survivors))))
        durations = [at.duration_s]  # the profile's, then each scorer's and picker's
        picks = []
        for s in at.steps:
            kind = flat[s.kind]
            if kind == "scorer":
                scored = (flat[s.type_name], flat[s.name], flat[s.weight], len(s.candidates))
                children.append((SCORE, scored))
                durations.append(s.duration_s)
            elif kind == "picker":
                children.append((PICK, None))  # which it picked: the request's own
                durations.append(s.duration_s)
                picks.append((s.candidates.start, len(s.candidates), s.picked, at.totals.start))
        self.name: Values = (flat[at.name],)
        self.children = tuple(children)
        self.durations = _getter(durations)
        self.picks = tuple(picks)
        # the same, as the extension's `build` reads it
        self.native = (
            tuple(durations),
            tuple(s.duration_s for s in filters),
            tuple((n, c, p.start, p.stop, t) for n, c, p, t in picks),
        )
        # what the layout fixes beyond the walk's own reads: the names, types and weights
        self.fixed_at = (at.name, *(p for s in at.steps for p in (s.type_name, s.name, s.weight)))

    def place(self, flat: Any, at: float, instants: list[float], values: list[Values]) -> float:
        """Appends the profile's instants (where each child starts, the last one's end, the
        profile's end) and its picks' values; returns where the profile ended."""
        took, *steps_s = self.durations(flat)
        if self.filters_s:
            chain = 0.0  # summed in order, as the chain ran
            for p in self.filters_s:
                chain += flat[p]
            steps_s.insert(0, chain)
        times = list(accumulate(steps_s, initial=at))
        end = max(at + took, times[-1])
        instants += times
        instants.append(end)
        for names_at, count, picked, totals_at in self.picks:
            chosen = flat[picked.start : picked.stop]
            top = tuple([flat[names_at + i] for i in chosen])
            scores = tuple([float(flat[totals_at + i]) for i in chosen])
            values.append((count, top, scores))
        return end


class _CyclePlan:
    """One layout of a frozen scheduling record: its profiles' plans, and how to tell a record
    of the same layout (equal where the walk reads and where the spans' fixed values are)."""

    def __init__(self, flat: Flat) -> None:
        profiles, read = layout(flat)
        self.profiles = tuple(_ProfilePlan(flat, p) for p in profiles)
        self.native = tuple(p.native for p in self.profiles)
        self.at = tuple(sorted({*read, *(p for plan in self.profiles for p in plan.fixed_at)}))
        self.check = _getter(self.at)
        self.expected = self.check(flat)

    def fits(self, flat: Flat) -> bool:
        """Whether `flat` (of the same length) has this plan's layout."""
        if NATIVE is not None:
            return bool(NATIVE.same(flat, self.at, self.expected))
        return bool(self.check(flat) == self.expected)


_NO_CYCLE = _CyclePlan((None, 0.0, 0))
_PLANS: dict[int, list[_CyclePlan]] = {}  # by the record's length
_FORMS: dict[tuple[_CyclePlan, bool, bool], Form] = {}
_KEPT = 256  # plans (and forms): the tables are emptied when they outgrow this


def _cycle_plan(flat: Flat) -> _CyclePlan:
    same_length = _PLANS.get(len(flat))
    if same_length is not None:
        for plan in same_length:
            if plan.fits(flat):
                return plan
    if sum(map(len, _PLANS.values())) >= _KEPT:
        _PLANS.clear()
        _FORMS.clear()
    plan = _CyclePlan(flat)
    _PLANS.setdefault(len(flat), []).append(plan)
    return plan


def _form(plan: _CyclePlan, dispatched: bool, responded: bool) -> Form:
    shapes = [REQUEST, ORCHESTRATION, QUEUE_WAIT]
    parents = [-1, 0, _ORCHESTRATION_AT]
    bounds = [0, 1, 0, 2, 0, 3]  # (queued, the root's end), (queued, ...), (queued, released)
    fixed: list[Values | None] = [None, (), None]
    at = 4  # the first profile's instants
    for profile in plan.profiles:
        index, last = len(shapes), len(profile.children)
        shapes.append(PROFILE)
        parents.append(_ORCHESTRATION_AT)
        bounds += (at, at + last + 1)
        fixed.append(profile.name)
        for i, (shape, values) in enumerate(profile.children):
            shapes.append(shape)
            parents.append(index)
            bounds += (at + i, at + i + 1)
            fixed.append(values)
        at += last + 2
    if dispatched:
        shapes.append(DISPATCH)
        parents.append(0)
        bounds += (at, at + 1)
        fixed.append(None)
        if responded:
            shapes.append(RESPONSE)
            parents.append(0)
            bounds += (at + 1, at + 2)
            fixed.append(None)
    form = _FORMS[plan, dispatched, responded] = Form(
        tuple(shapes), tuple(parents), tuple(bounds), tuple(fixed)
    )
    return form
