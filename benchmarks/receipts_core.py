"""What decision receipts and tracing cost, and that the receipt ring stays within its bound.

1. CPU per request through the real director core (parse → submit → pump → schedule → dispatch
   → first byte → finish, default config, 8 idle endpoints), in rounds that interleave three
   arms in one run: receipts off (no recorder: the default path), receipts on (ring 1024 /
   4 MiB), receipts on + tracing (the official SDK's batch processor and OTLP/HTTP exporter,
   posting to a receiver on loopback in this process, so its CPU is counted too). Reported as
   CPU-seconds per request (`time.process_time`, all threads) and the arms' ratio. The core is
   only part of what an ext_proc request costs (gRPC/HTTP2 framing, Envoy's messages), so the
   share measured here is an upper bound of the share of ext_proc requests per CPU-second.
2. Memory: `--requests` (default 1,000,000) requests through the core with receipts on; the
   ring's accounted bytes and tracemalloc's live bytes of the ring after the run, against the
   configured bound.

    .venv/bin/python benchmarks/receipts_overhead.py [--requests 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import http.server
import os
import threading
import time
import tracemalloc
from types import SimpleNamespace

from sluice.bench.harness.core import core_from_config
from sluice.config import load_sluice_config
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.director import DispatchCore, DispatchedRequest
from sluice.flowcontrol.model import Ticket
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.requests.errors import SluiceError
from sluice.requests.model import Outcome, Usage
from sluice.sources.state import PoolKey, PoolState

ENDPOINTS = tuple(Endpoint(f"pod-{i}", f"10.0.0.{i + 1}", 8000) for i in range(8))
BODY = (
    b'{"model": "m", "messages": [{"role": "user", "content": "%d hello there"}], "max_tokens": 16}'
)
TENANTS = ("alice", "bob", "carol")


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def core(recorder: ReceiptRecorder | None) -> tuple[DispatchCore, list[DispatchedRequest]]:
    config = load_sluice_config(None)
    placed: list[DispatchedRequest] = []

    def released(ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
        assert isinstance(result, DispatchedRequest)
        placed.append(result)

    c = core_from_config(config, released, receipts=recorder)
    c.set_state(PoolState(PoolKey("pool", "ns"), pool=SimpleNamespace(), endpoints=ENDPOINTS), 0.0)
    return c, placed


def run(c: DispatchCore, placed: list[DispatchedRequest], n: int, start: int) -> float:
    """CPU-seconds for `n` requests, each finished before the next (an idle pool)."""
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
        dispatched.first_byte(now + 0.0002)
        dispatched.finish(
            Outcome.COMPLETED, now + 0.0005, Usage(prompt_tokens=9, completion_tokens=16)
        )
    return time.process_time() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000, help="for the memory check")
    parser.add_argument("--per-round", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{server.server_port}"
    from sluice.tracing import tracer_from_environment

    tracer = tracer_from_environment()
    assert tracer is not None
    arms = {
        "off": core(None),
        "receipts": core(ReceiptRecorder(ReceiptRing(1024, 4 << 20))),
        "receipts+tracing": core(
            ReceiptRecorder(ReceiptRing(1024, 4 << 20), on_finished=[tracer.on_receipt])
        ),
    }
    cpu = {name: 0.0 for name in arms}
    done = 0
    for c, placed in arms.values():  # warm up
        run(c, placed, 500, 0)
    for _ in range(args.rounds):
        for name, (c, placed) in arms.items():
            cpu[name] += run(c, placed, args.per_round, 1000 + done)
        tracer.force_flush()
        done += args.per_round
    tracer.force_flush()
    n = args.rounds * args.per_round
    base = cpu["off"] / n
    print(f"director core, {n} requests per arm, {len(ENDPOINTS)} endpoints (machine shared)")
    for name in arms:
        per = cpu[name] / n
        print(
            f"  {name:17s} {per * 1e6:8.1f} us CPU/request  {1 / per:8.0f} req/CPU-s  "
            f"cost vs off {100 * (per / base - 1):+6.1f} %"
        )
    tracer.shutdown()
    server.shutdown()

    max_entries, max_bytes = 1024, 4 << 20
    ring = ReceiptRing(max_entries, max_bytes)
    c, placed = core(ReceiptRecorder(ring))
    tracemalloc.start()
    started = time.monotonic()
    run(c, placed, args.requests, 0)
    entries = list(ring.newest_first())
    live = sum(
        s.size
        for s in tracemalloc.take_snapshot().statistics("filename")
        if "receipts/ring.py" in str(s.traceback)
    )
    tracemalloc.stop()
    blobs = sum(len(e.blob) for e in entries)
    print(
        f"memory after {args.requests} requests ({time.monotonic() - started:.0f} s): ring holds "
        f"{len(entries)} receipts, accounted {ring.bytes} B of {max_bytes} B bound, "
        f"allocated in ring.py {live} B, encoded receipts {blobs} B, "
        f"evicted {ring.evicted}; open receipts {c.receipts.open_receipts if c.receipts else 0}"
    )
    assert ring.bytes <= max_bytes and len(entries) <= max_entries
    assert live <= max_bytes, "the ring's live memory exceeds its bound"


if __name__ == "__main__":
    main()
