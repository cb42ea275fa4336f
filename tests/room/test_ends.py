"""When a detached request is over: its estimated end, learned from the scrapes that showed
detached requests gone and from attached completions (room/ends.py), and the room putting it
to use (`Room.settle`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.room import EndEstimator, Room, RoomSettings


def test_an_endpoint_never_seen_ends_its_requests_at_the_prior_rate() -> None:
    ends = EndEstimator(RoomSettings(decode_seconds_per_token=0.02, max_detached_hold_s=10))
    assert ends.duration("new", 0.1, 64) == pytest.approx(0.1 + 64 * 0.02)
    assert ends.duration("new", 0.1, 100_000) == 10, "never past the longest hold"


def test_completions_teach_an_endpoint_its_decode_rate_and_it_stays_its_own() -> None:
    ends = EndEstimator(RoomSettings(decode_seconds_per_token=0.02))
    for _ in range(30):
        ends.observe("fast", 100, 0.5)  # 5 ms per token
    # The prior pulls a little.
    assert ends.seconds_per_token("fast") == pytest.approx(0.005, rel=0.1)
    assert ends.seconds_per_token("other") == 0.02


def _scrape(registry: EndpointRegistry, now: float, running: int) -> None:
    mark = registry.begin_scrape("e")
    assert mark is not None
    registry.record_scrape(mark, EngineMetrics(updated_at=now, running=running))


@settings(max_examples=50, deadline=None)
@given(
    st.floats(0.005, 0.05),  # the engine's true seconds per output token
    st.sampled_from((0.01, 0.05, 0.1)),  # the scrape interval
    st.integers(16, 256),  # output tokens
)
def test_the_scrapes_that_show_detached_requests_gone_teach_when_they_end(
    per_token: float, interval: float, output: int
) -> None:
    # Behind a gateway that shows no response, a stream of detached requests one after another:
    # each truly takes its prefill estimate plus `output` x `per_token`; the engine's count,
    # scraped every `interval`, is all Sluice learns. The estimate comes within half a scrape
    # interval (the resolution of that signal) of the truth, plus the prior's pull.
    registry = EndpointRegistry()
    registry.add(Endpoint("e", "10.0.0.1", 8000))
    room = Room(RoomSettings(decode_seconds_per_token=0.02))
    now = 0.0
    for _ in range(40):
        ticket = registry.dispatch("e", 700)
        ends_at, prefill_s = room.detached_end("e", 600, output, now)
        registry.detach(
            ticket, dispatched_at=now, ends_at=ends_at, prefill_s=prefill_s, output_tokens=output
        )
        true_end = now + prefill_s + output * per_token
        while now < true_end:
            _scrape(registry, now, running=1)
            now += interval
        _scrape(registry, now, running=0)  # the first scrape that shows it gone
        room.settle(registry, now)
        state = registry.get("e")
        assert state is not None and state.in_flight_requests == 0
    took = room.ends.duration("e", prefill_s, output)
    truth = prefill_s + output * per_token
    assert abs(took - truth) <= interval / 2 + 0.05 * truth


def test_the_room_takes_a_detached_request_out_of_the_count_at_its_estimated_end() -> None:
    registry = EndpointRegistry()
    registry.add(Endpoint("e", "10.0.0.1", 8000))
    room = Room(RoomSettings(decode_seconds_per_token=0.01))
    ticket = registry.dispatch("e", 700)
    ends_at, prefill_s = room.detached_end("e", 600, 64, 0.0)
    registry.detach(ticket, dispatched_at=0.0, ends_at=ends_at, prefill_s=prefill_s)
    state = registry.get("e")
    assert state is not None
    room.settle(registry, ends_at - 1e-3)
    assert state.in_flight_requests == 1
    room.settle(registry, ends_at)
    assert state.in_flight_requests == 0
