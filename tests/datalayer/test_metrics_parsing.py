"""Reading engine metrics from Prometheus text: profiles, overrides and upstream's rules."""

from __future__ import annotations

import pytest

from sluice.datalayer.extract import metrics_from_text
from sluice.datalayer.metric_names import MetricNames, MetricSpec, MetricSpecError
from sluice.datalayer.promtext import parse_families

VLLM_PAGE = """\
# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 3.0
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{reason="capacity"} 99.0
vllm:num_requests_running{engine="0",model_name="llama"} 12.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.42
vllm:lora_requests_info{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""} 1.6e9
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql,chat",\
waiting_lora_adapters="x"} 1.7e9
vllm:cache_config_info{block_size="16",num_gpu_blocks="31250"} 1.0
vllm:time_to_first_token_seconds_bucket{le="0.1"} 5.0
"""


def test_vllm_profile_reads_queue_running_kv_lora_and_cache_info() -> None:
    m = metrics_from_text(VLLM_PAGE, MetricNames.for_engine("vllm"), None, now=5.0)
    assert (m.waiting, m.running, m.kv_cache_usage) == (3, 12, 0.42)
    assert m.active_adapters == {"sql", "chat"} and m.waiting_adapters == {"x"}
    assert m.max_adapters == 2
    assert (m.cache_block_size, m.cache_num_blocks) == (16, 31250)
    assert m.updated_at == 5.0


def test_a_family_name_that_prefixes_another_is_not_confused_with_it() -> None:
    samples = parse_families(VLLM_PAGE, ["vllm:num_requests_waiting"])
    assert [s.value for s in samples["vllm:num_requests_waiting"]] == [3.0]


def test_older_vllm_kv_metric_name_is_a_fallback() -> None:
    page = "vllm:gpu_cache_usage_perc 0.7\nvllm:num_requests_waiting 1\n"
    m = metrics_from_text(page, MetricNames.for_engine("vllm"), None, now=0.0)
    assert m.kv_cache_usage == 0.7


def test_missing_metrics_keep_their_previous_values_like_upstream_partial_updates() -> None:
    names = MetricNames.for_engine("vllm")
    before = metrics_from_text(VLLM_PAGE, names, None, now=1.0)
    after = metrics_from_text("vllm:num_requests_waiting 7\n", names, before, now=2.0)
    assert (after.waiting, after.running, after.updated_at) == (7, 12, 2.0)


def test_triton_profile_selects_series_by_label() -> None:
    page = (
        'nv_trt_llm_request_metrics{request_type="waiting"} 4\n'
        'nv_trt_llm_request_metrics{request_type="scheduled"} 9\n'
        'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"} 0.25\n'
        'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used"} 1000\n'
    )
    m = metrics_from_text(page, MetricNames.for_engine("triton-tensorrt-llm"), None, 0.0)
    assert (m.waiting, m.running, m.kv_cache_usage) == (4, 9, 0.25)


def test_sglang_profile() -> None:
    page = "sglang:num_queue_reqs 2\nsglang:num_running_reqs 5\nsglang:token_usage 0.5\n"
    m = metrics_from_text(page, MetricNames.for_engine("sglang"), None, 0.0)
    assert (m.waiting, m.running, m.kv_cache_usage) == (2, 5, 0.5)


def test_the_five_upstream_flags_override_names_and_empty_disables_lora() -> None:
    names = MetricNames.for_engine("vllm").with_overrides(
        total_queued_requests_metric="my_queue{pool=a}",
        total_running_requests_metric="my_running",
        kv_cache_usage_percentage_metric="my_kv",
        lora_info_metric="",
        cache_info_metric="my_cache_info",
    )
    assert names.waiting == MetricSpec("my_queue", (("pool", "a"),))
    assert str(names.waiting) == "my_queue{pool=a}"
    assert names.lora_info is None
    page = 'my_queue{pool="b"} 50\nmy_queue{pool="a"} 6\nmy_running 1\nmy_kv 0.1\n'
    m = metrics_from_text(page, names, None, 0.0)
    assert (m.waiting, m.running, m.kv_cache_usage) == (6, 1, 0.1)


def test_invalid_specs_and_unknown_engines_are_errors() -> None:
    with pytest.raises(MetricSpecError):
        MetricSpec.parse("bad name{")
    with pytest.raises(MetricSpecError, match="known engines"):
        MetricNames.for_engine("tgi")


def test_escaped_label_values_and_timestamps() -> None:
    page = 'info{a="q\\"}",b="line\\nbreak"} 4 1000\n'
    (sample,) = parse_families(page, ["info"])["info"]
    assert sample.labels == {"a": 'q"}', "b": "line\nbreak"}
    assert (sample.value, sample.timestamp_ms) == (4.0, 1000.0)
