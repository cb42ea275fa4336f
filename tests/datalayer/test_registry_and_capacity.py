"""The endpoint registry: membership, staleness, in-flight accounting, pending prefills."""

from __future__ import annotations

from dataclasses import fields

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry


def _endpoint(i: int) -> Endpoint:
    return Endpoint(f"pod-{i}", f"10.0.0.{i}", 8000)


def _scrape(registry: EndpointRegistry, name: str, now: float, **fields: float) -> None:
    mark = registry.begin_scrape(name)
    assert mark is not None
    registry.record_scrape(mark, EngineMetrics(updated_at=now, **fields))  # type: ignore[arg-type]


def test_endpoints_that_stay_keep_their_state_across_membership_updates() -> None:
    registry = EndpointRegistry()
    registry.set_endpoints([_endpoint(1), _endpoint(2)])
    _scrape(registry, "pod-1", 1.0, waiting=4)
    registry.set_endpoints([_endpoint(1), _endpoint(3)])
    assert [s.name for s in registry.snapshot()] == ["pod-1", "pod-3"]
    state = registry.get("pod-1")
    assert state is not None and state.metrics.waiting == 4


def test_a_failing_scrape_never_removes_an_endpoint_it_only_goes_stale() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    _scrape(registry, "pod-1", 1.0)
    mark = registry.begin_scrape("pod-1")
    assert mark is not None
    registry.record_scrape_failure(mark, "timeout")
    state = registry.get("pod-1")
    assert state is not None and state.consecutive_failures == 1
    assert state.is_fresh(1.1, 0.2) and not state.is_fresh(1.3, 0.2)


def test_dispatches_after_a_scrape_started_stay_unseen_until_the_next_scrape() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    registry.dispatch("pod-1", 100)  # before the scrape: the engine will report it
    mark = registry.begin_scrape("pod-1")
    assert mark is not None
    ticket = registry.dispatch("pod-1", 50)  # in flight while the scrape is answered
    registry.record_scrape(mark, EngineMetrics(waiting=1, updated_at=1.0))
    state = registry.get("pod-1")
    assert state is not None
    assert (state.in_flight_requests, state.in_flight_tokens) == (2, 150)
    assert (state.unseen_requests, state.unseen_tokens) == (1, 50)
    registry.complete(ticket)
    assert (state.in_flight_requests, state.unseen_requests, state.unseen_tokens) == (1, 0, 0)


def test_a_request_seen_by_a_scrape_that_ends_counts_as_ended_until_the_next_scrape() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    seen = [registry.dispatch("pod-1", 100) for _ in range(3)]
    _scrape(registry, "pod-1", 1.0, running=3)
    unseen = registry.dispatch("pod-1", 100)
    state = registry.get("pod-1")
    assert state is not None
    registry.complete(seen[0])
    registry.complete(unseen)  # the engine never counted it: nothing to take off its count
    assert state.ended_since_scrape == 1
    mark = registry.begin_scrape("pod-1")
    assert mark is not None
    registry.complete(seen[1])  # after the scrape began: its page, made then, still counts it
    registry.record_scrape(mark, EngineMetrics(running=2, updated_at=1.1))  # type: ignore[arg-type]
    assert state.ended_since_scrape == 1  # so the engine runs 2 - 1: seen[2]


def test_a_late_answer_to_an_older_scrape_is_ignored() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    old, new = registry.begin_scrape("pod-1"), registry.begin_scrape("pod-1")
    assert old is not None and new is not None
    registry.record_scrape(new, EngineMetrics(waiting=2, updated_at=2.0))
    registry.record_scrape(old, EngineMetrics(waiting=9, updated_at=2.1))
    state = registry.get("pod-1")
    assert state is not None and state.metrics.waiting == 2


def test_completing_on_a_removed_endpoint_is_harmless() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    ticket = registry.dispatch("pod-1", 10)
    registry.remove("pod-1")
    registry.complete(ticket)
    assert len(registry) == 0


