"""The latency properties routing depends on, in virtual time (exact and fast)."""

from __future__ import annotations

import pytest

from sluice.sim.profiles import PROFILES
from sluice.sim.request import SimRequest
from sluice.sim.virtual import VirtualCluster

from .helpers import H100, completed, engine, request, run_alone


def test_ttft_grows_linearly_with_uncached_prompt_tokens() -> None:
    ttft = {n: run_alone(request(f"r{n}", n)).ttft for n in (16, 1024, 2048, 4096)}
    slope = (ttft[4096] - ttft[16]) / (4096 - 16)
    for n in (1024, 2048):
        assert ttft[n] == pytest.approx(ttft[16] + slope * (n - 16), rel=1e-9)
    assert 0.00015 <= slope <= 0.0003  # 0.15–0.3 ms per prompt token


def test_llama_8b_h100_is_calibrated_to_published_figures() -> None:
    short = run_alone(request("short", 16, max_tokens=33))
    assert 0.025 <= short.ttft <= 0.040  # TTFT overhead 25–40 ms
    itl = (short.e2e - short.ttft) / 32
    assert 0.010 <= itl <= 0.015  # ITL 10–15 ms at light load
    assert 0.060 <= run_alone(request("mid", 256)).ttft <= 0.120  # 60–120 ms at 256 tokens


def test_a_repeated_prefix_cuts_ttft_by_the_cached_share() -> None:
    shared = "s" * (4 * 3072)  # 3072 tokens = 192 full blocks
    first = SimRequest.from_text("first", shared + "a" * 4096, max_tokens=4)
    second = SimRequest.from_text("second", shared + "b" * 4096, max_tokens=4)
    cluster = VirtualCluster({"e": engine()})
    cluster.submit("e", first, at=0.0)
    cluster.submit("e", second, at=5.0)
    done = completed(cluster.run())
    overhead = run_alone(request("tiny", 1)).ttft  # fixed cost, no prefill to speak of
    assert done["second"].usage.cached_tokens == 3072
    uncached_share = (4096 - 3072) / 4096
    assert done["second"].ttft - overhead == pytest.approx(
        (done["first"].ttft - overhead) * uncached_share, rel=0.01
    )


def test_beyond_max_num_seqs_requests_wait_and_ttft_includes_the_wait() -> None:
    eng = engine(max_num_seqs=4)
    cluster = VirtualCluster({"e": eng})
    for i in range(8):
        cluster.submit("e", request(f"r{i}", 64, max_tokens=100))
    cluster.run_until(0.5)
    snapshot = cluster.metrics("e")
    assert (snapshot.num_requests_running, snapshot.num_requests_waiting) == (4, 4)
    done = completed(cluster.run())
    first_wave_end = max(done[f"r{i}"].e2e for i in range(4))
    unqueued = done["r0"].ttft
    for i in range(4, 8):
        assert done[f"r{i}"].ttft >= first_wave_end  # waited for a slot ...
        assert done[f"r{i}"].ttft > unqueued + 0.9  # ... about 100 decode steps


def test_itl_grows_with_batch_size() -> None:
    def mean_itl(batch: int) -> float:
        cluster = VirtualCluster({"e": engine()})
        for i in range(batch):
            cluster.submit("e", request(f"r{i}", 512, max_tokens=200))
        done = completed(cluster.run()).values()
        return sum((c.e2e - c.ttft) / 199 for c in done) / batch

    itls = [mean_itl(b) for b in (1, 16, 64, 128)]
    assert itls == sorted(itls) and itls[-1] > itls[0] * 1.5


def test_chunked_prefill_splits_a_long_prompt_across_steps() -> None:
    whole = run_alone(request("r", 4096), engine(max_num_batched_tokens=8192))
    chunked = run_alone(request("r", 4096), engine(max_num_batched_tokens=1024))
    # Four steps instead of one: three extra fixed step costs.
    assert chunked.ttft - whole.ttft == pytest.approx(3 * H100.cost.step_overhead_s, rel=0.01)


def test_a_long_prefill_slows_the_decodes_it_shares_steps_with() -> None:
    cluster = VirtualCluster({"e": engine(max_num_batched_tokens=512)})
    cluster.submit("e", request("decoder", 16, max_tokens=100))
    cluster.submit("e", request("prefill", 8000, max_tokens=1), at=0.2)
    events = cluster.run()
    alone = run_alone(request("decoder", 16, max_tokens=100))
    assert completed(events)["decoder"].e2e > alone.e2e + 0.05


def test_zero_latency_profile_costs_nothing() -> None:
    profile = PROFILES["zero-latency"]
    done = run_alone(request("r", 1000, max_tokens=50), engine(profile.cost))
    assert (done.ttft, done.e2e, done.usage.completion_tokens) == (0.0, 0.0, 50)
