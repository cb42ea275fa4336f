"""Whatever the workload, the engine keeps vLLM's limits and finishes every request exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.sim.engine import Engine

from .helpers import engine, request

workloads = st.lists(
    st.tuples(
        st.integers(1, 400),  # prompt tokens
        st.integers(1, 120),  # max tokens
        st.integers(-2, 2),  # priority
        st.sampled_from([None, "a", "b"]),  # LoRA adapter
        st.integers(0, 5),  # steps to wait before the next arrival
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(
    workload=workloads,
    blocks=st.integers(32, 200),
    max_num_seqs=st.integers(1, 8),
    budget=st.integers(16, 512),
    policy=st.sampled_from(["fcfs", "priority"]),
)
def test_limits_hold_and_every_request_completes(
    workload: list[tuple[int, int, int, str | None, int]],
    blocks: int,
    max_num_seqs: int,
    budget: int,
    policy: str,
) -> None:
    eng: Engine = engine(
        num_gpu_blocks=blocks,
        block_size=16,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=budget,
        scheduling_policy=policy,
        max_loras=1,
    )
    now, pending, finished, submitted = 0.0, list(enumerate(workload)), {}, set()
    while pending or eng.has_work or eng.next_arrival_time() is not None:
        while pending and pending[0][1][4] == 0:
            i, (prompt, max_tokens, priority, lora, _) = pending.pop(0)
            if -(-(prompt + max_tokens) // 16) <= blocks:
                req = request(f"r{i}", prompt, max_tokens, priority=priority, lora=lora)
                eng.add_request(req, now)
                submitted.add(req.request_id)
        if pending:
            i, spec = pending[0]
            pending[0] = (i, (*spec[:4], spec[4] - 1))
        duration = eng.start_step(now)
        if duration is None:
            now = eng.next_arrival_time() or now + 0.01
            continue
        assert len(eng.running) <= max_num_seqs
        assert sum(n for _, n in eng.batch) <= budget
        assert eng.kv.num_used <= blocks
        assert len({s.request.lora for s in eng.running} - {None}) <= 1
        now += duration
        for seq in eng.finish_step(now):
            if seq.finished:
                finished[seq.request_id] = seq
    assert set(finished) == submitted
    assert all(s.num_output == s.request.output_tokens for s in finished.values())
    assert eng.kv.num_used == 0
    assert eng.metrics().prefix_cache_hits <= eng.metrics().prefix_cache_queries