def test_restamped_copies_every_field() -> None:
    # restamped() lists the fields by hand for speed: a new field must be added there too.
    assert [f.name for f in fields(EngineMetrics)] == [
        "waiting",
        "running",
        "kv_cache_usage",
        "active_adapters",
        "waiting_adapters",
        "max_adapters",
        "cache_block_size",
        "cache_num_blocks",
        "updated_at",
        "extra",
        "first_tokens",
        "first_token_seconds",
        "prompt_tokens",
        "cached_prompt_tokens",
        "kv_cache_known",
        "missing_metrics",
    ]
    original = EngineMetrics(
        waiting=1,
        running=2,
        kv_cache_usage=0.3,
        active_adapters=frozenset({"a"}),
        waiting_adapters=frozenset({"b"}),
        max_adapters=4,
        cache_block_size=16,
        cache_num_blocks=99,
        updated_at=5.0,
        extra={"x": 1.0},
        first_tokens=3.0,
        first_token_seconds=0.5,
        prompt_tokens=900.0,
        cached_prompt_tokens=100.0,
        kv_cache_known=False,
        missing_metrics=("llamacpp:kv_cache_usage_ratio",),
    )
    copy = original.restamped(7.0)
    assert copy is not original and copy.updated_at == 7.0
    for f in fields(EngineMetrics):
        if f.name != "updated_at":
            assert getattr(copy, f.name) == getattr(original, f.name), f.name


def _pending(registry: EndpointRegistry) -> int:
    state = registry.get("pod-1")
    assert state is not None
    return state.pending_prefills


def test_a_pending_prefill_ends_at_its_first_byte_or_when_its_estimate_passes() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    streamed = registry.dispatch("pod-1", 700, prefill_tokens=600, prefill_due_at=10.5)
    registry.dispatch("pod-1", 700, prefill_tokens=600, prefill_due_at=10.8)
    assert registry.first_byte(streamed) and not registry.first_byte(streamed)
    registry.settle_prefills(10.7)
    assert _pending(registry) == 1
    registry.settle_prefills(10.8)
    assert _pending(registry) == 0
    assert registry.prefills_ended["first_byte"] == 1
    assert registry.prefills_ended["estimate"] == 1


def test_the_engines_first_token_counter_ends_pending_prefills_in_dispatch_order() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    _scrape(registry, "pod-1", 1.0, first_tokens=50)  # the counter's anchor
    for _ in range(3):
        registry.dispatch("pod-1", 700, prefill_tokens=600)
    _scrape(registry, "pod-1", 1.05, first_tokens=52)  # two of them had their first token
    assert _pending(registry) == 1
    assert registry.prefills_ended["engine"] == 2


def test_the_counter_only_ends_dispatches_the_scrape_could_have_seen() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    _scrape(registry, "pod-1", 1.0, first_tokens=0)
    registry.dispatch("pod-1", 700, prefill_tokens=600)
    mark = registry.begin_scrape("pod-1")
    assert mark is not None
    registry.dispatch("pod-1", 700, prefill_tokens=600)  # sent while the scrape was answered
    registry.record_scrape(mark, EngineMetrics(updated_at=1.1, first_tokens=5))  # bypass traffic
    assert _pending(registry) == 1


def test_a_dispatch_that_failed_before_its_first_token_shifts_the_counting() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    _scrape(registry, "pod-1", 1.0, first_tokens=10)
    failed = registry.dispatch("pod-1", 700, prefill_tokens=600)
    registry.dispatch("pod-1", 700, prefill_tokens=600)
    registry.complete(failed, got_first_token=False)  # it never reaches the engine's counter
    _scrape(registry, "pod-1", 1.05, first_tokens=11)  # so this one is the second dispatch
    assert _pending(registry) == 0


def test_an_engine_restart_reanchors_the_counter_without_ending_anything() -> None:
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    _scrape(registry, "pod-1", 1.0, first_tokens=500)
    registry.dispatch("pod-1", 700, prefill_tokens=600)
    _scrape(registry, "pod-1", 1.05, first_tokens=3)  # counters went back: a new process
    assert _pending(registry) == 1
    _scrape(registry, "pod-1", 1.1, first_tokens=4)
    assert _pending(registry) == 0


def test_a_detached_dispatch_stays_counted_until_its_estimated_end() -> None:
    # A gateway that shows Sluice no response: the request stays in Sluice's in-flight count
    # (and unseen until a scrape begun after it), its prefill pending until the engine's counter
    # or the prefill estimate ends it, and the whole request until its estimated end.
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    ticket = registry.dispatch("pod-1", 700, prefill_tokens=600, prefill_due_at=0.5)
    registry.detach(ticket, dispatched_at=0.0, ends_at=2.0, prefill_s=0.5, output_tokens=64)
    state = registry.get("pod-1")
    assert state is not None
    assert (state.in_flight_requests, state.in_flight_tokens) == (1, 700)
    assert (state.unseen_requests, state.pending_prefills) == (1, 1)
    _scrape(registry, "pod-1", 0.2, running=1)  # the engine runs it: nothing ends
    registry.settle_prefills(0.5)
    registry.settle_detached(1.9)
    assert (state.unseen_requests, state.pending_prefills, state.in_flight_requests) == (0, 0, 1)
    registry.settle_detached(2.0)
    assert (state.in_flight_requests, state.in_flight_tokens) == (0, 0)
    assert registry.detached_ended == {"engine": 0, "estimate": 1}


