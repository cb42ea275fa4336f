"""Which Prometheus series carry which engine metric: upstream's metric specs and engine profiles.

A metric spec is upstream's string form `name` or `name{label=value,...}`; with labels, only the
series carrying those label values count (facts §6.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_SPEC_RE = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")


class MetricSpecError(ValueError):
    """A metric spec string that is not `name` or `name{label=value,...}`."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One series selector: a family name plus required label values."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> MetricSpec:
        match = _SPEC_RE.match(text)
        if match is None:
            raise MetricSpecError(f"invalid metric spec {text!r}: expected name or name{{k=v,...}}")
        name, body = match.group(1), match.group(2)
        labels: list[tuple[str, str]] = []
        for part in (body or "").split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise MetricSpecError(f"invalid label matcher {part!r} in metric spec {text!r}")
            labels.append((key.strip(), value.strip().strip('"')))
        return cls(name, tuple(labels))

    def __str__(self) -> str:
        if not self.labels:
            return self.name
        return self.name + "{" + ",".join(f"{k}={v}" for k, v in self.labels) + "}"


def _spec(text: str) -> MetricSpec:
    return MetricSpec.parse(text)


@dataclass(frozen=True, slots=True)
class MetricNames:
    """The series Sluice reads from one engine kind. `None` disables a metric (upstream: `""`)."""

    waiting: MetricSpec
    running: MetricSpec
    kv_cache_usage: MetricSpec
    lora_info: MetricSpec | None = None
    cache_info: MetricSpec | None = None
    # Older vLLM versions name KV usage differently; tried when the primary spec is absent.
    kv_cache_usage_fallbacks: tuple[MetricSpec, ...] = ()
    # The engine's cumulative prefill counters (see `EngineMetrics.first_tokens`); each series
    # matching a spec is summed (one per engine core or data-parallel rank).
    first_tokens: MetricSpec | None = None
    first_token_seconds: MetricSpec | None = None
    prompt_tokens: MetricSpec | None = None
    cached_prompt_tokens: MetricSpec | None = None

    @property
    def prefill_counters(self) -> tuple[tuple[str, MetricSpec], ...]:
        """(EngineMetrics field, spec) for each prefill counter the profile names."""
        specs = (
            ("first_tokens", self.first_tokens),
            ("first_token_seconds", self.first_token_seconds),
            ("prompt_tokens", self.prompt_tokens),
            ("cached_prompt_tokens", self.cached_prompt_tokens),
        )
        return tuple((field, spec) for field, spec in specs if spec is not None)

    @classmethod
    def for_engine(cls, engine: str) -> MetricNames:
        try:
            return ENGINE_PROFILES[engine]
        except KeyError:
            known = ", ".join(sorted(ENGINE_PROFILES))
            raise MetricSpecError(f"unknown engine {engine!r}; known engines: {known}") from None

    def with_overrides(
        self,
        *,
        total_queued_requests_metric: str | None = None,
        total_running_requests_metric: str | None = None,
        kv_cache_usage_percentage_metric: str | None = None,
        lora_info_metric: str | None = None,
        cache_info_metric: str | None = None,
    ) -> MetricNames:
        """Apply upstream's five override flags; `None` keeps the profile's value, `""` disables
        the optional LoRA / cache-info metrics."""
        names = self
        if total_queued_requests_metric:
            names = replace(names, waiting=_spec(total_queued_requests_metric))
        if total_running_requests_metric:
            names = replace(names, running=_spec(total_running_requests_metric))
        if kv_cache_usage_percentage_metric:
            names = replace(
                names,
                kv_cache_usage=_spec(kv_cache_usage_percentage_metric),
                kv_cache_usage_fallbacks=(),
            )
        if lora_info_metric is not None:
            names = replace(names, lora_info=_spec(lora_info_metric) if lora_info_metric else None)
        if cache_info_metric is not None:
            names = replace(
                names, cache_info=_spec(cache_info_metric) if cache_info_metric else None
            )
        return names

    @property
    def queue_specs(self) -> tuple[MetricSpec, MetricSpec]:
        """Waiting and running: without both, a page says nothing about the engine's load."""
        return (self.waiting, self.running)

    @property
    def primary_families(self) -> tuple[str, ...]:
        """Family names the parser must extract (fallbacks excluded); the rest is skipped."""
        specs = [self.waiting, self.running, self.kv_cache_usage, self.lora_info, self.cache_info]
        specs += [spec for _, spec in self.prefill_counters]
        return tuple(dict.fromkeys(s.name for s in specs if s is not None))

    @property
    def value_only_families(self) -> frozenset[str]:
        """Families read by value alone: label-free specs that share no family with an info
        metric. Whether the page has several series is not known in advance, so this is only
        safe for engines that expose one series per family (vLLM, SGLang per engine)."""
        labelled = {s.name for s in (self.lora_info, self.cache_info) if s is not None}
        specs = (self.waiting, self.running, self.kv_cache_usage)
        labelled |= {s.name for s in specs if s.labels}
        return frozenset(s.name for s in specs if s.name not in labelled)


VLLM = MetricNames(
    waiting=_spec("vllm:num_requests_waiting"),
    running=_spec("vllm:num_requests_running"),
    kv_cache_usage=_spec("vllm:kv_cache_usage_perc"),
    lora_info=_spec("vllm:lora_requests_info"),
    cache_info=_spec("vllm:cache_config_info"),
    kv_cache_usage_fallbacks=(_spec("vllm:gpu_cache_usage_perc"),),
    first_tokens=_spec("vllm:time_to_first_token_seconds_count"),
    first_token_seconds=_spec("vllm:time_to_first_token_seconds_sum"),
    prompt_tokens=_spec("vllm:prompt_tokens_total"),
    cached_prompt_tokens=_spec("vllm:prefix_cache_hits_total"),
)
SGLANG = MetricNames(
    waiting=_spec("sglang:num_queue_reqs"),
    running=_spec("sglang:num_running_reqs"),
    kv_cache_usage=_spec("sglang:token_usage"),
    first_tokens=_spec("sglang:time_to_first_token_seconds_count"),
    first_token_seconds=_spec("sglang:time_to_first_token_seconds_sum"),
    prompt_tokens=_spec("sglang:prompt_tokens_total"),
    cached_prompt_tokens=_spec("sglang:cached_tokens_total"),
)
TRITON_TENSORRT_LLM = MetricNames(
    waiting=_spec("nv_trt_llm_request_metrics{request_type=waiting}"),
    running=_spec("nv_trt_llm_request_metrics{request_type=scheduled}"),
    kv_cache_usage=_spec("nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction}"),
)

# llama.cpp's `llama-server --metrics`: "deferred" requests wait for a free slot, "processing"
# ones hold a slot. Builds up to at least 11434 export no KV-usage gauge (newer ones may, as
# `kv_cache_usage_ratio`): where it is absent, KV use is unknown and the rules that need it step
# aside. llama.cpp has no LoRA or cache-config info series.
LLAMA_CPP = MetricNames(
    waiting=_spec("llamacpp:requests_deferred"),
    running=_spec("llamacpp:requests_processing"),
    kv_cache_usage=_spec("llamacpp:kv_cache_usage_ratio"),
)

ENGINE_PROFILES: dict[str, MetricNames] = {
    "vllm": VLLM,
    "sglang": SGLANG,
    "triton-tensorrt-llm": TRITON_TENSORRT_LLM,
    "llamacpp": LLAMA_CPP,
}
