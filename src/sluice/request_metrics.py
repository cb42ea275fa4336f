"""Per-request Prometheus metrics, under upstream's names: llm-d-router's `llm_d_epp_request_*`
(labels model_name, target_model_name, fairness_id, priority) and GIE v1.3's
`inference_objective_*` (model_name, target_model_name), either or both (`ExportedNames`).

Upstream records no TTFT without its predictor plugin; Sluice records time to first response
byte for every request under the TTFT names, so dashboards built for them work.

Client-chosen label values pass `ClientLabels` (printable, 1,000 distinct values per label, then
`other`) and the children they create are charged to a `SeriesBudget`, so no client can grow
`/metrics` without bound or make it unencodable.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest, Outcome, Usage
from sluice.util.exported_names import BOTH, ExportedNames
from sluice.util.labels import ClientLabels
from sluice.util.series import (
    CounterChild,
    CounterFamily,
    Families,
    GaugeChild,
    GaugeFamily,
    HistogramChild,
    HistogramFamily,
    SeriesBudget,
)

_MODEL = ("model_name", "target_model_name")
_LLMD = (*_MODEL, "fairness_id", "priority")
_CLIENT = ("model_name", "target_model_name", "fairness_id")
# GIE v1.3's buckets for the inference_objective_* names.
_DURATION_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20,
    30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600,
)  # fmt: skip
_SIZE_BUCKETS = (*(64 * 4**i for i in range(12)), 1 << 30)
_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
                  131072, 262144, 524288, 1048576)  # fmt: skip
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # fmt: skip
# llm-d-router v0.10's buckets for the llm_d_epp_request_* names.
_LLMD_SIZE_BUCKETS = tuple(float(2**k) for k in range(6, 31))  # 64 B … 1 GiB
_LLMD_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778,
                       65536, 131072, 262144, 524288, 1048576)  # fmt: skip
_LLMD_OUTPUT_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_LLMD_NTPOT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_LLMD_TTFT_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6,
                      8, 10, 15, 20, 30, 45, 60, 120)  # fmt: skip
# Past this many distinct label sets, children are looked up per request instead of cached, so
# the cache cannot grow with what clients send.
MAX_CACHED_SERIES = 4096


class RequestMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        names: ExportedNames = BOTH,
        labels: ClientLabels | None = None,
        budget: SeriesBudget | None = None,
    ) -> None:
        self.names = names
        self.labels = labels or ClientLabels()
        self.budget = budget or SeriesBudget()

        families = Families(registry, client_labels=_CLIENT, budget=self.budget)
        counter, gauge = families.counter, families.gauge

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labelnames: tuple[str, ...] = _MODEL
        ) -> HistogramFamily:
            return families.histogram(name, doc, labelnames, buckets)

        self.gie = (
            _GieFamilies(
                requests=counter("inference_objective_request_total", "Requests received.", _MODEL),
                errors=counter(
                    "inference_objective_request_error_total",
                    "Requests that ended in an error, by error code.",
                    (*_MODEL, "error_code"),
                ),
                duration=histogram(
                    "inference_objective_request_duration_seconds",
                    "From dispatch to the end of the response.",
                    _DURATION_BUCKETS,
                ),
                request_sizes=histogram(
                    "inference_objective_request_sizes",
                    "Request body sizes in bytes.",
                    _SIZE_BUCKETS,
                ),
                input_tokens=histogram(
                    "inference_objective_input_tokens", "Prompt tokens per request.", _TOKEN_BUCKETS
                ),
                output_tokens=histogram(
                    "inference_objective_output_tokens",
                    "Output tokens per request.",
                    _TOKEN_BUCKETS,
                ),
                cached_tokens=histogram(
                    "inference_objective_prompt_cached_tokens",
                    "Prompt tokens served from the engine's prefix cache.",
                    _TOKEN_BUCKETS,
                ),
                ttft=histogram(
                    "inference_objective_request_ttft_seconds",
                    "From dispatch to the first response byte.",
                    _TTFT_BUCKETS,
                ),
                running=gauge(
                    "inference_objective_running_requests",
                    "Requests dispatched and not yet finished.",
                    ("model_name",),
                ),
            )
            if names.gie
            else None
        )
        self.llm_d = (
            _LlmdFamilies(
                requests=counter("llm_d_epp_request_total", "Total requests.", _LLMD),
                errors=counter(
                    "llm_d_epp_request_error_total",
                    "Requests that ended in an error, by error code.",
                    (*_LLMD, "error_code"),
                ),
                duration=histogram(
                    "llm_d_epp_request_duration_seconds",
                    "From dispatch to the end of the response.",
                    _DURATION_BUCKETS,
                    _LLMD,
                ),
                request_sizes=histogram(
                    "llm_d_epp_request_size_bytes",
                    "Request body sizes in bytes.",
                    _LLMD_SIZE_BUCKETS,
                    _LLMD,
                ),
                input_tokens=histogram(
                    "llm_d_epp_request_input_tokens",
                    "Prompt tokens per request.",
                    _LLMD_TOKEN_BUCKETS,
                    _LLMD,
                ),
                output_tokens=histogram(
                    "llm_d_epp_request_output_tokens",
                    "Output tokens per request.",
                    _LLMD_OUTPUT_BUCKETS,
                    _LLMD,
                ),
                cached_tokens=histogram(
                    "llm_d_epp_request_cached_tokens",
                    "Prompt tokens served from the engine's prefix cache.",
                    _LLMD_TOKEN_BUCKETS,
                    _LLMD,
                ),
                ntpot=histogram(
                    "llm_d_epp_request_ntpot_seconds",
                    "Request duration divided by its output tokens.",
                    _LLMD_NTPOT_BUCKETS,
                    _LLMD,
                ),
                ttft=histogram(
                    "llm_d_epp_request_ttft_seconds",
                    "From dispatch to the first response byte.",
                    _LLMD_TTFT_BUCKETS,
                    (*_LLMD, "streaming"),
                ),
                running=gauge(
                    "llm_d_epp_request_running", "Requests dispatched and not yet finished.", _LLMD
                ),
            )
            if names.llm_d
            else None
        )
        self.outcomes = counter(
            "sluice_request_outcomes_total",
            "Dispatched requests by how they ended.",
            (*_MODEL, "outcome"),
        )
        self._series: dict[tuple[str, str, str, str, bool], _Series] = {}

    def _for(self, request: InferenceRequest) -> _Series:
        # One lookup per request: the children of one label set never change, so they are
        # resolved once (children made through `labels()` hash label tuples on every call).
        guard = self.labels
        key = (
            guard.model(request.model),
            guard.model(request.target_model),
            guard.fairness_id(request.fairness_id),
            str(request.priority),
            request.stream,
        )
        series = self._series.get(key)
        if series is None:
            series = _Series(self, *key)
            if len(self._series) < MAX_CACHED_SERIES:
                self._series[key] = series
        return series

    def received(self, request: InferenceRequest) -> None:
        series = self._for(request)
        for requests, sizes in series.on_received:
            requests.inc()
            sizes.observe(request.byte_size)

    def dispatched(self, request: InferenceRequest, waited_s: float) -> None:
        for running in self._for(request).running:
            running.inc()

    def failed(self, request: InferenceRequest, error: SluiceError | None) -> None:
        code = error.code.name_on_wire if error is not None else "Unknown"
        self._for(request).error(code).inc()

    def detached(self, request: InferenceRequest) -> None:
        """A request whose end Sluice will not see: no longer running as far as it knows; no
        duration, TTFT or tokens are recorded for it."""
        for running in self._for(request).running:
            running.dec()

    def completed(
        self,
        request: InferenceRequest,
        outcome: Outcome,
        usage: Usage | None,
        *,
        duration_s: float,
        ttft_s: float | None,
    ) -> None:
        series = self._for(request)
        for running in series.running:
            running.dec()
        for child in series.duration:
            child.observe(duration_s)
        if ttft_s is not None:
            for child in series.ttft:
                child.observe(ttft_s)
        if usage is not None:
            for tokens in series.tokens:
                tokens.input.observe(usage.prompt_tokens)
                tokens.output.observe(usage.completion_tokens)
                tokens.cached.observe(usage.cached_tokens)
            if series.ntpot is not None and usage.completion_tokens > 0:
                series.ntpot.observe(duration_s / usage.completion_tokens)
        if outcome is Outcome.COMPLETED:
            series.completed.inc()
        else:
            series.outcome(outcome.value).inc()
            series.error(outcome.value).inc()


@dataclass(frozen=True, kw_only=True)
class _GieFamilies:
    requests: CounterFamily
    errors: CounterFamily
    duration: HistogramFamily
    request_sizes: HistogramFamily
    input_tokens: HistogramFamily
    output_tokens: HistogramFamily
    cached_tokens: HistogramFamily
    ttft: HistogramFamily
    running: GaugeFamily


@dataclass(frozen=True, kw_only=True)
class _LlmdFamilies(_GieFamilies):
    ntpot: HistogramFamily


class _Tokens:
    __slots__ = ("cached", "input", "output")

    def __init__(self, families: _GieFamilies, labels: tuple[str, ...]) -> None:
        self.input = families.input_tokens.labels(*labels)
        self.output = families.output_tokens.labels(*labels)
        self.cached = families.cached_tokens.labels(*labels)


class _Series:
    """The children of one label set, in every family that is exported."""

    __slots__ = (
        "_errors",
        "_labels",
        "_metrics",
        "_outcomes",
        "completed",
        "duration",
        "ntpot",
        "on_received",
        "running",
        "tokens",
        "ttft",
    )

    def __init__(
        self,
        metrics: RequestMetrics,
        model: str,
        target: str,
        fairness_id: str,
        priority: str,
        stream: bool,
    ) -> None:
        self._metrics = metrics
        self._labels = (model, target, fairness_id, priority)
        self._errors: dict[str, list[CounterChild]] = {}
        self._outcomes: dict[str, CounterChild] = {}
        self.on_received: list[tuple[CounterChild, HistogramChild]] = []
        self.running: list[GaugeChild] = []
        self.duration: list[HistogramChild] = []
        self.ttft: list[HistogramChild] = []
        self.tokens: list[_Tokens] = []
        self.ntpot: HistogramChild | None = None
        for families, labels in self._sets():
            self.on_received.append(
                (families.requests.labels(*labels), families.request_sizes.labels(*labels))
            )
            self.duration.append(families.duration.labels(*labels))
            self.tokens.append(_Tokens(families, labels))
        if metrics.gie is not None:
            self.running.append(metrics.gie.running.labels(model))
            self.ttft.append(metrics.gie.ttft.labels(model, target))
        if metrics.llm_d is not None:
            labels = self._labels
            self.running.append(metrics.llm_d.running.labels(*labels))
            self.ttft.append(metrics.llm_d.ttft.labels(*labels, "true" if stream else "false"))
            self.ntpot = metrics.llm_d.ntpot.labels(*labels)
        self.completed = self.outcome(Outcome.COMPLETED.value)

    def _sets(self) -> list[tuple[_GieFamilies, tuple[str, ...]]]:
        out: list[tuple[_GieFamilies, tuple[str, ...]]] = []
        if self._metrics.gie is not None:
            out.append((self._metrics.gie, self._labels[:2]))
        if self._metrics.llm_d is not None:
            out.append((self._metrics.llm_d, self._labels))
        return out

    def outcome(self, outcome: str) -> CounterChild:
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self._metrics.outcomes.labels(
                *self._labels[:2], outcome
            )
        return child

    def error(self, code: str) -> _Fanout:
        children = self._errors.get(code)
        if children is None:
            children = self._errors[code] = [
                families.errors.labels(*labels, code) for families, labels in self._sets()
            ]
        return _Fanout(children)


class _Fanout:
    __slots__ = ("_children",)

    def __init__(self, children: list[CounterChild]) -> None:
        self._children = children

    def inc(self) -> None:
        for child in self._children:
            child.inc()
