"""The director: what every front end gets from `parse` / `admit` / `finish`.

Engines are represented by the registry's metrics (as a scrape would set them) and time by a
hand-driven clock, so each test states exactly how much room the pool has.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from sluice.api import parse_resource
from sluice.config import load_sluice_config
from sluice.datalayer.endpoint import EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.director import Director
from sluice.director.contract import Outcome
from sluice.flowcontrol.controller import FlowController
from sluice.requests.errors import ErrorCode, SluiceError
from sluice.requests.model import InferenceRequest, Usage
from sluice.scheduling.scheduler import Scheduler
from sluice.sources.state import PodInfo, PoolKey, PoolState, Snapshot, build_state

KEY = PoolKey("pool", "default")
CONFIG = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
flowControl:
  maxRequests: 4
  defaultRequestTTL: 30s
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool_state(ports: tuple[int, ...] = (8001, 8002)) -> PoolState:
    snapshot = Snapshot()
    snapshot.pools["default/pool"] = parse_resource(
        {
            "apiVersion": "inference.networking.k8s.io/v1",
            "kind": "InferencePool",
            "metadata": {"name": "pool", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "llm"}},
                "targetPorts": [{"number": p} for p in ports],
                "endpointPickerRef": {"name": "sluice", "port": {"number": 9002}},
            },
        }
    )
    for name, priority in (("interactive", 10), ("batch", -1)):
        snapshot.objectives[f"default/{name}"] = parse_resource(
            {
                "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
                "kind": "InferenceObjective",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"priority": priority, "poolRef": {"name": "pool"}},
            }
        )
    snapshot.pods["default/p"] = PodInfo("p", "default", {"app": "llm"}, "10.0.0.1", True)
    return build_state(KEY, snapshot)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def director(clock: Clock) -> Director:
    return director_with(CONFIG, clock)


def report(director: Director, clock: Clock, *, waiting: int, names: tuple[str, ...] = ()) -> None:
    """Every endpoint (or those named) reports `waiting` queued requests, fresh now."""
    for state in director.registry.snapshot():
        if names and state.name not in names:
            continue
        mark = director.registry.begin_scrape(state.name)
        assert mark is not None
        director.registry.record_scrape(mark, EngineMetrics(waiting=waiting, updated_at=clock.now))


def chat(director: Director, objective: str | None = None, **headers: str) -> InferenceRequest:
    body = json.dumps(
        {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi there"}]}
    ).encode()
    all_headers = {"content-type": "application/json", **headers}
    if objective:
        all_headers["x-gateway-inference-objective"] = objective
    return director.parse(all_headers, body, path="/v1/chat/completions")


async def test_an_idle_pool_dispatches_at_once(director: Director, clock: Clock) -> None:
    report(director, clock, waiting=0)
    request = chat(director)
    admitted = await asyncio.wait_for(director.admit(request), 0.5)
    assert admitted.endpoints[0].address == "10.0.0.1"
    assert len(set(admitted.endpoints)) == len(admitted.endpoints)
    assert director.in_flight == 1
    assert sum(s.in_flight_requests for s in director.registry.snapshot()) == 1
    admitted.finish(Outcome.COMPLETED, Usage(prompt_tokens=3, completion_tokens=8))
    admitted.finish(Outcome.COMPLETED)  # a second finish is ignored
    assert director.in_flight == 0
    assert sum(s.in_flight_requests for s in director.registry.snapshot()) == 0


async def test_priority_comes_from_the_objective_in_the_pools_namespace(
    director: Director,
) -> None:
    assert chat(director, "interactive").priority == 10
    assert chat(director, "batch").priority == -1
    assert chat(director, "unknown").priority == 0
    assert chat(director).priority == 0


async def test_a_saturated_pool_queues_and_serves_higher_priority_first(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=50)  # every engine is over the queue-depth threshold
    order: list[str] = []

    async def go(name: str, objective: str | None) -> None:
        admitted = await director.admit(chat(director, objective))
        order.append(name)
        admitted.finish(Outcome.COMPLETED)

    tasks = [
        asyncio.create_task(go("batch", "batch")),
        asyncio.create_task(go("standard", None)),
        asyncio.create_task(go("interactive", "interactive")),
    ]
    await asyncio.sleep(0.02)
    assert order == [] and director.flow.queued_requests == 3
    report(director, clock, waiting=0)
    director.pump()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert order == ["interactive", "standard", "batch"]


async def test_a_client_that_leaves_the_queue_frees_its_place_at_once(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=50)
    task = asyncio.create_task(director.admit(chat(director)))
    await asyncio.sleep(0.01)
    assert director.flow.queued_requests == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert director.flow.queued_requests == 0
    assert director.in_flight == 0


async def test_a_full_queue_answers_429_with_retry_after(director: Director, clock: Clock) -> None:
    report(director, clock, waiting=50)
    waiting = [asyncio.create_task(director.admit(chat(director))) for _ in range(4)]
    await asyncio.sleep(0.01)
    with pytest.raises(SluiceError) as info:
        await director.admit(chat(director))
    assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert info.value.http_status == 429
    assert info.value.retry_after_s is not None and info.value.retry_after_s > 0
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_higher_priority_arrival_displaces_the_newest_lower_one(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=50)
    low = [asyncio.create_task(director.admit(chat(director))) for _ in range(4)]
    await asyncio.sleep(0.01)
    high = asyncio.create_task(director.admit(chat(director, "interactive")))
    await asyncio.sleep(0.01)
    assert low[-1].done()
    with pytest.raises(SluiceError) as info:
        low[-1].result()
    assert info.value.http_status == 429
    assert not high.done()
    for task in [*low[:-1], high]:
        task.cancel()
    await asyncio.gather(*low, high, return_exceptions=True)


async def test_ttl_expiry_on_a_pool_with_endpoints_answers_429(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=50)
    request = chat(director, **{"x-sluice-request-ttl": "50ms"})
    task = asyncio.create_task(director.admit(request))
    await asyncio.sleep(0.01)
    clock.now += 0.06
    with pytest.raises(SluiceError) as info:
        await asyncio.wait_for(task, 1)
    assert info.value.http_status == 429  # llm-d-router: the pool is contended, not gone
    assert info.value.dropped_reason == "rejected-ttl-expired"
    assert "timed out in queue" in info.value.message
    assert director.flow.queued_requests == 0


async def test_a_subset_hint_restricts_the_candidates(director: Director, clock: Clock) -> None:
    report(director, clock, waiting=0)
    body = json.dumps({"model": "m", "prompt": "hello"}).encode()
    only = director.parse(
        {}, body, path="/v1/completions", subset_hint=frozenset({"10.0.0.1:8002"})
    )
    admitted = await director.admit(only)
    assert admitted.endpoints[0].hostport == "10.0.0.1:8002"
    admitted.finish(Outcome.COMPLETED)

    empty = director.parse({}, body, path="/v1/completions", subset_hint=frozenset())
    with pytest.raises(SluiceError) as info:
        await director.admit(empty)
    assert info.value.http_status == 503


async def test_an_item_whose_candidates_are_full_does_not_block_others(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=50, names=("p-rank-0",))
    report(director, clock, waiting=0, names=("p-rank-1",))
    body = json.dumps({"model": "m", "prompt": "hello"}).encode()
    stuck = director.parse(
        {}, body, path="/v1/completions", subset_hint=frozenset({"10.0.0.1:8001"})
    )
    stuck_task = asyncio.create_task(director.admit(stuck))
    await asyncio.sleep(0.01)
    free = await asyncio.wait_for(director.admit(chat(director)), 0.5)
    assert free.endpoints[0].hostport == "10.0.0.1:8002"
    assert not stuck_task.done()
    stuck_task.cancel()
    await asyncio.gather(stuck_task, return_exceptions=True)


async def test_an_empty_pool_keeps_requests_waiting_then_answers_503(clock: Clock) -> None:
    """Scale from zero: a request that finds no endpoint waits `noEndpointRequestTTL` (here
    following the 30 s defaultRequestTTL) for one, then gets its 503."""
    config = load_sluice_config(CONFIG)
    director = Director(
        scheduler=Scheduler.from_config(config.picker),
        flow=FlowController(config.flow),
        registry=EndpointRegistry(),
        room=config.room,
        clock=clock,
    )
    task = asyncio.create_task(director.admit(chat(director)))
    await asyncio.sleep(0.01)
    assert not task.done() and director.flow.queued_requests == 1
    clock.now += 30.0
    director.pump()
    with pytest.raises(SluiceError) as info:
        await asyncio.wait_for(task, 1)
    assert info.value.http_status == 503
    assert info.value.dropped_reason == "rejected-no-endpoints"
    with pytest.raises(SluiceError) as info:
        director.pick_any()
    assert info.value.http_status == 500


async def test_a_request_waiting_for_the_first_endpoint_is_served_when_it_comes(
    clock: Clock,
) -> None:
    config = load_sluice_config(CONFIG)
    director = Director(
        scheduler=Scheduler.from_config(config.picker),
        flow=FlowController(config.flow),
        registry=EndpointRegistry(),
        room=config.room,
        clock=clock,
    )
    task = asyncio.create_task(director.admit(chat(director)))
    await asyncio.sleep(0.01)
    clock.now += 29.0  # a cold start, within the budget
    director.set_state(pool_state())
    report(director, clock, waiting=0)
    director.pump()
    admitted = await asyncio.wait_for(task, 1)
    assert admitted.endpoints[0].address == "10.0.0.1"
    admitted.finish(Outcome.COMPLETED)


async def test_usage_seen_in_the_response_corrects_the_fairness_charge(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=0)
    admitted = await director.admit(chat(director, **{"x-gateway-inference-fairness-id": "a"}))
    admitted.observe_response_chunk(b'data: {"choices":[]}\n\n', streaming=True)
    admitted.observe_response_chunk(
        b'data: {"usage":{"prompt_tokens":100,"completion_tokens":7}}\n\ndata: [DONE]\n\n',
        streaming=True,
    )
    admitted.finish(Outcome.COMPLETED)
    band = director.flow.band(0)
    assert band is not None
    flow = band.flows["a"]
    cost = director.flow.config.token_cost
    assert flow.counter == pytest.approx(cost.actual(Usage(prompt_tokens=100, completion_tokens=7)))


def test_the_engine_priority_option_writes_vllms_priority_field(clock: Clock) -> None:
    config = load_sluice_config(
        CONFIG.replace("maxRequests: 4", "maxRequests: 4\n  enginePriority: true")
    )
    director = Director(
        scheduler=Scheduler.from_config(config.picker),
        flow=FlowController(config.flow),
        registry=EndpointRegistry(),
        room=config.room,
        clock=clock,
    )
    director.set_state(pool_state())
    body = json.loads(chat(director, "interactive").body)
    assert body["priority"] < json.loads(chat(director, "batch").body)["priority"]


def director_with(config_text: str, clock: Clock) -> Director:
    config = load_sluice_config(config_text)
    director = Director(
        scheduler=Scheduler.from_config(config.picker, rng=random.Random(1)),
        flow=FlowController(config.flow),
        registry=EndpointRegistry(),
        room=config.room,
        clock=clock,
        rng=random.Random(1),
    )
    director.set_state(pool_state())
    return director


HEADROOM = (
    CONFIG + "saturationDetector:\n"
    "  maxInFlightPerEndpoint: 2\n"
    "  maxInFlightPerEndpointBelowTopPriority: 1\n"
    "  maxPendingPrefillTokensPerEndpoint: 0\n"
)


async def test_while_a_higher_band_is_expected_lower_bands_get_a_tighter_cap(
    clock: Clock,
) -> None:
    director = director_with(HEADROOM, clock)
    report(director, clock, waiting=0)
    first = await director.admit(chat(director, "interactive"))  # the interactive class is here
    first.finish(Outcome.COMPLETED)
    standard = [await director.admit(chat(director)) for _ in range(2)]  # one per endpoint
    queued = asyncio.create_task(director.admit(chat(director)))
    await asyncio.sleep(0.01)
    assert not queued.done(), "standard traffic is held to one request per endpoint"
    interactive = await asyncio.wait_for(director.admit(chat(director, "interactive")), 0.5)
    assert interactive.endpoint in {s.endpoint for s in standard}
    interactive.finish(Outcome.COMPLETED)
    await asyncio.sleep(0.01)
    assert not queued.done(), "the freed slot is above the lower bands' cap"
    standard[0].finish(Outcome.COMPLETED)
    admitted = await asyncio.wait_for(queued, 0.5)
    for each in (admitted, standard[1]):
        each.finish(Outcome.COMPLETED)


async def test_the_headroom_lapses_once_the_higher_band_stops_arriving(clock: Clock) -> None:
    # A reserve nobody is expected to use is an idle slot while work waits: one interactive
    # request long ago keeps no headroom (hold: at most reserveHoldMax, 30 s by default).
    director = director_with(HEADROOM, clock)
    report(director, clock, waiting=0)
    (await director.admit(chat(director, "interactive"))).finish(Outcome.COMPLETED)
    clock.now += 31.0
    report(director, clock, waiting=0)
    standard = [
        await asyncio.wait_for(director.admit(chat(director)), 0.5) for _ in range(4)
    ]  # two per endpoint: the all-band cap, not the lower band's
    assert sorted(s.endpoint.port for s in standard) == [8001, 8001, 8002, 8002]
    for each in standard:
        each.finish(Outcome.COMPLETED)


async def test_a_pool_without_traffic_above_keeps_no_headroom(clock: Clock) -> None:
    # The objectives define a priority 10, but nobody sends it: standard gets every slot.
    director = director_with(HEADROOM, clock)
    report(director, clock, waiting=0)
    standard = [await asyncio.wait_for(director.admit(chat(director)), 0.5) for _ in range(4)]
    assert sorted(s.endpoint.port for s in standard) == [8001, 8001, 8002, 8002]
    for each in standard:
        each.finish(Outcome.COMPLETED)


async def test_a_released_request_may_go_to_a_busier_endpoint_that_scores_better(
    clock: Clock,
) -> None:
    # The release gate is pool-wide (as upstream's saturation detector); placement weighs every
    # fresh candidate, so prefix affinity survives load.
    director = director_with(
        CONFIG
        + "plugins: [{type: prefix-cache-scorer}]\n"
        + "schedulingProfiles: [{name: default, plugins: [{pluginRef: prefix-cache-scorer}]}]\n",
        clock,
    )
    report(director, clock, waiting=0)
    long_prompt = {"model": "m", "max_tokens": 4, "prompt": "shared system prompt " * 100}
    body = json.dumps(long_prompt).encode()
    first = await director.admit(director.parse({}, body, path="/v1/completions"))
    first.finish(Outcome.COMPLETED)
    report(director, clock, waiting=50, names=(first.endpoint.name,))
    again = await asyncio.wait_for(
        director.admit(director.parse({}, body, path="/v1/completions")), 0.5
    )
    assert again.endpoint == first.endpoint
    again.finish(Outcome.COMPLETED)


async def test_endpoints_with_stale_metrics_get_no_new_requests(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=0)
    clock.now += 1.0  # both endpoints' metrics are now stale...
    report(director, clock, waiting=0, names=("p-rank-1",))  # ...but one answers again
    for _ in range(5):
        admitted = await director.admit(chat(director))
        assert admitted.endpoint.name == "p-rank-1"
        admitted.finish(Outcome.COMPLETED)


async def test_an_endpoint_that_refused_a_connection_gets_no_new_requests(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=0)
    admitted = await director.admit(chat(director))
    refused = admitted.endpoint
    fallback = next(e for e in director.endpoints() if e != refused)
    admitted.retarget(fallback)
    admitted.finish(Outcome.COMPLETED)
    for _ in range(5):
        again = await director.admit(chat(director))
        assert again.endpoint == fallback
        again.finish(Outcome.COMPLETED)


async def test_a_prefill_is_pending_until_the_first_response_byte(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=0)
    request = chat(director)
    admitted = await director.admit(request)
    state = director.registry.get(admitted.endpoint.name)
    assert state is not None
    assert state.pending_prefills == 1
    assert state.pending_prefill_tokens == request.prompt_tokens
    admitted.observe_response_chunk(b'data: {"choices": []}\n\n', streaming=True)
    assert (state.pending_prefills, state.pending_prefill_tokens) == (0, 0)
    admitted.finish(Outcome.COMPLETED)
    assert state.in_flight_requests == 0


ONE_PREFILL = CONFIG + "saturationDetector: {maxPendingPrefillTokensPerEndpoint: 1}\n"
ALICE = {"x-gateway-inference-fairness-id": "alice"}
BOB = {"x-gateway-inference-fairness-id": "bob"}


async def test_an_endpoint_busy_prefilling_its_budget_takes_no_more(clock: Clock) -> None:
    # Two tenants share the pool: a prefill one of them waits behind is held in Sluice.
    director = director_with(ONE_PREFILL, clock)
    report(director, clock, waiting=0)
    first = await director.admit(chat(director, **ALICE))
    second = await director.admit(chat(director, **BOB))
    assert first.endpoint != second.endpoint, "the first endpoint is still prefilling"
    third = asyncio.create_task(director.admit(chat(director, **ALICE)))
    await asyncio.sleep(0.01)
    assert not third.done(), "both endpoints are prefilling: the request waits in Sluice"
    first.first_byte()
    director.pump()
    placed = await asyncio.wait_for(third, 0.5)
    assert placed.endpoint == first.endpoint
    for each in (first, second, placed):
        each.finish(Outcome.COMPLETED)


async def test_a_single_tenant_pool_lets_the_engines_batch_its_prefills(clock: Clock) -> None:
    # Nobody else is expected whose first token a held prefill would protect: holding it would
    # only idle the engine (a non-streamed closed loop ran at 0.26x round-robin that way).
    director = director_with(ONE_PREFILL, clock)
    report(director, clock, waiting=0)
    admitted = [
        await asyncio.wait_for(director.admit(chat(director, **ALICE)), 0.5) for _ in range(4)
    ]
    assert all(s.pending_prefills == 2 for s in director.registry.snapshot())
    for each in admitted:
        each.finish(Outcome.COMPLETED)


async def test_a_pending_prefill_ends_when_its_estimated_time_to_first_token_passed(
    clock: Clock,
) -> None:
    # No first byte ever comes (a non-streamed response, or a gateway that never shows Sluice
    # the response): the estimate ends the hold, so the room never waits on an absent signal.
    director = director_with(ONE_PREFILL, clock)
    report(director, clock, waiting=0)
    first = await director.admit(chat(director, **ALICE))
    second = await director.admit(chat(director, **BOB))
    third = asyncio.create_task(director.admit(chat(director, **ALICE)))
    await asyncio.sleep(0.01)
    assert not third.done()
    due = director.room.prefill.estimate(first.endpoint.name, first.request.prompt_tokens)
    assert 0 < due <= director.room.settings.max_prefill_hold_s
    clock.now += due
    report(director, clock, waiting=0)
    director.pump()
    placed = await asyncio.wait_for(third, 0.5)
    assert director.registry.prefills_ended["estimate"] == 2
    for each in (first, second, placed):
        each.finish(Outcome.COMPLETED)


async def test_top_priority_avoids_an_endpoint_prefilling_lower_band_work(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=0)
    standard = await director.admit(chat(director))  # priority 0, below the pool's top (10)
    for _ in range(3):
        interactive = await director.admit(chat(director, "interactive"))
        assert interactive.endpoint != standard.endpoint
        interactive.finish(Outcome.COMPLETED)
    standard.finish(Outcome.COMPLETED)


async def test_pending_prefill_counts_only_what_the_prefix_cache_will_not_serve(
    director: Director, clock: Clock
) -> None:
    report(director, clock, waiting=0)
    body = json.dumps({"model": "m", "max_tokens": 4, "prompt": "a shared preamble. " * 200})
    first = await director.admit(director.parse({}, body.encode(), path="/v1/completions"))
    first.observe_response_chunk(b"{}", streaming=False)
    first.finish(Outcome.COMPLETED)
    again = await director.admit(director.parse({}, body.encode(), path="/v1/completions"))
    assert again.endpoint == first.endpoint
    state = director.registry.get(again.endpoint.name)
    assert state is not None
    assert 0 <= state.pending_prefill_tokens < again.request.prompt_tokens // 4
    again.finish(Outcome.COMPLETED)
