"""Decision receipts on the director core alone, and the receipt ring's memory after 1 M requests.

1. CPU per request through the real director core (parse → submit → pump → schedule → dispatch
   → first byte → finish, default config, 8 idle endpoints), in rounds that interleave four
   arms in one run: receipts off (no recorder), the same again (the A/A spread), receipts on
   (ring 1024 / 4 MiB), receipts on + tracing (the SDK's OTLP/HTTP exporter posting to a
   receiver on loopback in this process, so its thread's CPU is counted too). CPU-seconds per
   request (`time.process_time`, all threads) and the arms' ratio. The core is only part of
   what an ext_proc request costs (gRPC/HTTP2 framing, Envoy's messages): the goal's own unit,
   ext_proc requests per Sluice CPU-second, is measured by `benchmarks/receipts_overhead.py`.
2. Memory (`--requests`, default 1,000,000): that many requests through the receipt recorder
   (each step the director calls, with a scheduling record of fresh lists and floats shaped like
   a real cycle's over 8 endpoints, every 10th request held by a room rule with its hold's
   inputs), for each ring configuration in `RING_CONFIGS`. After the run: the ring's accounted
   bytes, and what it really keeps alive — tracemalloc, started before the last ring-full of
   requests (so every receipt the ring then holds was allocated under it), is read before and
   after emptying the ring — both against the configured bound; and the process RSS before and
   after the million (growth beyond the ring would be a leak elsewhere).

    .venv/bin/python benchmarks/receipts_core.py [--requests 1000000] [--rounds 5] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from types import SimpleNamespace

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.core import core_from_config
from sluice.bench.harness.cpu import rss_mb
from sluice.bench.harness.otlp_sink import OtlpSink
from sluice.config import load_sluice_config
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointState
from sluice.director import DispatchCore, DispatchedRequest
from sluice.flowcontrol.model import Ticket
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest, Outcome, Usage
from sluice.room.core import Hold
from sluice.room.rules import rule_inputs
from sluice.scheduling.record import CycleRecord, ProfileRecord, freeze, thaw
from sluice.sources.state import PoolKey, PoolState

ENDPOINTS = tuple(Endpoint(f"pod-{i}", f"10.0.0.{i + 1}", 8000) for i in range(8))
BODY = (
    b'{"model": "m", "messages": [{"role": "user", "content": "%d hello there"}], "max_tokens": 16}'
)
TENANTS = ("alice", "bob", "carol")
# (max_entries, max_bytes): the defaults of --decision-receipts and --decision-receipts-max-bytes
RING_CONFIGS = ((1024, 4 << 20),)


def core(recorder: ReceiptRecorder | None) -> tuple[DispatchCore, list[DispatchedRequest]]:
    config = load_sluice_config(None)
    placed: list[DispatchedRequest] = []

    def released(ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
        assert isinstance(result, DispatchedRequest)
        placed.append(result)

    c = core_from_config(config, released, receipts=recorder)
    c.set_state(PoolState(PoolKey("pool", "ns"), pool=SimpleNamespace(), endpoints=ENDPOINTS), 0.0)
    return c, placed


def run(
    c: DispatchCore,
    placed: list[DispatchedRequest],
    n: int,
    start: int,
    picks: list[str] | None = None,
) -> float:
    """CPU-seconds for `n` requests, each finished before the next (an idle pool); each
    request's endpoint appended to `picks` if given."""
    registry = c.registry
    began = time.process_time()
    now = float(start)
    for i in range(start, start + n):
        now += 0.001
        if i % 50 == 0:  # a scrape every 50 requests keeps the metrics fresh
            for state in registry.snapshot():
                mark = registry.begin_scrape(state.name)
                assert mark is not None
                registry.record_scrape(mark, EngineMetrics(updated_at=now))
        request = c.parse(
            {"x-gateway-inference-fairness-id": TENANTS[i % 3], "x-request-id": f"r{i}"},
            BODY % (i % 97),
        )
        ticket = c.submit(request, now)
        c.pump(now)
        c.forget(ticket)
        dispatched = placed.pop()
        if picks is not None:
            picks.append(dispatched.endpoints[0].hostport)
        dispatched.first_byte(now + 0.0002)
        dispatched.finish(
            Outcome.COMPLETED, now + 0.0005, Usage(prompt_tokens=9, completion_tokens=16)
        )
    return time.process_time() - began


def cpu_arms(rounds: int, per_round: int) -> None:
    # in this process, its CPU counted: it does not decode what it gets
    with OtlpSink(count=False) as sink:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        _cpu_arms(rounds, per_round)


def _cpu_arms(rounds: int, per_round: int) -> None:
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(per_round * 12)  # a round's spans: none dropped
    from sluice.tracing import tracer_from_environment

    tracer = tracer_from_environment()
    assert tracer is not None
    arms = {
        "off": core(None),
        # a second receipt-free core: the spread between identical arms, against which the off
        # path's own cost (a few `is None` checks per request) has to be told apart
        "off (again)": core(None),
        "receipts": core(ReceiptRecorder(ReceiptRing(1024, 4 << 20))),
        "receipts+tracing": core(
            ReceiptRecorder(ReceiptRing(1024, 4 << 20), on_finished=[tracer.on_receipt])
        ),
    }
    cpu = {name: 0.0 for name in arms}
    done = 0
    for c, placed in arms.values():  # warm up
        run(c, placed, 500, 0)
    tracer.force_flush()
    for _ in range(rounds):
        for name, (c, placed) in arms.items():
            began = time.process_time()
            run(c, placed, per_round, 1000 + done)
            if name == "receipts+tracing":
                tracer.force_flush()  # its export, in the arm's CPU
            cpu[name] += time.process_time() - began
        done += per_round
    n = rounds * per_round
    base = cpu["off"] / n
    print(f"director core, {n} requests per arm, {len(ENDPOINTS)} endpoints (machine shared)")
    for name in arms:
        per = cpu[name] / n
        print(
            f"  {name:17s} {per * 1e6:8.1f} us CPU/request  {1 / per:8.0f} req/CPU-s  "
            f"cost vs off {100 * (per / base - 1):+6.1f} %"
        )
    print(f"  spans dropped (queue full): {tracer.dropped} requests")
    tracer.shutdown()


