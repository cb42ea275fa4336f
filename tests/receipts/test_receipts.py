"""Decision receipts, on the real director core: each request's receipt names the rule of the
room that held it and the scores that chose its endpoint, and both agree with a recomputation
from the inputs the receipt recorded."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.bench.harness.core import core_from_config
from sluice.config import load_sluice_config
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointState
from sluice.director import DispatchedRequest
from sluice.flowcontrol.model import Ticket
from sluice.receipts import DecisionFilter, Receipt, ReceiptRecorder, ReceiptRing
from sluice.receipts.query import FilterError
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest, Outcome, Usage
from sluice.room import RoomSettings, has_room, hold_rule
from sluice.sources.state import PoolKey, PoolState

ENDPOINTS = tuple(Endpoint(f"pod-{i}", f"10.0.0.{i + 1}", 8000) for i in range(3))


class Pool:
    def __init__(self) -> None:
        config = load_sluice_config(None)
        self.settings = config.room
        self.ring = ReceiptRing(max_entries=100, max_bytes=1 << 20)
        self.recorder = ReceiptRecorder(self.ring)
        self.placed: list[DispatchedRequest] = []
        self.errors: list[SluiceError] = []
        self.now = 0.0

        def released(ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
            (self.errors if isinstance(result, SluiceError) else self.placed).append(result)  # type: ignore[arg-type]

        self.core = core_from_config(config, released, receipts=self.recorder)
        self.core.set_state(
            PoolState(PoolKey("pool", "ns"), pool=SimpleNamespace(), endpoints=ENDPOINTS), 0.0
        )

    def scrape(self, **by_endpoint: EngineMetrics) -> None:
        for name, metrics in by_endpoint.items():
            mark = self.core.registry.begin_scrape(name.replace("_", "-"))
            assert mark is not None
            self.core.registry.record_scrape(mark, metrics)
        self.core.pump(self.now)

    def send(
        self,
        request_id: str,
        fairness: str = "tenant-a",
        priority: int = 0,
        subset: frozenset[str] | None = None,
    ) -> None:
        request = InferenceRequest(
            request_id=request_id,
            api="chat",  # type: ignore[arg-type]
            model="m",
            target_model="m",
            body=b"{}",
            prompt_tokens=100,
            prompt="hello " * 50,
            fairness_id=fairness,
            priority=priority,
            objective="chat",
            subset_hint=subset,
        )
        self.core.submit(request, self.now)
        self.core.pump(self.now)


def fresh(now: float, **kw: float) -> EngineMetrics:
    return EngineMetrics(updated_at=now, **kw)  # type: ignore[arg-type]


HIGHER = 1_000_000  # a band above any the tests send


def state_from(name: str, inputs: dict[str, object], at: float) -> EndpointState:
    """An endpoint as the receipt recorded it, rebuilt for the room's rules."""
    age = inputs["age_s"]
    above = int(inputs["higher_band_prefills"])  # type: ignore[call-overload]
    metrics = EngineMetrics(
        waiting=int(inputs["waiting"]),  # type: ignore[call-overload]
        running=int(inputs["running"]),  # type: ignore[call-overload]
        kv_cache_usage=float(inputs["kv_cache_usage"]),  # type: ignore[arg-type]
        kv_cache_known=bool(inputs["kv_cache_known"]),
        updated_at=float("-inf") if age is None else at - float(age),  # type: ignore[arg-type]
    )
    return EndpointState(
        Endpoint(name, "0.0.0.0", 0),
        metrics=metrics,
        in_flight_requests=int(inputs["in_flight"]),  # type: ignore[call-overload]
        unseen_requests=int(inputs["unseen"]),  # type: ignore[call-overload]
        pending_prefill_tokens=int(inputs["pending_prefill_tokens"]),  # type: ignore[call-overload]
        # the higher bands' pending prefills: the count is all a lower band's rule reads
        pending_by_priority={HIGHER: [above, 0]} if above else {},
    )


