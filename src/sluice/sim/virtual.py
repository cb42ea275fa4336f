"""Virtual time: many engines stepped by a discrete-event loop, no sockets, no sleeping.

The caller (a benchmark driving a real flow controller and scheduler) plays the gateway:

    cluster = VirtualCluster({"pod-a": engine_a, "pod-b": engine_b})
    cluster.submit("pod-a", request, at=0.25)
    for event in cluster.run_until(1.0):      # FirstToken / TokenGenerated / Completed / Rejected
        ...
    cluster.metrics("pod-a")                  # what /metrics would show at cluster.now

``next_event_time()`` tells the caller how far it may jump before anything happens, so a replay
can interleave its own arrivals and dispatch decisions exactly.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass

from sluice.sim.engine import Engine
from sluice.sim.metrics import EngineMetrics, render
from sluice.sim.request import SimRequest
from sluice.sim.sequence import Sequence, Status


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class FirstToken:
    time: float
    engine_id: str
    request_id: str
    ttft: float  # since submission


@dataclass(frozen=True, slots=True)
class TokenGenerated:
    """One event per generated token (only with ``token_events=True``; replays rarely need it)."""

    time: float
    engine_id: str
    request_id: str
    index: int  # 1-based count of tokens generated so far


@dataclass(frozen=True, slots=True)
class Completed:
    time: float
    engine_id: str
    request_id: str
    finish_reason: str
    usage: Usage
    ttft: float
    e2e: float
    num_preemptions: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """The engine refused the request (as the HTTP front would answer 400)."""

    time: float
    engine_id: str
    request_id: str
    reason: str


Event = FirstToken | TokenGenerated | Completed | Rejected

_SUBMIT, _ABORT, _WAKE, _STEP_END, _RESTART = range(5)


class VirtualCluster:
    def __init__(
        self,
        engines: Mapping[str, Engine] | Seq[Engine],
        *,
        token_events: bool = False,
        fast_forward: bool = True,
    ) -> None:
        """``fast_forward`` lets an engine plan runs of identical decode steps at once (same
        results, far fewer Python steps); it is off when every token is an event."""
        if isinstance(engines, Mapping):
            self.engines = dict(engines)
        else:
            self.engines = {str(i): e for i, e in enumerate(engines)}
        self.token_events = token_events
        for engine in self.engines.values():
            engine.fast_forward = fast_forward and not token_events
        self._step_token = dict.fromkeys(self.engines, 0)  # invalidates a cut decode run's end
        self.now = 0.0
        self._queue: list[tuple[float, int, int, str, object]] = []
        self._counter = 0
        self.restarts = dict.fromkeys(self.engines, 0)  # by engine: times it was restarted

    # ---- the caller's side ------------------------------------------------------------------

    def submit(self, engine_id: str, request: SimRequest, at: float | None = None) -> None:
        """Hand ``request`` to an engine at virtual time ``at`` (default: now)."""
        self._push(self._at(at), _SUBMIT, engine_id, request)

    def abort(self, engine_id: str, request_id: str, at: float | None = None) -> None:
        """The client gives up on a request (its blocks are freed, no Completed event)."""
        self._push(self._at(at), _ABORT, engine_id, request_id)

    def restart(self, engine_id: str, at: float | None = None) -> None:
        """The engine's process restarts at ``at``: its requests fail (``Rejected``), and a
        fresh engine of the same configuration — an empty cache — takes its place."""
        self._push(self._at(at), _RESTART, engine_id)

    def next_event_time(self) -> float | None:
        """When the next thing happens in the cluster (None: idle, nothing pending)."""
        return self._queue[0][0] if self._queue else None

    def run_until(self, t: float) -> list[Event]:
        """Advance to ``t``, returning the events that happened on the way, in time order."""
        if t < self.now:
            raise ValueError(f"cannot run back in time ({t} < {self.now})")
        events: list[Event] = []
        while self._queue and self._queue[0][0] <= t:
            when, _, kind, engine_id, payload = heapq.heappop(self._queue)
            self.now = when
            self._handle(when, kind, engine_id, payload, events)
        self.now = t
        return events

    def run(self) -> list[Event]:
        """Run until every engine is idle."""
        events: list[Event] = []
        while (t := self.next_event_time()) is not None:
            events.extend(self.run_until(t))
        return events

    def metrics(self, engine_id: str) -> EngineMetrics:
        engine = self.engines[engine_id]
        engine.settle(self.now)
        return engine.metrics()

    def render_metrics(self, engine_id: str) -> str:
        """The /metrics text the engine would serve now."""
        return render(self.metrics(engine_id))

    # ---- the loop ---------------------------------------------------------------------------

    def _at(self, at: float | None) -> float:
        when = self.now if at is None else at
        if when < self.now:
            raise ValueError(f"cannot schedule in the past ({when} < {self.now})")
        return when

    def _push(self, when: float, kind: int, engine_id: str, payload: object = None) -> None:
        if engine_id not in self.engines:
            raise KeyError(f"unknown engine {engine_id!r}")
        self._counter += 1
        heapq.heappush(self._queue, (when, self._counter, kind, engine_id, payload))

    def _handle(
        self, now: float, kind: int, engine_id: str, payload: object, events: list[Event]
    ) -> None:
        engine = self.engines[engine_id]
        if kind == _RESTART:
            for request_id in list(engine._by_id):
                events.append(Rejected(now, engine_id, request_id, "engine restarted"))
            fresh = Engine(engine.config, engine.cost, model_name=engine.model_name)
            fresh.fast_forward = engine.fast_forward
            self.engines[engine_id] = fresh
            self._step_token[engine_id] += 1  # the old engine's step ends are void
            self.restarts[engine_id] += 1
            return
        if kind == _SUBMIT:  # the request reaches the queue after the front end's overhead
            self._cut(engine_id, engine, now, now + engine.cost.frontend_s)
        elif kind == _ABORT:
            self._cut(engine_id, engine, now, now)
        if kind == _SUBMIT:
            assert isinstance(payload, SimRequest)
            try:
                engine.add_request(payload, now)
            except ValueError as exc:
                events.append(Rejected(now, engine_id, payload.request_id, str(exc)))
                return
            self._wake(engine_id, engine, now)
        elif kind == _ABORT:
            engine.abort(str(payload), now)
        elif kind == _STEP_END:
            if payload != self._step_token[engine_id]:
                return  # the end of a decode run that was cut short
            for seq in engine.finish_step(now):
                if seq.num_output == 1 or seq.status is Status.FINISHED or self.token_events:
                    self._emit(engine_id, seq, now, events)
            self._start(engine_id, engine, now)
        elif not engine.in_step:  # _WAKE; a stale wake while a step runs is harmless
            self._start(engine_id, engine, now)

    def _wake(self, engine_id: str, engine: Engine, now: float) -> None:
        if engine.in_step:
            return  # the step's end will look at the queue
        arrival = engine.next_arrival_time()
        self._push(now if engine.has_work or arrival is None else arrival, _WAKE, engine_id)

    def _cut(self, engine_id: str, engine: Engine, now: float, changes_at: float) -> None:
        """The engine's queue changes at ``changes_at``: a planned decode run stops before it."""
        planned = engine.busy_until
        engine.settle(now, cut_at=changes_at)
        ends = engine.busy_until
        if ends is not None and ends != planned:
            self._step_token[engine_id] += 1
            self._push(ends, _STEP_END, engine_id, self._step_token[engine_id])

    def _start(self, engine_id: str, engine: Engine, now: float) -> None:
        if engine.start_step(now) is not None and engine.busy_until is not None:
            self._push(engine.busy_until, _STEP_END, engine_id, self._step_token[engine_id])
        elif (arrival := engine.next_arrival_time()) is not None:
            self._push(arrival, _WAKE, engine_id)

    def _emit(self, engine_id: str, seq: Sequence, now: float, events: list[Event]) -> None:
        submitted = seq.submitted_at
        if seq.num_output == 1:
            events.append(FirstToken(now, engine_id, seq.request_id, now - submitted))
        if self.token_events:
            events.append(TokenGenerated(now, engine_id, seq.request_id, seq.num_output))
        if seq.finished:
            usage = Usage(seq.request.prompt_tokens, seq.num_output, seq.cached_tokens or 0)
            ttft = (seq.first_token_time or now) - submitted
            events.append(
                Completed(
                    now,
                    engine_id,
                    seq.request_id,
                    seq.finish_reason or "",
                    usage,
                    ttft,
                    now - submitted,
                    seq.num_preemptions,
                )
            )
