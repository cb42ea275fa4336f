"""A realistic vLLM `/metrics` page (v0.10-style families, histograms included) for benchmarks."""

from __future__ import annotations

_LABELS = 'engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"'
_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]
_HISTOGRAMS = [
    "vllm:time_to_first_token_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_inference_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
    "vllm:iteration_tokens_total",
    "vllm:request_max_num_generation_tokens",
    "vllm:request_params_n",
    "vllm:request_params_max_tokens",
    "vllm:inter_token_latency_seconds",
]


def vllm_metrics_page(waiting: int = 3, running: int = 12, kv: float = 0.42) -> str:
    out: list[str] = []

    def gauge(name: str, value: float, labels: str = _LABELS, kind: str = "gauge") -> None:
        out.append(f"# HELP {name} {name.split(':')[1].replace('_', ' ')}.")
        out.append(f"# TYPE {name} {kind}")
        out.append(f"{name}{{{labels}}} {value}")

    gauge("vllm:num_requests_running", running)
    gauge("vllm:num_requests_waiting", waiting)
    gauge("vllm:kv_cache_usage_perc", kv)
    gauge("vllm:prefix_cache_queries_total", 123456.0, kind="counter")
    gauge("vllm:prefix_cache_hits_total", 65432.0, kind="counter")
    gauge("vllm:num_preemptions_total", 7.0, kind="counter")
    gauge("vllm:prompt_tokens_total", 9876543.0, kind="counter")
    gauge("vllm:generation_tokens_total", 1234567.0, kind="counter")
    for reason in ("stop", "length", "abort"):
        gauge(
            "vllm:request_success_total", 1000.0, f'{_LABELS},finished_reason="{reason}"', "counter"
        )
    gauge(
        "vllm:lora_requests_info",
        1.7e9,
        'max_lora="4",running_lora_adapters="sql-lora,chat-lora",waiting_lora_adapters=""',
    )
    gauge(
        "vllm:cache_config_info",
        1.0,
        'block_size="16",cache_dtype="auto",enable_prefix_caching="True",'
        'gpu_memory_utilization="0.9",num_cpu_blocks="0",num_gpu_blocks="31250"',
    )
    for name in _HISTOGRAMS:
        out.append(f"# HELP {name} Histogram of {name}.")
        out.append(f"# TYPE {name} histogram")
        count = 0
        for le in _BUCKETS:
            count += 17
            out.append(f'{name}_bucket{{{_LABELS},le="{le}"}} {count}.0')
        out.append(f'{name}_bucket{{{_LABELS},le="+Inf"}} {count}.0')
        out.append(f"{name}_count{{{_LABELS}}} {count}.0")
        out.append(f"{name}_sum{{{_LABELS}}} {count * 0.37:.3f}")
    # Process / Python collector families a real page also carries.
    for name in (
        "python_gc_objects_collected_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ):
        out.append(f"# TYPE {name} gauge")
        out.append(f"{name} 12345.0")
    return "\n".join(out) + "\n"
