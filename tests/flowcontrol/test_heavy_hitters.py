"""Heavy hitters: a flow served far more than the rest of its band lately, with far larger
requests, says so when it asks for room, so that a tenant below its share is not kept waiting
behind its long prefills (the noisy-neighbour scenario of `sluice bench`)."""

from __future__ import annotations

from fc_harness import SlotPool, request
from hypothesis import given
from hypothesis import strategies as st

from sluice.config import parse_flow_control
from sluice.flowcontrol import FlowController
from sluice.flowcontrol.bands import Band
from sluice.flowcontrol.flows import Flow
from sluice.flowcontrol.limits import Limit
from sluice.requests.model import InferenceRequest

WINDOW = 30.0
HEAVY, LIGHT = 4400.0, 550.0  # virtual tokens: a 4,000-token prompt vs a short chat turn


def band(window: float = WINDOW) -> Band:
    return Band(0, limit=Limit(0, 0), fairness="token-fair", ordering="fcfs", share_window_s=window)


def serve(band: Band, tenant: str, cost: float, now: float, *, weight: float = 1.0) -> Flow:
    flow = band.flow(tenant, {tenant: weight})
    band.serve(flow, cost, now)
    return flow


def noisy_neighbours(band: Band, *, seconds: int = 20) -> tuple[Flow, Flow]:
    """Every second: four long requests from `heavy`, one short one from `light`."""
    for t in range(seconds):
        for _ in range(4):
            heavy = serve(band, "heavy", HEAVY, float(t))
        light = serve(band, "light", LIGHT, float(t))
    return heavy, light


def test_a_tenant_with_most_of_the_service_and_long_requests_is_the_heavy_hitter() -> None:
    b = band()
    heavy, light = noisy_neighbours(b)
    assert b.heavy_hitter(heavy, 20.0)
    assert not b.heavy_hitter(light, 20.0)


def test_a_tenant_that_only_sends_more_requests_of_the_same_size_is_not() -> None:
    # The Zipf-popular LoRA adapter: VTC's turns already bound what the others wait behind.
    b = band()
    for t in range(20):
        for _ in range(5):
            popular = serve(b, "popular", LIGHT, float(t))
        serve(b, "rare", LIGHT, float(t))
    assert not b.heavy_hitter(popular, 20.0)


def test_a_tenant_that_only_sends_larger_requests_is_not() -> None:
    # VTC's classic: equal token service, one tenant with 16x larger prompts.
    b = band()
    for t in range(20):
        large = serve(b, "large", 8100.0, float(t))
        for _ in range(13):
            serve(b, "small", 600.0, float(t))
    assert not b.heavy_hitter(large, 20.0)


def test_a_band_with_one_active_flow_has_no_heavy_hitter() -> None:
    b = band()
    for t in range(20):
        only = serve(b, "only", HEAVY, float(t))
    assert not b.heavy_hitter(only, 20.0)


def test_a_larger_fairness_weight_is_a_larger_share() -> None:
    b = band()
    for t in range(20):  # gold is served 32x what light is, and its weight says 32x is fair
        for _ in range(4):
            gold = serve(b, "gold", HEAVY, float(t), weight=32.0)
        serve(b, "light", LIGHT, float(t))
    assert not b.heavy_hitter(gold, 20.0)


def test_the_window_forgets_who_was_heavy() -> None:
    b = band()
    heavy, _ = noisy_neighbours(b)
    # The light tenant goes quiet for longer than the window: nobody is left to protect.
    serve(b, "heavy", HEAVY, 60.0)
    assert not b.heavy_hitter(heavy, 60.0)


def test_a_window_of_zero_turns_it_off() -> None:
    b = band(window=0.0)
    heavy, _ = noisy_neighbours(b)
    assert not b.heavy_hitter(heavy, 20.0)


class HeadroomSlots(SlotPool):
    """One endpoint of `slots` requests; a heavy hitter never takes the last slot."""

    def __init__(self, slots: int) -> None:
        super().__init__({"e": slots})

    def has_room(
        self,
        candidates: frozenset[str] | None,
        priority: int = 0,
        *,
        heavy_hitter: str | None = None,
    ) -> bool:
        return self.free("e") > (1 if heavy_hitter is not None else 0)


def heavy_request() -> InferenceRequest:
    return request("heavy", prompt_tokens=4000, max_tokens=200)


def light_request() -> InferenceRequest:
    return request("light", prompt_tokens=250, max_tokens=150)


def test_the_heavy_hitter_leaves_the_last_slot_so_the_light_tenant_goes_at_once() -> None:
    fc = FlowController()
    pool = HeadroomSlots(4)
    fc.enqueue(light_request(), 0.0)
    for _ in range(20):
        fc.enqueue(heavy_request(), 0.0)
    fc.dispatch(0.0, pool)
    # light and the first heavy request go while nobody is ahead yet; from then on heavy is
    # the heavy hitter and stops one slot short of full.
    assert pool.busy["e"] == 3
    fc.enqueue(light_request(), 1.0)
    [event] = fc.dispatch(1.0, pool)
    assert event.ticket.request.fairness_id == "light"
    assert event.waited_s == 0.0


def test_without_the_window_the_heavy_tenant_fills_every_slot() -> None:
    fc = FlowController(parse_flow_control({"fairShareWindow": 0}))
    pool = HeadroomSlots(4)
    fc.enqueue(light_request(), 0.0)
    for _ in range(20):
        fc.enqueue(heavy_request(), 0.0)
    fc.dispatch(0.0, pool)
    assert pool.busy["e"] == 4
    fc.enqueue(light_request(), 1.0)
    assert fc.dispatch(1.0, pool) == []


def test_the_fair_share_window_is_read_from_the_config() -> None:
    assert FlowController().config.fair_share_window_s == 30.0
    assert parse_flow_control({"fairShareWindow": "1m"}).fair_share_window_s == 60.0


# -- invariants ----------------------------------------------------------------------------

serves = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.floats(1.0, 10_000.0),
        st.floats(0.0, 5.0),  # seconds since the previous serve
        st.floats(-500.0, 0.0),  # a correction at completion (cache hits, shorter output)
    ),
    min_size=1,
    max_size=60,
)


def play(serves: list[tuple[str, float, float, float]], weights: dict[str, float]) -> tuple:
    b = band(window=10.0)
    now = 0.0
    for tenant, cost, gap, correction in serves:
        now += gap
        flow = serve(b, tenant, cost, now, weight=weights.get(tenant, 1.0))
        b.correct(flow, max(correction, -cost), now)
    active = [f for f in b.flows.values() if now - f.recent.at <= 10.0]
    heavy = [f for f in active if b.heavy_hitter(f, now)]
    return active, heavy, now


@given(serves=serves, weights=st.dictionaries(st.sampled_from("abcd"), st.floats(0.5, 4.0)))
def test_the_least_served_flow_is_never_a_heavy_hitter(
    serves: list[tuple[str, float, float, float]], weights: dict[str, float]
) -> None:
    active, heavy, now = play(serves, weights)
    if len(active) <= 1:
        assert heavy == []
        return
    least = min(active, key=lambda f: f.recent.as_of(now, 10.0)[0] / f.weight)
    assert least not in heavy


@given(serves=serves)
def test_of_two_or_three_equal_tenants_at_most_one_is_a_heavy_hitter(
    serves: list[tuple[str, float, float, float]],
) -> None:
    active, heavy, _ = play(serves, {})
    if len(active) <= 3:
        assert len(heavy) <= 1
