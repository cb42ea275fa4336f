"""Per-request Prometheus metrics with upstream's names (`inference_objective_*`, facts §8.3).

Upstream records no TTFT without its predictor plugin; Sluice records time to first response
byte for every request under the SLO family's name, so dashboards built for it work.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluice.pipeline import Outcome
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest, Usage

_MODEL = ("model_name", "target_model_name")
_DURATION_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20,
    30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600,
)  # fmt: skip
_SIZE_BUCKETS = (*(64 * 4**i for i in range(12)), 1 << 30)
_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
                  131072, 262144, 524288, 1048576)  # fmt: skip
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # fmt: skip


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = _MODEL) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, _MODEL, buckets=buckets, registry=registry)

        self.requests = counter("inference_objective_request_total", "Requests received.")
        self.errors = counter(
            "inference_objective_request_error_total",
            "Requests that ended in an error, by error code.",
            (*_MODEL, "error_code"),
        )
        self.duration = histogram(
            "inference_objective_request_duration_seconds",
            "From dispatch to the end of the response.",
            _DURATION_BUCKETS,
        )
        self.request_sizes = histogram(
            "inference_objective_request_sizes", "Request body sizes in bytes.", _SIZE_BUCKETS
        )
        self.input_tokens = histogram(
            "inference_objective_input_tokens", "Prompt tokens per request.", _TOKEN_BUCKETS
        )
        self.output_tokens = histogram(
            "inference_objective_output_tokens", "Output tokens per request.", _TOKEN_BUCKETS
        )
        self.cached_tokens = histogram(
            "inference_objective_prompt_cached_tokens",
            "Prompt tokens served from the engine's prefix cache.",
            _TOKEN_BUCKETS,
        )
        self.ttft = histogram(
            "inference_objective_request_ttft_seconds",
            "From dispatch to the first response byte.",
            _TTFT_BUCKETS,
        )
        self.running = Gauge(
            "inference_objective_running_requests",
            "Requests dispatched and not yet finished.",
            ("model_name",),
            registry=registry,
        )
        self.outcomes = counter(
            "sluice_request_outcomes_total",
            "Dispatched requests by how they ended.",
            (*_MODEL, "outcome"),
        )
        self._series: dict[tuple[str, str], _ModelSeries] = {}

    def _for(self, request: InferenceRequest) -> _ModelSeries:
        # `.labels()` hashes and locks on every call (~12% of Sluice's CPU per request when
        # profiled); the children of one model pair never change, so resolve them once.
        key = (request.model, request.target_model)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _ModelSeries(self, *key)
        return series

    def received(self, request: InferenceRequest) -> None:
        series = self._for(request)
        series.requests.inc()
        series.request_sizes.observe(request.byte_size)

    def dispatched(self, request: InferenceRequest, waited_s: float) -> None:
        self._for(request).running.inc()

    def failed(self, request: InferenceRequest, error: SluiceError | None) -> None:
        code = error.code.name_on_wire if error is not None else "Unknown"
        self.errors.labels(request.model, request.target_model, code).inc()

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
        series.running.dec()
        series.duration.observe(duration_s)
        if ttft_s is not None:
            series.ttft.observe(ttft_s)
        if usage is not None:
            series.input_tokens.observe(usage.prompt_tokens)
            series.output_tokens.observe(usage.completion_tokens)
            series.cached_tokens.observe(usage.cached_tokens)
        if outcome is Outcome.COMPLETED:
            series.completed.inc()
        else:
            labels = (request.model, request.target_model)
            self.outcomes.labels(*labels, outcome.value).inc()
            self.errors.labels(*labels, outcome.value).inc()


class _ModelSeries:
    """The metric children of one (model, target model) pair."""

    __slots__ = (
        "cached_tokens",
        "completed",
        "duration",
        "input_tokens",
        "output_tokens",
        "request_sizes",
        "requests",
        "running",
        "ttft",
    )

    def __init__(self, metrics: RequestMetrics, model: str, target: str) -> None:
        self.requests = metrics.requests.labels(model, target)
        self.request_sizes = metrics.request_sizes.labels(model, target)
        self.duration = metrics.duration.labels(model, target)
        self.ttft = metrics.ttft.labels(model, target)
        self.input_tokens = metrics.input_tokens.labels(model, target)
        self.output_tokens = metrics.output_tokens.labels(model, target)
        self.cached_tokens = metrics.cached_tokens.labels(model, target)
        self.running = metrics.running.labels(model)
        self.completed = metrics.outcomes.labels(model, target, Outcome.COMPLETED.value)
