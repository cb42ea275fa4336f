"""The virtual-time runner: Sluice's real `DispatchCore` (parsing, flow control, scheduler,
endpoint registry) in front of simulated engines, on a simulated clock. No sockets, no sleeps:
an hour of traffic replays in seconds, and the same seed gives the same numbers bit for bit.

The loop jumps from event to event — the next arrival, the next engine event, the next
metrics scrape (every 50 ms, as `--refresh-metrics-interval`) or the next queue deadline —
and plays the gateway in between: it parses and submits arrivals, forwards released
requests to the chosen engine, and reports completions back (which frees in-flight
accounting, corrects fairness and releases more).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

from sluice.bench.arms import Arm
from sluice.bench.kv_feed import VirtualKVEvents, precise_scorers
from sluice.bench.records import RequestRecord, RunResult, Sample
from sluice.bench.workloads import Arrival, Workload
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.director import DispatchCore, DispatchedRequest
from sluice.director.contract import Outcome
from sluice.flowcontrol.controller import FlowController
from sluice.flowcontrol.model import QueueOutcome, Ticket
from sluice.requests.errors import SluiceError
from sluice.requests.model import HEADER_REQUEST_ID, Usage
from sluice.sim.engine import Engine
from sluice.sim.profiles import get_profile, with_engine
from sluice.sim.request import SimRequest
from sluice.sim.virtual import Completed, FirstToken, Rejected, VirtualCluster
from sluice.sources.state import PoolKey, PoolState

SCRAPE_INTERVAL_S = 0.05
NAMESPACE = "bench"

_OUTCOME_NAMES = {
    QueueOutcome.REJECTED_CAPACITY: "rejected",
    QueueOutcome.DISPLACED: "displaced",
    QueueOutcome.EXPIRED: "expired",
    QueueOutcome.REJECTED_NO_ENDPOINTS: "no_endpoints",
    QueueOutcome.EXPIRED_NO_ENDPOINTS: "no_endpoints",
    QueueOutcome.SHED: "shed",
    QueueOutcome.CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class EngineSetup:
    """The simulated pool: how many engines, which profile, and engine overrides."""

    count: int = 4
    profile: str = "llama-8b-h100"
    overrides: Mapping[str, object] = field(default_factory=dict)

    def build(self, extra: Mapping[str, object] | None = None) -> dict[str, Engine]:
        profile = get_profile(self.profile)
        config = with_engine(profile, **{**self.overrides, **(extra or {})})
        return {f"pod-{i}": Engine(config, profile.cost) for i in range(self.count)}


@dataclass(frozen=True)
class RunLimits:
    warmup_frac: float = 0.1  # share of the arrival window excluded from latency statistics
    drain_s: float = 30.0  # after the last arrival, stop waiting for stragglers after this
    sample_every_s: float = 0.5
    closed_loop_s: float = 3600.0  # a closed loop stops after this much virtual time


@dataclass(frozen=True)
class Gateway:
    """What the gateway shows Sluice of each response. The proxy and an Envoy that sends the
    response to the ext_proc server see its bytes; an Envoy with response processing off ends
    the ext_proc stream as soon as the request is routed, and Sluice learns nothing more of it
    (the request is detached then)."""

    sees_response: bool = True


FULL_GATEWAY = Gateway()


def _objective(priority: int) -> SimpleNamespace:
    """A stand-in InferenceObjective: `PoolState.priorities` only reads `.priority`."""
    return SimpleNamespace(priority=priority)


def pool_state(engine_ids: list[str], objectives: Mapping[str, int]) -> PoolState:
    endpoints = tuple(
        Endpoint(name=eid, address=f"10.0.0.{i + 1}", port=8000, pod_name=eid, namespace=NAMESPACE)
        for i, eid in enumerate(engine_ids)
    )
    return PoolState(
        PoolKey("bench", NAMESPACE),
        pool=SimpleNamespace(),
        endpoints=endpoints,
        objectives={f"{NAMESPACE}/{n}": _objective(p) for n, p in objectives.items()},
    )


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class VirtualRun:
    """One arm on one workload; `run()` returns the `RunResult`."""

    def __init__(
        self,
        workload: Workload,
        arm: Arm,
        setup: EngineSetup,
        *,
        seed: int,
        load: float = 0.0,
        limits: RunLimits | None = None,
        gateway: Gateway = FULL_GATEWAY,
    ) -> None:
        self.workload = workload
        self.arm = arm
        self.seed = seed
        self.load = load
        self.limits = limits or RunLimits()
        self.gateway = gateway
        self.clock = _Clock()
        engines = setup.build(arm.engine_overrides)
        self.engine_ids = list(engines)
        self.cluster = VirtualCluster(engines)
        rng = random.Random(seed)
        self.core = DispatchCore(
            scheduler=arm.make_scheduler(rng),
            flow=FlowController(arm.flow),
            registry=EndpointRegistry(),
            room=arm.room,
            rng=rng,
            on_release=self._released,
            on_wakeup=self._wake_at,
        )
        self.wake = float("inf")  # when the core asked to be pumped next, as the shell's timer
        self.core.set_state(pool_state(self.engine_ids, workload.objectives), 0.0)
        # Precise prefix routing: the engines' KV events reach the scorers in virtual time.
        scorers = precise_scorers(self.core.scheduler)
        self.kv_events = VirtualKVEvents(self.cluster, scorers) if scorers else None
        self.precise = scorers[0] if scorers else None
        for at, index in workload.restarts:
            self.cluster.restart(self.engine_ids[index % len(self.engine_ids)], at=at)
        self.bypass_rng = random.Random(seed ^ 0xB1)
        self.bypassed: set[str] = set()
        self.records: dict[str, RequestRecord] = {}
        self.placed: dict[str, DispatchedRequest] = {}
        self.arrival_of: dict[int, Arrival] = {}  # by ticket seq
        self.streamed: dict[str, bool] = {}  # by request id, while placed
        # Arrivals not yet sent, in time order; a closed loop adds the next one at each end.
        self.due: deque[Arrival] = deque()
        self.unsent: deque[Arrival] = deque()
        self.last_end = 0.0
        self.served: dict[str, int] = {}  # virtual-token service per tenant (see _credit)
        self.token_cost = arm.flow.token_cost
        self.samples: list[Sample] = []

    # -- the gateway's side -------------------------------------------------------------------

    def _arrive(self, arrival: Arrival) -> None:
        if arrival.bypass:
            self._bypass(arrival)
            return
        headers = arrival.headers()
        headers[HEADER_REQUEST_ID] = arrival.request_id
        request = self.core.parse(headers, arrival.body(), path=arrival.path)
        request.response_seen = self.gateway.sees_response  # as the ext_proc stream sets it
        record = RequestRecord(
            arrival.request_id,
            arrival.tenant,
            request.priority,
            self.clock.now,
            prompt_tokens=request.prompt_tokens,
            max_tokens=arrival.max_tokens,
        )
        self.records[arrival.request_id] = record
        try:
            ticket = self.core.submit(request, self.clock.now)
        except SluiceError:
            record.outcome = "rejected"
            self._ended()
            return
        self.arrival_of[ticket.seq] = arrival
        self.core.pump(self.clock.now)

    def _wake_at(self, due: float | None) -> None:
        self.wake = float("inf") if due is None else due

    def _ended(self) -> None:
        """A request got its outcome: in a closed loop its client sends the next one now."""
        self.last_end = self.clock.now
        if self.workload.concurrency is not None and self.unsent:
            self.due.append(replace(self.unsent.popleft(), at=self.clock.now))

    def _bypass(self, arrival: Arrival) -> None:
        """Straight to a random engine: the router neither queues nor sees it."""
        engine_id = self.bypass_rng.choice(self.engine_ids)
        text = arrival.engine_text()
        record = RequestRecord(
            arrival.request_id,
            arrival.tenant,
            0,
            self.clock.now,
            prompt_tokens=len(text) // 4,
            max_tokens=arrival.max_tokens,
        )
        record.dispatched_at, record.engine = self.clock.now, engine_id
        self.records[arrival.request_id] = record
        self.bypassed.add(arrival.request_id)
        sim_request = SimRequest.from_text(
            arrival.request_id, text, max_tokens=arrival.max_tokens, lora=arrival.lora
        )
        self.cluster.submit(engine_id, sim_request, at=self.clock.now)

    def _released(self, ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
        arrival = self.arrival_of.pop(ticket.seq, None)
        self.core.forget(ticket)
        if arrival is None:
            if isinstance(result, DispatchedRequest):  # released before submit() returned
                result.finish(Outcome.CLIENT_GONE, self.clock.now)
            return
        record = self.records[arrival.request_id]
        if isinstance(result, SluiceError):
            record.outcome = _OUTCOME_NAMES.get(ticket.outcome or QueueOutcome.SHED, "error")
            self._ended()
            return
        engine_id = result.endpoint.name
        record.dispatched_at = self.clock.now
        record.engine = engine_id
        if self.precise is not None:
            prediction = self.precise.dispatched.pop(arrival.request_id, None)
            if prediction is not None:
                record.approx_cached_tokens = prediction.approximate
                record.predicted_cached_tokens = prediction.predicted
        self.placed[arrival.request_id] = result
        self.streamed[arrival.request_id] = arrival.stream
        sim_request = SimRequest.from_text(
            arrival.request_id,
            arrival.engine_text(),
            max_tokens=arrival.max_tokens,
            lora=arrival.lora,
            priority=-record.priority,  # vLLM: lower is sooner (only used by priority engines)
        )
        self.cluster.submit(engine_id, sim_request, at=self.clock.now)
        if not self.gateway.sees_response:  # Envoy ends the ext_proc stream once routed
            result.detach(self.clock.now)

    def _engine_event(self, event: object) -> None:
        if isinstance(event, FirstToken):
            record = self.records[event.request_id]
            streamed = self.streamed.get(event.request_id, True)
            if streamed:  # the client sees its first token now (non-streamed: at the end)
                record.first_token_at = event.time
            placed = self.placed.get(event.request_id)
            if placed is not None and streamed and self.gateway.sees_response:
                placed.first_byte(event.time)  # the prefill is done: the room stops counting it
        elif isinstance(event, Completed):
            record = self.records[event.request_id]
            record.outcome = "completed"
            record.completed_at = event.time
            if record.first_token_at is None:
                record.first_token_at = event.time
            record.output_tokens = event.usage.completion_tokens
            record.cached_tokens = event.usage.cached_tokens
            record.prompt_tokens = event.usage.prompt_tokens
            cost = self.token_cost  # the service it received (`_served_at` counted it so far)
            self._credit(
                record.tenant,
                cost.input_weight * (record.prompt_tokens - record.cached_tokens)
                + cost.output_weight * record.output_tokens,
            )
            if event.request_id in self.bypassed:  # Sluice never saw it
                self.bypassed.discard(event.request_id)
                return
            placed = self.placed.pop(event.request_id)
            self.streamed.pop(event.request_id, None)
            placed.first_byte(event.time, streamed=False)  # a no-op if it streamed
            usage = Usage(
                event.usage.prompt_tokens,
                event.usage.completion_tokens,
                event.usage.cached_tokens,
            )
            placed.finish(Outcome.COMPLETED, event.time, usage)  # a no-op once detached
            self._ended()
        elif isinstance(event, Rejected):
            self.records[event.request_id].outcome = "error"
            if event.request_id in self.bypassed:
                self.bypassed.discard(event.request_id)
                return
            self.streamed.pop(event.request_id, None)
            self.placed.pop(event.request_id).finish(Outcome.UPSTREAM_ERROR, event.time)
            self._ended()

    def _credit(self, tenant: str, cost: float) -> None:
        self.served[tenant] = self.served.get(tenant, 0) + round(cost)

    def _scrape(self, now: float) -> None:
        registry = self.core.registry
        for eid in self.engine_ids:
            mark = registry.begin_scrape(eid)
            if mark is None:
                continue
            m = self.cluster.metrics(eid)
            registry.record_scrape(
                mark,
                EngineMetrics(
                    waiting=m.num_requests_waiting,
                    running=m.num_requests_running,
                    kv_cache_usage=m.kv_cache_usage_perc,
                    active_adapters=frozenset(m.running_lora_adapters),
                    waiting_adapters=frozenset(m.waiting_lora_adapters),
                    max_adapters=m.max_lora,
                    cache_block_size=m.block_size,
                    cache_num_blocks=m.num_gpu_blocks,
                    updated_at=now,
                    first_tokens=m.time_to_first_token.count,
                    first_token_seconds=m.time_to_first_token.sum,
                    prompt_tokens=m.prompt_tokens,
                    cached_prompt_tokens=m.prefix_cache_hits,
                ),
            )
        self.core.pump(now)

    def _sample(self, now: float) -> None:
        queued: dict[int, int] = {}
        charged: dict[str, float] = {}
        for band in self.core.flow.bands:
            queued[band.priority] = band.queued_requests
            for fairness_id, flow in band.flows.items():
                charged[fairness_id] = charged.get(fairness_id, 0.0) + flow.counter
        engines = self.cluster.engines.values()
        busy = sum(1 for e in engines if e.has_work)
        generated = sum(e.generation_tokens for e in engines)
        self.samples.append(
            Sample(now, queued, self._served_at(now), busy, len(engines), charged, generated)
        )

    def _served_at(self, now: float) -> dict[str, int]:
        """Service delivered by `now`, as VTC counts it — token by token as the engines compute
        them (uncached prompt tokens as prefill reaches them, output tokens as they are
        generated): what completed requests received (`_credit`) plus what the requests still
        running have received so far. Counting a request in one lump at completion would
        add every request in flight to the measured gap."""
        served = dict(self.served)
        cost = self.token_cost
        for engine in self.cluster.engines.values():
            for request_id, (prompt, output) in engine.progress_at(now).items():
                tenant = self.records[request_id].tenant
                received = cost.input_weight * prompt + cost.output_weight * output
                served[tenant] = served.get(tenant, 0) + round(received)
        return served

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = time.process_time()
        arrivals = self.workload.arrivals
        closed = self.workload.concurrency is not None
        if closed:
            clients = self.workload.concurrency or 0
            self.due.extend(replace(a, at=0.0) for a in arrivals[:clients])
            self.unsent.extend(arrivals[clients:])
            horizon = self.limits.closed_loop_s
        else:
            self.due.extend(arrivals)
            end_of_arrivals = arrivals[-1].at if arrivals else 0.0
            horizon = end_of_arrivals + self.limits.drain_s
        due = self.due
        next_scrape = 0.0
        next_sample = 0.0
        inf = float("inf")
        while True:
            t_engine = self.cluster.next_event_time()
            t_arrival = due[0].at if due else inf
            pending = due or t_engine is not None or self.core.flow.queued_requests
            if not pending:
                break
            wake = self.wake
            t = min(
                t_arrival,
                t_engine if t_engine is not None else inf,
                next_scrape,
                next_sample,
                wake,
            )
            if t > horizon:
                break
            for event in self.cluster.run_until(t):
                self.clock.now = event.time
                self._engine_event(event)
            if self.kv_events is not None:
                self.kv_events.deliver(t)
            self.clock.now = t
            if t >= next_scrape:
                self._scrape(t)
                next_scrape = t + SCRAPE_INTERVAL_S
            if t >= next_sample:
                self._sample(t)
                next_sample = t + self.limits.sample_every_s
            if t >= wake:  # the core's timer: a TTL deadline, or the re-check while work waits
                self.wake = inf
                self.core.pump(t)
            while due and due[0].at <= t:
                self._arrive(due.popleft())
        if closed:  # the window is the whole loop, from the first request to the last end
            end_of_arrivals = self.last_end
            self._sample(self.last_end)
        hits = queries = 0
        for eid in self.engine_ids:
            m = self.cluster.metrics(eid)
            hits += m.prefix_cache_hits
            queries += m.prefix_cache_queries
        return RunResult(
            scenario=self.workload.name,
            arm=self.arm.name,
            seed=self.seed,
            load=self.load,
            records=list(self.records.values()),
            samples=self.samples,
            prefix_hits=hits,
            prefix_queries=queries,
            duration_s=end_of_arrivals,
            warmup_s=0.0 if closed else end_of_arrivals * self.limits.warmup_frac,
            cpu_s=time.process_time() - started,
        )


def run_virtual(
    workload: Workload,
    arm: Arm,
    setup: EngineSetup,
    *,
    seed: int,
    load: float = 0.0,
    limits: RunLimits | None = None,
    gateway: Gateway = FULL_GATEWAY,
) -> RunResult:
    return VirtualRun(
        workload, arm, setup, seed=seed, load=load, limits=limits, gateway=gateway
    ).run()
