"""The scheduler: runs the configured profiles over an endpoint snapshot and returns the
chosen endpoint plus fallbacks.

Weights: Sluice divides each profile's scorer weights by their sum, so a profile's total is
a weighted *average* in [0, 1] (upstream sums integer weights unnormalized; the ranking is
the same, but totals stay comparable across profiles and configs).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.requests.model import InferenceRequest
from sluice.scheduling import registry as plugin_registry
from sluice.scheduling.config import EndpointPickerConfig
from sluice.scheduling.framework import (
    CycleState,
    Filter,
    NoEndpointsError,
    Picker,
    Plugin,
    PrefixCacheView,
    ProfileHandler,
    ProfileResult,
    SchedulingResult,
    ScoredEndpoint,
    Scorer,
)
from sluice.scheduling.prefix_computing import Blocked
from sluice.scheduling.record import CycleRecord, ProfileRecord

# a plugin's kind as upstream's metrics name the extension point
_EXTENSION_POINT = {"filter": "Filter", "scorer": "Scorer", "picker": "Picker"}


class SchedulerObserver(Protocol):
    """Hook for metrics; the core never imports prometheus (see `scheduling.metrics`)."""

    def scheduled(self, duration_s: float, success: bool) -> None: ...

    def plugin_ran(
        self, extension_point: str, plugin_type: str, plugin_name: str, duration_s: float
    ) -> None: ...

    def prefix_matched(self, hit_ratio: float, hit_chars: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    filters: tuple[Filter, ...]
    scorers: tuple[tuple[Scorer, float], ...]  # normalized weights, summing to 1
    picker: Picker


class Scheduler:
    def __init__(
        self,
        handler: ProfileHandler,
        profiles: Mapping[str, Profile],
        plugins: Sequence[Plugin],
        observer: SchedulerObserver | None = None,
    ) -> None:
        self._handler = handler
        self._profiles = dict(profiles)
        self._plugins = tuple(plugins)
        self._observer = observer
        self._prefix_scorers = [p for p in plugins if isinstance(p, PrefixCacheView)]
        if observer is not None:
            for scorer in self._prefix_scorers:
                scorer.on_match = observer.prefix_matched

    @classmethod
    def from_config(
        cls,
        config: EndpointPickerConfig,
        rng: random.Random | None = None,
        observer: SchedulerObserver | None = None,
        engine: str = "vllm",
    ) -> Scheduler:
        """Build plugins and profiles; pass a seeded `rng` for deterministic tie-breaks and
        the model servers' kind for the defaults that depend on it."""
        ctx = plugin_registry.PluginContext(rng=rng or random.Random(), engine=engine)
        plugins = {spec.name: plugin_registry.create(spec, ctx) for spec in config.plugins}
        handler = next(p for p in plugins.values() if isinstance(p, ProfileHandler))
        profiles: dict[str, Profile] = {}
        for spec in config.profiles:
            filters: list[Filter] = []
            scorers: list[tuple[Scorer, float]] = []
            picker: Picker | None = None
            for ref in spec.plugins:
                plugin = plugins[ref.plugin_ref]
                if isinstance(plugin, Filter):
                    filters.append(plugin)
                elif isinstance(plugin, Scorer):
                    scorers.append((plugin, ref.weight))
                elif isinstance(plugin, Picker):
                    picker = plugin
            assert picker is not None  # defaulting guarantees one
            total = sum(w for _, w in scorers)
            normalized = tuple((s, w / total) for s, w in scorers if w > 0) if total > 0 else ()
            profiles[spec.name] = Profile(spec.name, tuple(filters), normalized, picker)
        return cls(handler, profiles, list(plugins.values()), observer)

    @property
    def profiles(self) -> Mapping[str, Profile]:
        return self._profiles

    # -- the cycle ------------------------------------------------------------------------------

    def schedule(
        self,
        request: InferenceRequest,
        endpoints: Sequence[EndpointState],
        now: float,
        record: CycleRecord | None = None,
    ) -> SchedulingResult:
        """Pick endpoints for `request`; raises `NoEndpointsError` when none is left. With a
        `record`, what each plugin did is written into it (see `scheduling.record`)."""
        timed = self._observer is not None or record is not None
        started = time.perf_counter() if timed else 0.0
        try:
            result = self._schedule(request, endpoints, now, record)
        except NoEndpointsError:
            if timed:
                self._scheduled(record, started, None)
            raise
        if timed:
            self._scheduled(record, started, result)
        return result

    def _scheduled(
        self, record: CycleRecord | None, started: float, result: SchedulingResult | None
    ) -> None:
        """A cycle that began at `started` ended with `result` (None: no endpoints)."""
        elapsed = time.perf_counter() - started
        if self._observer is not None:
            self._observer.scheduled(elapsed, result is not None)
        if record is not None:
            record.duration_s = elapsed
            if result is not None:
                record.primary = result.primary_profile

    def _schedule(
        self,
        request: InferenceRequest,
        endpoints: Sequence[EndpointState],
        now: float,
        record: CycleRecord | None,
    ) -> SchedulingResult:
        candidates = endpoints
        hint = request.subset_hint
        if hint is not None:
            candidates = [
                s for s in endpoints if s.endpoint.hostport in hint or s.endpoint.address in hint
            ]
        if not candidates:
            raise NoEndpointsError(
                "no endpoints available" if hint is None else "no endpoint matches the subset hint"
            )
        cycle = CycleState(request, now)
        results: dict[str, ProfileResult | None] = {}
        handler = self._handler
        while True:
            names = handler.pick_profiles(cycle, self._profiles, results)
            if not names:
                break
            for name in names:
                profile_record = None
                if record is not None:
                    profile_record = ProfileRecord(name, candidates)
                    record.profiles.append(profile_record)
                results[name] = self._run_profile(
                    self._profiles[name], cycle, candidates, profile_record
                )
        return handler.process_results(cycle, results)

    def _run_profile(
        self,
        profile: Profile,
        cycle: CycleState,
        candidates: Sequence[EndpointState],
        record: ProfileRecord | None = None,
    ) -> ProfileResult | None:
        timed = self._observer is not None or record is not None
        began = time.perf_counter() if record is not None else 0.0
        for f in profile.filters:
            t0 = time.perf_counter() if timed else 0.0
            candidates = f.filter(cycle, candidates)
            if timed:
                self._ran(record, f, t0, candidates)
            if not candidates:
                if record is not None:
                    record.duration_s = time.perf_counter() - began
                return None
        n = len(candidates)
        totals = [0.0] * n
        for scorer, weight in profile.scorers:
            t0 = time.perf_counter() if timed else 0.0
            scores = scorer.score(cycle, candidates)
            if timed:
                self._ran(record, scorer, t0, candidates, weight, scores)
            if scorer.bounded:
                totals = [t + weight * s for t, s in zip(totals, scores)]
            else:  # clamp to [0, 1], as upstream does for scorers that misbehave
                totals = [
                    t + weight * (0.0 if s < 0.0 else 1.0 if s > 1.0 else s)
                    for t, s in zip(totals, scores)
                ]
        picker = profile.picker
        t0 = time.perf_counter() if timed else 0.0
        picked = picker.pick(candidates, totals)
        if timed:
            self._ran(record, picker, t0, candidates, picked=picked)
            if record is not None:
                record.totals = tuple(totals)
                record.duration_s = time.perf_counter() - began
        return ProfileResult(
            tuple(ScoredEndpoint(candidates[i].endpoint, totals[i]) for i in picked)
        )

    def _ran(
        self,
        record: ProfileRecord | None,
        plugin: Filter | Scorer | Picker,
        started: float,
        candidates: Sequence[EndpointState],
        weight: float = 0.0,
        raw: Sequence[float] = (),
        picked: Sequence[int] = (),
    ) -> None:
        """`plugin` ran since `started` over `candidates`: tell the observer how long, and
        write the step into `record`."""
        took = time.perf_counter() - started
        kind, type_name, name = plugin.kind, plugin.type_name, plugin.name
        if self._observer is not None:
            self._observer.plugin_ran(_EXTENSION_POINT[kind], type_name, name, took)
        if record is not None:
            record.ran(kind, type_name, name, took, candidates, weight, raw, picked)

    # -- lifecycle hooks --------------------------------------------------------------------------

    def on_dispatch(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        """The request was sent to `endpoint` (the primary, or the fallback actually used):
        teaches the prefix index and session affinity."""
        for plugin in self._plugins:
            plugin.on_dispatch(None, request, endpoint)

    def on_complete(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        for plugin in self._plugins:
            plugin.on_complete(request, endpoint)

    def prune(self, live_endpoints: set[str]) -> None:
        """Forget learned state of endpoints that left the pool."""
        for scorer in self._prefix_scorers:
            scorer.prune(live_endpoints)

    def cached_fraction(self, request: InferenceRequest, endpoint: Endpoint) -> float:
        """How much of the prompt the prefix index expects `endpoint` to serve from cache (read
        between `schedule` and `on_dispatch`); 0 without a prefix scorer."""
        return max(
            (s.cached_fraction(request, endpoint) for s in self._prefix_scorers), default=0.0
        )

    def blocked_on(self, request: InferenceRequest, endpoint: Endpoint) -> Blocked | None:
        """Where the prefix `request` matched on `endpoint` is still being computed there
        (`computingPrefixes`); None when it is cached, or no prefix scorer tracks it."""
        for scorer in self._prefix_scorers:
            blocked_on = getattr(scorer, "blocked_on", None)  # prefix-cache-scorer's alone
            found = blocked_on(request, endpoint) if blocked_on is not None else None
            if found is not None:
                return found
        return None

    def still_computing(self, request_id: str) -> bool:
        """Whether that request's prefix is still being computed (`computingPrefixes`)."""
        return any(
            getattr(s, "is_computing", lambda _: False)(request_id) for s in self._prefix_scorers
        )

    def computing_ahead(self, request_id: str) -> str | None:
        """An earlier request still using the blocks this dispatched one needs on its endpoint
        (`computingPrefixes: completion`: llama.cpp's slot holding them is busy)."""
        for scorer in self._prefix_scorers:
            ahead = getattr(scorer, "computing_ahead", None)
            found = ahead(request_id) if ahead is not None else None
            if found is not None:
                return found
        return None

    def on_prefill_end_id(self, request_id: str) -> None:
        """That request's first byte came: its prefill is over."""
        for scorer in self._prefix_scorers:
            ended = getattr(scorer, "prefill_ended", None)
            if ended is not None:
                ended(request_id)

    def prefix_index_size(self) -> int:
        return sum(s.index_size() for s in self._prefix_scorers)
