"""A tiny scenario in virtual time: deterministic, sane, and reported."""

from __future__ import annotations

from pathlib import Path

from sluice.bench.arms import arm_by_name, standard_arms
from sluice.bench.metrics import summarize
from sluice.bench.readme import END, START, update_perf_table
from sluice.bench.records import RunResult
from sluice.bench.report import render, write_raw
from sluice.bench.runner_virtual import EngineSetup, RunLimits, run_virtual
from sluice.bench.scenarios import SCENARIOS
from sluice.bench.suite import ScenarioResult
from sluice.bench.workloads import BLOCK_TOKENS, shared_prefix, text

SETUP = EngineSetup(count=2, overrides={"num_gpu_blocks": 2000})


def _tiny(arm: str, seed: int = 7) -> RunResult:
    workload = shared_prefix(
        seed=seed,
        qps=6,
        duration_s=4,
        groups=3,
        system_tokens=512,
        question_tokens=32,
        output_tokens=16,
    )
    return run_virtual(
        workload, arm_by_name(arm), SETUP, seed=seed, load=6, limits=RunLimits(drain_s=10)
    )


def _fingerprint(run: RunResult) -> list[tuple[object, ...]]:
    return [
        (r.request_id, r.engine, r.first_token_at, r.completed_at, r.cached_tokens)
        for r in run.records
    ]


def test_same_seed_gives_identical_results() -> None:
    assert _fingerprint(_tiny("sluice-default")) == _fingerprint(_tiny("sluice-default"))
    assert _fingerprint(_tiny("sluice-default")) != _fingerprint(_tiny("sluice-default", seed=8))


def test_every_request_completes_and_prefix_sharing_is_seen_by_the_engines() -> None:
    run = _tiny("upstream-default")
    assert run.records and all(r.outcome == "completed" for r in run.records)
    assert all(r.first_token_at is not None and r.ttft > 0 for r in run.records)
    # 3 groups share 512-token system prompts: the engines' prefix caches must hit.
    assert run.prefix_hits > 0.5 * run.prefix_queries
    assert summarize(run).completed == len([r for r in run.records if r.arrived_at >= run.warmup_s])


def test_prompt_text_has_the_requested_token_count_and_shares_leading_text() -> None:
    from sluice.sim.tokenizer import count_tokens

    assert count_tokens(text("x", 100)) == 100
    workload = shared_prefix(
        seed=1,
        qps=20,
        duration_s=2,
        groups=1,
        system_tokens=100,
        question_tokens=10,
        output_tokens=4,
    )
    system_chars = 4 * (round(100 / BLOCK_TOKENS) * BLOCK_TOKENS)
    prefixes = {a.prompt[:system_chars] for a in workload.arrivals}
    assert len(workload.arrivals) > 1 and len(prefixes) == 1


def test_round_robin_alternates_endpoints() -> None:
    run = _tiny("round-robin")
    engines = [r.engine for r in sorted(run.records, key=lambda r: r.dispatched_at or 0)]
    assert engines[:4] == ["pod-0", "pod-1", "pod-0", "pod-1"]


def test_report_and_raw_data_are_written(tmp_path: Path) -> None:
    scenario = SCENARIOS["shared-prefix"]
    result = ScenarioResult(scenario, ("sluice-default", "round-robin"), (7,), quick=True)
    result.runs = {
        "sluice-default": [_tiny("sluice-default")],
        "round-robin": [_tiny("round-robin")],
    }
    csv_path = write_raw(result, tmp_path)
    assert csv_path.read_text().count("\n") > len(result.runs["round-robin"][0].records)
    text_md = render(
        [result],
        command="sluice bench shared-prefix",
        elapsed_s=1.0,
        plots={},
        relative_to=tmp_path,
    )
    assert "## shared-prefix" in text_md and "| sluice-default |" in text_md
    assert "goodput >= 4x round-robin" in text_md


def test_readme_table_replaces_only_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    assert update_perf_table(readme, [["a", "b"], ["1", "2"]])
    text_md = readme.read_text()
    assert text_md.startswith("intro\n") and text_md.endswith(f"{END}\noutro\n")
    assert "| a | b |" in text_md and "old" not in text_md
    no_markers = tmp_path / "OTHER.md"
    no_markers.write_text("nothing here\n")
    assert not update_perf_table(no_markers, [["a"], ["1"]])
    assert no_markers.read_text() == "nothing here\n"


def test_standard_arms_and_variants_resolve() -> None:
    assert set(standard_arms()) >= {
        "random",
        "round-robin",
        "least-queue",
        "upstream-default",
        "sluice-default",
    }
    variant = arm_by_name("sluice@prefix=5,inflight=8,qd=0")
    assert variant.room.max_in_flight_requests == 8 and variant.room.queue_depth == 0
    assert "weight: 5" in variant.config_yaml
    assert not arm_by_name("upstream-default").queues and arm_by_name("sluice-default").queues
