"""The requests an engine runs at once while the load is offered: what a pool's throughput
follows (docs/room.md, "The trade-off")."""

from __future__ import annotations

from sluice.bench.metrics import engine_concurrency
from sluice.bench.records import RequestRecord, RunResult


def _record(dispatched: float | None, completed: float | None) -> RequestRecord:
    record = RequestRecord("r", "t", 0, 0.0, prompt_tokens=10, max_tokens=10)
    record.dispatched_at, record.completed_at = dispatched, completed
    return record


def _run(*records: RequestRecord) -> RunResult:
    return RunResult(
        scenario="s",
        arm="a",
        seed=1,
        load=1.5,
        records=list(records),
        samples=[],
        prefix_hits=0,
        prefix_queries=0,
        duration_s=10.0,
        warmup_s=2.0,
        cpu_s=0.0,
    )


def test_time_in_the_engines_is_clipped_to_the_window_between_warm_up_and_the_last_arrival() -> (
    None
):
    run = _run(
        _record(0.0, 4.0),  # 2 s of it after warm-up
        _record(3.0, 30.0),  # 7 s of it before the last arrival; the drain does not count
        _record(None, None),  # still queued in the router: not in an engine
    )
    # 9 request-seconds over an 8 s window on 2 engines
    assert engine_concurrency(run, engines=2) == 9 / 8 / 2


def test_a_request_still_running_at_the_end_counts_until_the_last_arrival() -> None:
    assert engine_concurrency(_run(_record(6.0, None)), engines=1) == 4 / 8
