"""The waiting queue's order (FCFS or priority), LoRA slots and stop conditions."""

from __future__ import annotations

import pytest

from sluice.sim.request import SimRequest
from sluice.sim.virtual import FirstToken, VirtualCluster

from .helpers import completed, engine, request


def first_token_order(policy: str) -> list[str]:
    cluster = VirtualCluster({"e": engine(max_num_seqs=1, scheduling_policy=policy)})
    cluster.submit("e", request("busy", 16, max_tokens=50))
    for rid, priority in (("low", 5), ("normal", 0), ("urgent", -3)):
        cluster.submit("e", request(rid, 16, max_tokens=2, priority=priority), at=0.1)
    return [e.request_id for e in cluster.run() if isinstance(e, FirstToken)]


def test_fcfs_serves_the_waiting_queue_in_arrival_order() -> None:
    assert first_token_order("fcfs") == ["busy", "low", "normal", "urgent"]


def test_priority_policy_serves_lower_values_first_as_vllm() -> None:
    assert first_token_order("priority") == ["busy", "urgent", "normal", "low"]


def test_priority_policy_preempts_the_least_urgent_running_request() -> None:
    cluster = VirtualCluster(
        {"e": engine(num_gpu_blocks=12, block_size=16, scheduling_policy="priority")}
    )
    cluster.submit("e", request("background", 32, max_tokens=120, priority=10))
    cluster.submit("e", request("urgent", 32, max_tokens=120, priority=-1), at=0.05)
    done = completed(cluster.run())
    assert done["background"].num_preemptions > 0
    assert done["urgent"].num_preemptions == 0


def test_max_loras_limits_the_adapters_in_a_batch() -> None:
    eng = engine(max_loras=1)
    cluster = VirtualCluster({"e": eng})
    cluster.submit("e", request("a", 16, max_tokens=20, lora="adapter-a"))
    cluster.submit("e", request("b", 16, max_tokens=20, lora="adapter-b"))
    cluster.run_until(0.1)
    m = cluster.metrics("e")
    assert (m.running_lora_adapters, m.waiting_lora_adapters, m.max_lora) == (
        ("adapter-a",),
        ("adapter-b",),
        1,
    )
    done = completed(cluster.run())
    assert done["b"].ttft >= done["a"].e2e  # b's adapter could only load once a was done
    assert eng.loras.loads == 2 and eng.loras.resident == ["adapter-b"]


def test_loading_an_adapter_costs_its_delay_once() -> None:
    eng = engine(max_loras=2)
    cluster = VirtualCluster({"e": eng})
    cluster.submit("e", request("cold", 16, max_tokens=1, lora="adapter-a"))
    cluster.submit("e", request("warm", 16, max_tokens=1, lora="adapter-a"), at=1.0)
    done = completed(cluster.run())
    assert done["cold"].ttft - done["warm"].ttft == pytest.approx(eng.cost.lora_load_s)


def test_max_tokens_and_ignore_eos_decide_the_length() -> None:
    text = "tell me a story" * 10
    runs_to_max = SimRequest.from_text("a", text, max_tokens=500, ignore_eos=True)
    natural = SimRequest.from_text(
        "b", text, max_tokens=500, ignore_eos=False, seed=1, mean_output_tokens=40
    )
    again = SimRequest.from_text(
        "c", text, max_tokens=500, ignore_eos=False, seed=1, mean_output_tokens=40
    )
    cluster = VirtualCluster({"e": engine()})
    for r in (runs_to_max, natural, again):
        cluster.submit("e", r)
    done = completed(cluster.run())
    assert (done["a"].usage.completion_tokens, done["a"].finish_reason) == (500, "length")
    assert done["b"].finish_reason == "stop" and done["b"].usage.completion_tokens < 500
    assert (
        done["c"].usage.completion_tokens == done["b"].usage.completion_tokens
    )  # seeded by the prompt


def test_requests_that_cannot_fit_are_rejected() -> None:
    cluster = VirtualCluster({"e": engine(num_gpu_blocks=4, block_size=16)})
    cluster.submit("e", request("huge", 60, max_tokens=10))
    (event,) = cluster.run()
    assert event.request_id == "huge" and "never fit" in getattr(event, "reason", "")