def test_a_held_request_names_the_rule_and_the_scores_that_chose_its_endpoint() -> None:
    pool = Pool()
    # No engine has reported yet: every one is stale, so the request waits.
    pool.send("r1")
    assert not pool.placed
    # Two engines report, both too busy (a long queue; a full KV cache); the third stays stale.
    pool.now = 1.0
    pool.scrape(pod_0=fresh(1.0, waiting=9), pod_1=fresh(1.0, kv_cache_usage=0.95))
    assert not pool.placed
    # pod-1's cache drains: the request is released there.
    pool.now = 1.5
    pool.scrape(pod_1=fresh(1.5, kv_cache_usage=0.1))
    assert [p.endpoint.name for p in pool.placed] == ["pod-1"]
    dispatched = pool.placed[0]
    dispatched.first_byte(1.6)
    dispatched.finish(Outcome.COMPLETED, 2.0, Usage(prompt_tokens=98, completion_tokens=7))

    [receipt] = DecisionFilter(request_id="r1").decoded(pool.ring)
    assert receipt["waited_s"] == pytest.approx(1.5)
    assert receipt["held_by"] in {"queue-depth", "kv-cache", "stale-metrics"}
    hold = receipt["hold"]
    assert hold["rules"] == {
        "pod-0": "queue-depth",
        "pod-1": "kv-cache",
        "pod-2": "stale-metrics",
    }
    # The hold, recomputed from what the receipt recorded, refuses the same way.
    for name, rule in hold["rules"].items():
        state = state_from(name, hold["inputs"][name], hold["at"])
        kw = {
            "lower_band": hold["lower_band"],
            "contended": hold["contended"],
            "priority": receipt["priority"],
        }
        assert hold_rule(state, hold["at"], pool.settings, **kw) == rule
        assert not has_room(state, hold["at"], pool.settings, **kw)

    # The scores: each total is the weighted sum of the raw scores, and the pick is the best.
    profile = receipt["scheduling"]["profiles"][0]
    assert profile["scorers"], "the default profile scores"
    for endpoint, total in profile["totals"].items():
        recomputed = sum(
            s["weight"] * min(1.0, max(0.0, s["raw"][endpoint])) for s in profile["scorers"]
        )
        assert total == pytest.approx(recomputed)
        for s in profile["scorers"]:
            assert s["weighted"][endpoint] == pytest.approx(
                s["weight"] * min(1.0, max(0.0, s["raw"][endpoint]))
            )
    best = max(profile["totals"].values())
    assert profile["totals"][profile["picker"]["picked"][0]] == best
    assert receipt["endpoint"] == profile["picker"]["picked"][0] == "10.0.0.2:8000"
    assert receipt["outcome"] == "completed"
    assert receipt["ttft_s"] == pytest.approx(0.1)
    assert (receipt["prompt_tokens"], receipt["completion_tokens"]) == (98, 7)
    assert receipt["prefix_match_tokens"] == 0  # the first request: nothing cached yet
    assert pool.recorder.open_receipts == 0


def test_a_request_released_at_once_waited_for_nothing() -> None:
    pool = Pool()
    pool.scrape(**{f"pod_{i}": fresh(0.0) for i in range(3)})
    pool.send("r1")
    pool.placed[0].finish(Outcome.COMPLETED, 0.5)
    [receipt] = DecisionFilter().decoded(pool.ring)
    assert receipt["held_by"] is None and receipt["hold"] is None
    assert receipt["waited_s"] == 0.0
    scores = pool.placed[0].endpoint_scores()
    assert scores is not None and set(scores) == {e.hostport for e in ENDPOINTS}


def test_a_repeated_prompt_records_its_prefix_match() -> None:
    pool = Pool()
    pool.scrape(**{f"pod_{i}": fresh(0.0) for i in range(3)})
    for rid in ("r1", "r2"):
        pool.send(rid)
        pool.placed[-1].finish(Outcome.COMPLETED, 0.1)
    first, second = DecisionFilter().decoded(pool.ring)[::-1]
    assert second["endpoint"] == first["endpoint"]
    assert second["prefix_match_tokens"] > 0


def test_a_rejected_request_has_a_receipt_with_its_reason() -> None:
    pool = Pool()
    with pytest.raises(SluiceError):
        pool.send("r1", subset=frozenset({"10.9.9.9:8000"}))  # no such endpoint
    [receipt] = DecisionFilter(outcome="rejected").decoded(pool.ring)
    assert receipt["reason"] and pool.recorder.rejections == {receipt["reason"]: 1}