class _Keeping(ReceiptRecorder):
    """Keeps the live scheduling records it hands out (a finished receipt keeps its frozen)."""

    kept: list[CycleRecord]

    def scheduling(self, request: InferenceRequest) -> CycleRecord | None:
        record = super().scheduling(request)
        if record is not None:
            self.kept = [*getattr(self, "kept", []), record]
        return record


def template_cycle() -> tuple[CycleRecord, Hold, list[EndpointState]]:
    """One real scheduling cycle's record over ENDPOINTS, a hold over them, and their states."""
    recorder = _Keeping(ReceiptRing(1, 1 << 20))
    c, placed = core(recorder)
    run(c, placed, 1, 0)
    [record] = recorder.kept
    states = c.registry.snapshot()
    rules = {s.name: "queue-depth" for s in states}
    hold = Hold(0.0, rules, {s.name: rule_inputs(s, 0.0) for s in states}, False, True)
    return record, hold, list(states)


def fresh_cycle(template: CycleRecord, states: list[EndpointState], i: int) -> CycleRecord:
    """A record shaped like `template` with lists and floats of its own, as each cycle has."""
    profiles = []
    shape, primary, _ = thaw(freeze(template)[0])
    for profile_name, _, steps, totals, _ in shape:
        candidates = list(states)  # the placeable ones, a list of this request
        profile = ProfileRecord(profile_name, candidates)
        for kind, type_name, name, took, names, weight, raw, picked in steps:
            profile.ran(
                kind,
                type_name,
                name,
                took + i * 1e-12,
                candidates if len(names) == len(candidates) else candidates[: len(names)],
                weight,
                [r + i * 1e-9 for r in raw],
                picked,
            )
        profile.totals = tuple([t + i * 1e-9 for t in totals])
        profile.duration_s = 1e-4
        profiles.append(profile)
    return CycleRecord(profiles, primary, 1e-4)


def through_recorder(
    recorder: ReceiptRecorder,
    n: int,
    start: int,
    template: CycleRecord,
    hold: Hold,
    states: list[EndpointState],
) -> None:
    """`n` requests, each through every step the director calls the recorder at."""
    endpoints = ENDPOINTS
    for i in range(start, start + n):
        now = i * 0.001
        request = InferenceRequest(
            request_id=f"req-{i:08d}",
            api="chat",  # type: ignore[arg-type]
            model="m",
            target_model="m",
            body=b"",
            prompt_tokens=9,
            fairness_id=TENANTS[i % 3],
            objective="standard",
            headers={"traceparent": f"00-{i:032x}-{i + 1:016x}-01"} if i % 2 else {},
        )
        recorder.queued(request, now)
        record = recorder.scheduling(request)
        assert record is not None
        fresh = fresh_cycle(template, states, i)
        record.profiles, record.primary, record.duration_s = fresh.profiles, fresh.primary, 1e-4
        held = Hold(
            now, dict(hold.rules), {k: dict(v) for k, v in hold.inputs.items()}, False, True
        )
        recorder.released(request, (), held if i % 10 == 0 else None, now + 0.0001)
        picked = endpoints[i % 8 :] + endpoints[: i % 8]
        recorder.dispatched(request, picked[:3])
        recorder.counted(request, picked[0], 0, now + 0.0001)
        recorder.finished(
            request, "completed", Usage(prompt_tokens=9, completion_tokens=16), 0.0002, now + 0.0005
        )


def memory(requests: int) -> None:
    template, hold, states = template_cycle()
    for max_entries, max_bytes in RING_CONFIGS:
        gc.collect()
        ring = ReceiptRing(max_entries, max_bytes)
        recorder = ReceiptRecorder(ring)
        through_recorder(recorder, 2000, 0, template, hold, states)  # warm up
        gc.collect()
        rss0 = rss_mb()
        started, cpu0 = time.monotonic(), time.process_time()
        through_recorder(recorder, requests - len(ring) - 1, 2000, template, hold, states)
        rss1 = rss_mb()  # before tracemalloc, whose own records take memory
        rest = len(ring) + 1
        tracemalloc.start()
        through_recorder(recorder, rest, requests, template, hold, states)
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu0
        gc.collect()
        held, accounted = len(ring), ring.bytes
        live = tracemalloc.get_traced_memory()[0]
        ring.clear()
        gc.collect()
        kept = live - tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        print(
            f"ring max_entries={max_entries} max_bytes={max_bytes}: {requests} requests "
            f"({elapsed:.0f} s, {cpu:.0f} CPU-s); it held {held} receipts "
            f"(evicted {ring.evicted}), accounted {accounted} B; what they kept alive "
            f"(tracemalloc) {kept} B = {100 * kept / max_bytes:.0f} % of the bound; RSS with "
            f"the ring full {rss0:.1f} MB, a million requests later {rss1:.1f} MB; "
            f"open receipts {recorder.open_receipts}"
        )
        assert accounted <= max_bytes and kept <= accounted, "the ring exceeds its bound"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000, help="for the memory check")
    parser.add_argument("--per-round", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    if not args.skip_cpu:
        cpu_arms(args.rounds, args.per_round)
    memory(args.requests)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