def test_a_scrape_that_shows_fewer_running_ends_the_oldest_detached_dispatches() -> None:
    # The engine's own count is the ground truth a gateway without responses still has: when it
    # runs fewer than Sluice counts, the oldest detached dispatches it saw are over, each a
    # sample of how long it took (it ended between the last two scrapes).
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    tickets = [registry.dispatch("pod-1", 100 + i) for i in range(3)]
    for i, ticket in enumerate(tickets):
        registry.detach(ticket, dispatched_at=0.1 * i, ends_at=9.0, output_tokens=64)
    attached = registry.dispatch("pod-1", 50)  # the response will be seen: never ended so
    _scrape(registry, "pod-1", 1.0, running=4)
    state = registry.get("pod-1")
    assert state is not None
    assert state.in_flight_requests == 4 and not registry.detached_ends
    late = registry.dispatch("pod-1", 70)  # unseen by the next scrape's answer below
    mark = registry.begin_scrape("pod-1")
    assert mark is not None
    registry.dispatch("pod-1", 80)  # dispatched after that scrape began: not in its count
    registry.detach(late, dispatched_at=1.05, ends_at=9.0)
    registry.record_scrape(mark, EngineMetrics(updated_at=1.1, running=3))
    # Seen: 3 detached + the attached one + `late` = 5; the engine runs 3: the two oldest ended.
    assert [e.dispatch.tokens for e in registry.detached_ends] == [100, 101]
    assert [(e.after, e.by) for e in registry.detached_ends] == [(1.0, 1.1), (1.0, 1.1)]
    assert state.in_flight_requests == 4 and registry.detached_ended["engine"] == 2
    registry.complete(attached)
    registry.settle_detached(9.0)
    assert state.in_flight_requests == 1  # the one dispatched after the scrape began


def test_an_estimate_ended_detached_dispatch_still_counts_for_the_engine_until_shown_gone() -> None:
    # Its estimate passed while the engine still ran it: uncounted, but still expected in the
    # engine's count, so a later scrape showing one fewer ends it (a sample), not another one.
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    early = registry.dispatch("pod-1", 100)
    registry.detach(early, dispatched_at=0.0, ends_at=1.0, output_tokens=10)
    later = registry.dispatch("pod-1", 200)
    registry.detach(later, dispatched_at=0.5, ends_at=9.0, output_tokens=10)
    _scrape(registry, "pod-1", 0.6, running=2)
    registry.settle_detached(1.0)
    state = registry.get("pod-1")
    assert state is not None and state.in_flight_tokens == 200
    _scrape(registry, "pod-1", 1.2, running=2)  # both still running: nothing ends
    assert state.in_flight_tokens == 200 and not registry.detached_ends
    _scrape(registry, "pod-1", 1.4, running=1)
    assert [e.dispatch.tokens for e in registry.detached_ends] == [100]
    assert state.in_flight_tokens == 200 and registry.detached_ended["engine"] == 0
    registry.settle_detached(100.0)  # and nothing is kept past its hold
    assert state.in_flight_requests == 0 and not state._detached


def test_the_counter_leaves_a_streamed_dispatch_to_its_first_byte() -> None:
    """Engines are only roughly FIFO: a short prompt sent after a long one gets its first token
    first. A light tenant's quick first tokens must not end a heavy prefill still running, so a
    dispatch whose first byte will come is ended by that byte (or its estimate), never the
    counter; one whose byte will not come (non-streamed, or detached) still is."""
    registry = EndpointRegistry()
    registry.add(_endpoint(1))
    _scrape(registry, "pod-1", 1.0, first_tokens=0)
    heavy = registry.dispatch("pod-1", 4200, prefill_tokens=4000, first_byte_expected=True)
    light = registry.dispatch("pod-1", 300, prefill_tokens=200, first_byte_expected=True)
    assert registry.first_byte(light)
    _scrape(registry, "pod-1", 1.05, first_tokens=1)  # the light one's first token
    assert _pending(registry) == 1 and registry.prefills_ended["engine"] == 0
    # No byte will come now: the engine's word is all there is.
    registry.detach(heavy, dispatched_at=1.0, ends_at=9.0)
    _scrape(registry, "pod-1", 1.10, first_tokens=2)
    assert _pending(registry) == 0 and registry.prefills_ended["engine"] == 1
