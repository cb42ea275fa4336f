"""Property tests: random arrivals, dispatches, cancels, TTLs, completions and capacity changes.

After every step the controller must satisfy, for any config:
- exactly-once: every ticket gets one outcome, reported by one event; none lost, none released
  twice;
- accounting: queued requests/bytes equal what is really waiting, within every limit, and a
  cancel or an expiry frees its room at once;
- strict priority: when an item is released, no waiting higher-band item has room;
- no blocking: after a dispatch, no waiting item has room (an item whose candidates are full
  never holds back one whose candidates have room);
- TTL: after `dispatch`/`expire` at `now`, nothing waits past its deadline — in either regime
  (the pool with endpoints, or without: `noEndpointRequestTTL`), each change of regime
  starting every waiting item's budget afresh.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from fc_harness import SlotPool, request
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.config import parse_flow_control
from sluice.flowcontrol import Accepted, Finalized, FlowController, QueueOutcome, Ticket
from sluice.requests.model import InferenceRequest, Usage

HINTS = [None, ("a",), ("b",), ("a", "b"), ("c",)]

enqueue_op = st.tuples(
    st.just("enqueue"),
    st.integers(0, 3),  # tenant
    st.sampled_from([-1, 0, 5]),  # priority
    st.sampled_from(HINTS),
    st.sampled_from([None, 0.5, 2.0]),  # ttl
    st.integers(0, 300),  # body bytes
    st.integers(1, 2000),  # prompt tokens
)
operations = st.lists(
    st.one_of(
        enqueue_op,
        enqueue_op,
        st.tuples(st.just("dispatch")),
        st.tuples(st.just("cancel"), st.integers(0, 10**6)),
        # Time passes; the shell may or may not call `expire` right then.
        st.tuples(st.just("advance"), st.sampled_from([0.1, 0.5, 1.0, 3.0]), st.booleans()),
        st.tuples(st.just("finish"), st.integers(0, 10**6), st.integers(0, 50)),
        st.tuples(st.just("resize"), st.sampled_from(["a", "b", "c"]), st.integers(0, 3)),
        st.tuples(st.just("regime"), st.booleans()),  # the pool lost / regained its endpoints
    ),
    min_size=10,
    max_size=60,
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "maxRequests": st.sampled_from([3, 8]),
        "maxBytes": st.sampled_from([500, "1Ki"]),
        "perFlowMaxRequests": st.integers(1, 4),
        "perFlowMaxBytes": st.sampled_from([300, 600]),
        "defaultRequestTTL": st.sampled_from(["1s", "250ms"]),
        "noEndpointRequestTTL": st.sampled_from(["0s", "2s", "300ms"]),
        "defaultPriorityBand": st.fixed_dictionaries(
            {},
            optional={
                "maxRequests": st.integers(1, 6),
                "fairnessPolicyRef": st.sampled_from(
                    ["token-fair", "round-robin", "global-strict"]
                ),
                "orderingPolicyRef": st.sampled_from(["fcfs", "edf", "slo-deadline"]),
            },
        ),
    },
)


class Checker:
    """Drives a controller and a slot pool, checking every guarantee as it goes."""

    def __init__(self, config: dict[str, Any]) -> None:
        config = dict(config)
        no_endpoint_ttl = config.pop("noEndpointRequestTTL", None)
        self.config = parse_flow_control(config)
        if no_endpoint_ttl is not None:  # a typed field for now; the YAML key is the config's
            seconds = parse_flow_control({"defaultRequestTTL": no_endpoint_ttl})
            self.config = replace(
                self.config, no_endpoint_request_ttl_s=seconds.default_request_ttl_s or 0.0
            )
        self.fc = FlowController(self.config)
        self.pool = SlotPool({"a": 2, "b": 3, "c": 0})
        self.pool.on_take = self.check_strict_priority
        self.now = 0.0
        self.tickets: list[Ticket] = []
        self.events: Counter[int] = Counter()
        self.running: list[tuple[Ticket, InferenceRequest]] = []

    # -- guarantees ------------------------------------------------------------------------

    def waiting(self) -> list[Ticket]:
        return [t for t in self.tickets if t.waiting]

    def check_strict_priority(self, released: InferenceRequest) -> None:
        for ticket in self.waiting():
            if ticket.priority > released.priority:
                assert not self.pool.has_room(ticket.candidates), (
                    f"band {released.priority} released while band {ticket.priority} could go"
                )

    def record(self, events: list[Finalized]) -> None:
        for event in events:
            assert event.ticket.outcome is event.outcome
            self.events[event.ticket.seq] += 1
            if event.outcome is QueueOutcome.DISPATCHED:
                self.running.append((event.ticket, event.ticket.request))

    def check_accounting(self) -> None:
        waiting = self.waiting()
        assert self.fc.queued_requests == len(waiting)
        assert self.fc.queued_bytes == sum(t.byte_size for t in waiting)
        if self.config.max_requests:
            assert self.fc.queued_requests <= self.config.max_requests
        if self.config.max_bytes:
            assert self.fc.queued_bytes <= self.config.max_bytes
        for band in self.fc.bands:
            assert band.queued_requests == sum(1 for t in waiting if t.priority == band.priority)
        assert self.pool.overbooked == 0

    def check_no_blocking(self) -> None:
        for ticket in self.waiting():
            assert not self.pool.has_room(ticket.candidates), "a waiting item had room"

    def check_nothing_overdue(self) -> None:
        assert all(t.deadline > self.now for t in self.waiting())

    # -- steps -----------------------------------------------------------------------------

    def step(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "enqueue":
            _, tenant, priority, hint, ttl, size, tokens = op
            req = request(
                f"t{tenant}", priority, prompt_tokens=tokens, body_bytes=size, ttl_s=ttl,
                subset_hint=hint, slo_ttft_s=(tokens % 7) / 10 if tokens % 3 else None,
            )  # fmt: skip
            result = self.fc.enqueue(req, self.now)
            if isinstance(result, Accepted):
                self.tickets.append(result.ticket)
                assert result.ticket.waiting
                for displaced in result.displaced:
                    assert displaced.ticket.priority < priority
                self.record(list(result.displaced))
            else:
                expected = (
                    QueueOutcome.REJECTED_NO_ENDPOINTS
                    if self.fc.pool_empty
                    else QueueOutcome.REJECTED_CAPACITY
                )
                assert result.outcome is expected
                self.tickets.append(result.ticket)
                self.record([result])
        elif kind == "dispatch":
            self.record(self.fc.dispatch(self.now, self.pool))
            self.check_no_blocking()
            self.check_nothing_overdue()
        elif kind == "cancel" and self.tickets:
            ticket = self.tickets[op[1] % len(self.tickets)]
            was_waiting, before = ticket.waiting, self.fc.queued_requests
            event = self.fc.cancel(ticket, self.now)
            assert (event is not None) == was_waiting
            if event is not None:
                self.record([event])
                assert self.fc.queued_requests == before - 1  # freed at once
        elif kind == "advance":
            self.now += op[1]
            if op[2]:
                self.record(self.fc.expire(self.now))
                self.check_nothing_overdue()
        elif kind == "finish" and self.running:
            ticket, req = self.running.pop(op[1] % len(self.running))
            self.pool.finish(req)
            usage = Usage(req.prompt_tokens, op[2], cached_tokens=req.prompt_tokens // 2)
            self.fc.complete(ticket, usage, self.now)
        elif kind == "resize":
            self.pool.resize(op[1], op[2])
        elif kind == "regime":
            changed = op[1] != self.fc.pool_empty
            self.fc.set_pool_empty(op[1], self.now)
            if changed:  # every waiting item's budget started again now
                self.check_nothing_overdue()
        self.check_accounting()

    def finish_all(self) -> None:
        for ticket in self.waiting():
            event = self.fc.cancel(ticket, self.now)
            assert event is not None
            self.record([event])
        assert self.fc.queued_requests == 0 and self.fc.queued_bytes == 0
        # Exactly once: every ticket has one outcome and exactly one event said so.
        assert all(t.outcome is not None for t in self.tickets)
        assert all(self.events[t.seq] == 1 for t in self.tickets)
        released = [r.request_id for r in self.pool.released]
        assert len(released) == len(set(released))  # nothing dispatched twice
        dispatched = [t for t in self.tickets if t.outcome is QueueOutcome.DISPATCHED]
        assert len(dispatched) == len(released)


@settings(max_examples=250, deadline=None)
@given(config=configs, ops=operations)
def test_random_sequences_keep_every_guarantee(config: dict[str, Any], ops: list) -> None:
    checker = Checker(config)
    for op in ops:
        checker.step(op)
    checker.finish_all()


@settings(max_examples=60, deadline=None)
@given(ops=operations)
def test_legacy_mode_finalizes_every_request_once_and_never_queues(ops: list) -> None:
    fc = FlowController(parse_flow_control({"mode": "legacy"}))
    pool = SlotPool({"a": 1, "b": 1, "c": 0})
    outcomes: Counter[QueueOutcome] = Counter()
    tickets = []
    for op in ops:
        if op[0] == "enqueue":
            _, tenant, priority, hint, *_ = op
            result = fc.enqueue(request(f"t{tenant}", priority, subset_hint=hint), 0.0)
            assert isinstance(result, Accepted)
            tickets.append(result.ticket)
        elif op[0] == "resize":
            pool.resize(op[1], op[2])
        for event in fc.dispatch(0.0, pool):
            outcomes[event.outcome] += 1
            if event.outcome is QueueOutcome.SHED:
                assert event.ticket.priority < 0
                assert not pool.has_room(event.ticket.candidates)
    assert all(t.outcome in (QueueOutcome.DISPATCHED, QueueOutcome.SHED) for t in tickets)
    assert sum(outcomes.values()) == len(tickets)
    assert fc.queued_requests == 0
