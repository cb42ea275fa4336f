"""The virtual-time API a benchmark drives: submit at times, read events and metrics."""

from __future__ import annotations

import pytest

from sluice.sim.engine import Engine
from sluice.sim.request import SimRequest
from sluice.sim.tokenizer import count_tokens
from sluice.sim.virtual import Completed, FirstToken, TokenGenerated, VirtualCluster

from .helpers import completed, engine, request


def test_events_arrive_in_time_order_with_usage() -> None:
    cluster = VirtualCluster({"a": engine(), "b": engine()})
    cluster.submit("a", request("r1", 100, max_tokens=3))
    cluster.submit("b", request("r2", 100, max_tokens=3), at=0.01)
    events = cluster.run()
    assert [e.time for e in events] == sorted(e.time for e in events)
    kinds = [(type(e).__name__, e.engine_id) for e in events]
    assert kinds == [
        ("FirstToken", "a"),
        ("FirstToken", "b"),
        ("Completed", "a"),
        ("Completed", "b"),
    ]
    done = completed(events)["r1"]
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (
        100,
        3,
        103,
    )


def test_token_events_are_opt_in() -> None:
    cluster = VirtualCluster({"a": engine()}, token_events=True)
    cluster.submit("a", request("r", 10, max_tokens=4))
    assert [e.index for e in cluster.run() if isinstance(e, TokenGenerated)] == [1, 2, 3, 4]


def test_run_until_stops_at_the_given_time_and_reports_metrics_then() -> None:
    cluster = VirtualCluster({"a": engine()})
    cluster.submit("a", request("r", 10, max_tokens=1000))
    events = cluster.run_until(0.5)
    assert cluster.now == 0.5
    assert [type(e) for e in events] == [FirstToken]
    assert cluster.metrics("a").num_requests_running == 1
    assert 'vllm:num_requests_running{model_name="sim-model"} 1.0' in cluster.render_metrics("a")
    next_time = cluster.next_event_time()
    assert next_time is not None and next_time > 0.5


def test_the_caller_can_interleave_its_own_decisions() -> None:
    """A replay loop: jump to the next engine event or the next arrival, whichever is first."""
    cluster = VirtualCluster({"a": engine()})
    arrivals = [(0.0, "r0"), (0.02, "r1"), (0.5, "r2")]
    finished: list[str] = []
    while arrivals or cluster.next_event_time() is not None:
        t_engine = cluster.next_event_time()
        t_arrival = arrivals[0][0] if arrivals else None
        t = min(x for x in (t_engine, t_arrival) if x is not None)
        finished += [e.request_id for e in cluster.run_until(t) if isinstance(e, Completed)]
        while arrivals and arrivals[0][0] <= t:
            cluster.submit("a", request(arrivals.pop(0)[1], 50, max_tokens=5), at=t)
    assert finished == ["r0", "r1", "r2"]


def test_abort_frees_the_request_without_a_completion() -> None:
    cluster = VirtualCluster({"a": engine()})
    cluster.submit("a", request("r", 10, max_tokens=1000))
    cluster.abort("a", "r", at=0.2)
    events = cluster.run()
    assert not any(isinstance(e, Completed) for e in events)
    assert cluster.metrics("a").kv_cache_usage_perc == 0.0


def test_replays_are_bit_reproducible() -> None:
    def replay() -> list[object]:
        cluster = VirtualCluster([engine(max_num_seqs=3), engine(max_num_seqs=3)])
        for i in range(30):
            cluster.submit(
                str(i % 2), request(f"r{i}", 50 + 37 * i, max_tokens=20 + i), at=i * 0.013
            )
        return cluster.run()

    assert replay() == replay()


def test_time_cannot_go_backwards() -> None:
    cluster = VirtualCluster({"a": engine()})
    cluster.run_until(1.0)
    with pytest.raises(ValueError):
        cluster.submit("a", request("r", 10), at=0.5)


def test_engines_and_requests_have_shortcuts_for_replays() -> None:
    eng = Engine.from_profile("llama-70b-h100-tp4", model_name="big", max_num_seqs=8)
    assert (eng.model_name, eng.config.max_num_seqs, eng.cost.step_overhead_s) == ("big", 8, 0.022)
    chat = SimRequest.from_chat("c", [{"role": "user", "content": "hello"}], max_tokens=3)
    assert chat.prompt_tokens == count_tokens("<|user|>\nhello<|end|>\n<|assistant|>\n")
    cluster = VirtualCluster({"big": eng})
    cluster.submit("big", chat)
    assert completed(cluster.run())["c"].usage.completion_tokens == 3
