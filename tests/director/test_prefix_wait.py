"""A request whose prefix its engine is still computing waits for it, or goes elsewhere when
that is sooner (issue #14 item 3)."""

from __future__ import annotations

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.director.prefix_wait import Computing, wait_or_move
from sluice.scheduling.prefix_computing import Blocked, ComputingPrefixes


def _endpoint(name: str) -> Endpoint:
    return Endpoint(name=name, address="127.0.0.1", port=8000)


def _per_token(name: str, tokens: int) -> float:
    return 0.001 * tokens  # 1,000 tokens/s everywhere


def test_blocks_being_computed_are_not_cached_until_their_request_ends() -> None:
    computing = ComputingPrefixes()
    computing.start("first", "e0", [1, 2, 3])
    assert computing.blocked("e0", [1, 2, 3, 4], 3) == Blocked(0, 3, 4, "first")
    assert computing.blocked("e1", [1, 2, 3, 4], 3) is None  # another engine computes nothing
    computing.start("second", "e0", [3, 4])  # block 3 stays the first request's
    assert computing.blocked("e0", [1, 2, 3, 4], 4) == Blocked(0, 4, 4, "first")
    assert computing.ahead_of("second") == "first"
    computing.end("first")  # block 3 passes to the next in line for it
    assert computing.blocked("e0", [1, 2, 3, 4], 4) == Blocked(2, 4, 4, "second")
    assert computing.ahead_of("second") is None
    computing.end("second")
    assert computing.blocked("e0", [1, 2, 3, 4], 4) is None
    assert len(computing) == 0


def test_waits_when_the_first_prefill_ends_sooner_than_a_cold_one_elsewhere() -> None:
    e0, e1 = _endpoint("e0"), _endpoint("e1")
    endpoints, hold = wait_or_move(
        prompt_tokens=1000,
        endpoints=(e0,),
        blocked=Blocked(0, 9, 10, "first"),
        blocker=Computing(at=0.0, uncached_tokens=900),  # 0.9 s of prefill, 0.5 s done
        others=[(EndpointState(e1), 0.0)],
        estimate=_per_token,
        now=0.5,
        max_hold_s=30.0,
    )
    assert endpoints == (e0,)
    assert hold is not None and hold.blocker == "first"
    # 0.4 s left of the first prefill + 0.1 s of its own suffix beat 1 s cold on e1; the
    # hold lasts until the first request's computation ends, bounded by the room's limit only
    assert hold.until == 0.5 + 30.0


def test_moves_when_another_engine_is_sooner() -> None:
    e0, e1 = _endpoint("e0"), _endpoint("e1")
    endpoints, hold = wait_or_move(
        prompt_tokens=1000,
        endpoints=(e0,),
        blocked=Blocked(0, 9, 10, "first"),
        blocker=Computing(at=0.0, uncached_tokens=9000),  # a long prefill just started
        others=[(EndpointState(e1), 0.0)],
        estimate=_per_token,
        now=0.1,
        max_hold_s=30.0,
    )
    assert endpoints[0] == e1 and hold is None


def test_a_hold_never_outlasts_the_room_limit() -> None:
    e0 = _endpoint("e0")
    _, hold = wait_or_move(
        prompt_tokens=1000,
        endpoints=(e0,),
        blocked=Blocked(0, 9, 10, "first"),
        blocker=Computing(at=0.0, uncached_tokens=100_000),
        others=[],
        estimate=_per_token,
        now=0.0,
        max_hold_s=2.0,
    )
    assert hold is not None and hold.until == 2.0


def test_requests_sharing_a_busy_prefix_go_one_after_another() -> None:
    """llama.cpp (`computingPrefixes: completion`): a slot holding a prefix is busy until its
    request ends, so the requests waiting for it go one at a time, in the order they came —
    not all at once onto slots that would each compute it again."""
    computing = ComputingPrefixes()
    for name in ("first", "a", "b", "c"):
        computing.start(name, "e0", [1, 2, 3])
    assert [computing.ahead_of(n) for n in ("first", "a", "b", "c")] == [None, *["first"] * 3]
    computing.end("first")
    assert [computing.ahead_of(n) for n in ("a", "b", "c")] == [None, "a", "a"]
    computing.end("a")
    assert [computing.ahead_of(n) for n in ("b", "c")] == [None, "b"]
    computing.end("b")
    computing.end("c")
    assert computing.blocked("e0", [1, 2, 3], 3) is None and len(computing) == 0


def test_a_close_call_waits_rather_than_compute_the_prefix_twice() -> None:
    """Elsewhere a little sooner than waiting is not enough: the move computes the prefix a
    second time, so it must win even counted twice."""
    e0, e1 = _endpoint("e0"), _endpoint("e1")
    endpoints, hold = wait_or_move(
        prompt_tokens=1000,
        endpoints=(e0,),
        blocked=Blocked(0, 9, 10, "first"),
        blocker=Computing(at=0.0, uncached_tokens=1000),  # 1.0 s left + 0.1 s suffix
        others=[(EndpointState(e1), 0.0)],  # 1.0 s cold on e1: sooner, but not by half
        estimate=_per_token,
        now=0.0,
        max_hold_s=30.0,
    )
    assert endpoints == (e0,) and hold is not None
