"""A snapshot of an engine's metrics and its rendering as vLLM's Prometheus text.

The snapshot is what a scraper would read; ``render`` writes the exact names vLLM exposes, each
with the ``model_name`` label, so an EPP cannot tell the simulator from the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.sim.histogram import HistogramSnapshot

METRIC_NAMES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:lora_requests_info",
    "vllm:cache_config_info",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
)


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    model_name: str
    num_requests_running: int
    num_requests_waiting: int
    kv_cache_usage_perc: float
    prefix_cache_queries: int  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int  # of which found
    running_lora_adapters: tuple[str, ...]
    waiting_lora_adapters: tuple[str, ...]
    max_lora: int
    lora_info_time: float  # engine time of the last LoRA state update (vLLM's gauge value)
    block_size: int
    num_gpu_blocks: int
    time_to_first_token: HistogramSnapshot
    inter_token_latency: HistogramSnapshot
    e2e_request_latency: HistogramSnapshot
    prompt_tokens: int
    generation_tokens: int
    num_preemptions: int  # not exported (vLLM's name is outside the EPP's list); for tests


def _fmt(value: float) -> str:
    return repr(float(value))


def _labels(pairs: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(m: EngineMetrics, *, clock_offset: float = 0.0) -> str:
    """Prometheus text exposition. ``clock_offset`` turns engine time into Unix time for the
    LoRA info gauge (its value is a timestamp)."""
    model = {"model_name": m.model_name}
    base = _labels(model)
    out: list[str] = []

    def sample(name: str, kind: str, value: float, labels: str = base, help_: str = "") -> None:
        out.append(
            f"# HELP {name} {help_ or name}\n# TYPE {name} {kind}\n{name}{labels} {_fmt(value)}\n"
        )

    sample(
        "vllm:num_requests_running",
        "gauge",
        m.num_requests_running,
        help_="Requests in model execution batches.",
    )
    sample(
        "vllm:num_requests_waiting",
        "gauge",
        m.num_requests_waiting,
        help_="Requests waiting to be processed.",
    )
    sample(
        "vllm:kv_cache_usage_perc",
        "gauge",
        m.kv_cache_usage_perc,
        help_="KV-cache usage. 1 means 100 percent usage.",
    )
    sample(
        "vllm:gpu_cache_usage_perc",
        "gauge",
        m.kv_cache_usage_perc,
        help_="GPU KV-cache usage (deprecated name).",
    )
    sample(
        "vllm:prefix_cache_queries_total",
        "counter",
        m.prefix_cache_queries,
        help_="Prefix cache queries, in tokens.",
    )
    sample(
        "vllm:prefix_cache_hits_total",
        "counter",
        m.prefix_cache_hits,
        help_="Prefix cache hits, in tokens.",
    )
    lora = _labels(
        {
            **model,
            "running_lora_adapters": ",".join(m.running_lora_adapters),
            "waiting_lora_adapters": ",".join(m.waiting_lora_adapters),
            "max_lora": str(m.max_lora),
        }
    )
    sample(
        "vllm:lora_requests_info",
        "gauge",
        m.lora_info_time + clock_offset,
        lora,
        "Running stats on LoRA requests.",
    )
    cache = _labels(
        {**model, "block_size": str(m.block_size), "num_gpu_blocks": str(m.num_gpu_blocks)}
    )
    sample("vllm:cache_config_info", "gauge", 1, cache, "Information of the LLMEngine CacheConfig.")
    for name, hist in (
        ("vllm:time_to_first_token_seconds", m.time_to_first_token),
        ("vllm:inter_token_latency_seconds", m.inter_token_latency),
        ("vllm:e2e_request_latency_seconds", m.e2e_request_latency),
    ):
        out.append(f"# HELP {name} {name}\n# TYPE {name} histogram\n")
        for bound, count in zip((*hist.bounds, float("inf")), hist.cumulative):
            le = "+Inf" if bound == float("inf") else _fmt(bound)
            out.append(
                f'{name}_bucket{{model_name="{_escape(m.model_name)}",le="{le}"}} {_fmt(count)}\n'
            )
        out.append(f"{name}_count{base} {_fmt(hist.count)}\n{name}_sum{base} {_fmt(hist.sum)}\n")
    sample(
        "vllm:prompt_tokens_total", "counter", m.prompt_tokens, help_="Prefill tokens processed."
    )
    sample(
        "vllm:generation_tokens_total",
        "counter",
        m.generation_tokens,
        help_="Generation tokens processed.",
    )
    return "".join(out)