def test_filters_select_by_every_field() -> None:
    pool = Pool()
    pool.scrape(**{f"pod_{i}": fresh(0.0) for i in range(3)})
    for i, tenant in enumerate(["a", "b", "a"]):
        pool.send(f"r{i}", fairness=tenant)
        pool.placed[-1].finish(Outcome.COMPLETED, 0.1)
    assert [r["request_id"] for r in DecisionFilter(fairness_id="a").decoded(pool.ring)] == [
        "r2",
        "r0",
    ]
    assert len(DecisionFilter(objective="chat", limit=2).decoded(pool.ring)) == 2
    endpoint = pool.placed[0].endpoint.hostport
    assert all(
        r["endpoint"] == endpoint for r in DecisionFilter(endpoint=endpoint).decoded(pool.ring)
    )
    with pytest.raises(FilterError, match="tenant"):
        DecisionFilter.from_query({"tenant": "a"})
    with pytest.raises(FilterError, match="limit=0"):
        DecisionFilter.from_query({"limit": "0"})


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=200),
    max_entries=st.integers(min_value=0, max_value=50),
    max_bytes=st.integers(min_value=0, max_value=40_000),
)
def test_the_ring_never_exceeds_its_bounds(
    sizes: list[int], max_entries: int, max_bytes: int
) -> None:
    ring = ReceiptRing(max_entries, max_bytes)
    for i, size in enumerate(sizes):
        receipt = Receipt(i, "r" * size, None, "m", 0, "tenant", 10, 0.0)
        receipt.outcome = "completed"
        ring.add(receipt)
        assert len(ring) <= max_entries
        assert ring.bytes <= max_bytes
        assert ring.bytes == sum(r.footprint() for r in ring.newest_first())


def test_a_receipt_read_later_says_what_it_said_when_its_request_ended() -> None:
    """The ring keeps receipts unrendered; the pool moving on does not change them."""
    pool = Pool()
    pool.scrape(**{f"pod_{i}": fresh(0.0, waiting=i) for i in range(3)})
    pool.send("r1")
    pool.placed[-1].finish(Outcome.COMPLETED, 0.1)
    [at_the_end] = DecisionFilter().decoded(pool.ring)
    for i in range(20):
        pool.now += 0.05
        pool.scrape(**{f"pod_{j}": fresh(pool.now, waiting=(i + j) % 5) for j in range(3)})
        pool.send(f"later-{i}")
        pool.placed[-1].finish(Outcome.COMPLETED, pool.now + 0.01)
    assert DecisionFilter(request_id="r1").decoded(pool.ring) == [at_the_end]


@given(
    waiting=st.integers(0, 10),
    kv=st.floats(0, 1),
    age=st.floats(0, 1),
    unseen=st.integers(0, 4),
    pending=st.integers(0, 5000),
    in_flight=st.integers(0, 10),
    lower_band=st.booleans(),
    contended=st.booleans(),
    higher_band_prefills=st.integers(0, 2),
)
def test_hold_rule_is_none_exactly_when_there_is_room(
    waiting: int,
    kv: float,
    age: float,
    unseen: int,
    pending: int,
    in_flight: int,
    lower_band: bool,
    contended: bool,
    higher_band_prefills: int,
) -> None:
    settings = RoomSettings(
        max_unseen_requests=2,
        max_in_flight_requests=6,
        lower_priority_max_in_flight=3,
        max_pending_prefill_tokens=2048,
    )
    state = EndpointState(
        Endpoint("e", "1.1.1.1", 1),
        metrics=EngineMetrics(waiting=waiting, kv_cache_usage=kv, updated_at=10.0 - age),
        unseen_requests=unseen,
        pending_prefill_tokens=pending,
        in_flight_requests=in_flight,
        pending_by_priority={10: [higher_band_prefills, 0]} if higher_band_prefills else {},
    )
    kw: dict[str, Any] = {"lower_band": lower_band, "contended": contended, "priority": 0}
    assert has_room(state, 10.0, settings, **kw) == (hold_rule(state, 10.0, settings, **kw) is None)
