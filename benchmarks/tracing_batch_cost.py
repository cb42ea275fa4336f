"""CPU the tracer's batch thread spends per traced request, by part: building the request's spans
from its finished receipt (`tracing.spans.request_spans`, reading the frozen scheduling record
included), encoding them into OTLP requests of as many requests as the tracer's batch holds
(`tracing.otlp.Encoder`; ~680 at the default batch of 8,192 spans, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
sets it), and sending those over the OTLP/HTTP exporter's own client to
an OTLP receiver in its own process (not counted); and `thread`: the three as the batch thread
runs them (`RequestTracer._export_queued` over queued receipts: each request's spans built as
the encoder reaches it, dropped once encoded — the parts keep a whole pass's spans alive between
building and encoding, which the garbage collector's passes pay for).

The receipts come from the real director core (`receipts_core.run`: default config, 8
endpoints), all finished before the clock starts, and are distinct objects (as in a serving
process, where each export takes the requests that finished lately, not the same few again).
Best of `--rounds` passes over them, `time.process_time` per part.

`--against TREE`: the same measurement of another checkout's `src/` (a before and after), each
round one pass of each tree in its own process, the order alternating, both reported.

    .venv/bin/python benchmarks/tracing_batch_cost.py [--requests 4200] [--rounds 5]
        [--against TREE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import receipts_core  # beside this script
from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.otlp_sink import OtlpSinkProcess
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.tracing import otlp, tracer_from_environment
from sluice.tracing.spans import request_spans

PARTS = ("spans", "encode", "send", "thread")


def measure(requests: int, rounds: int) -> tuple[dict[str, float], float]:
    """The best per-request µs of each part over `rounds` passes, and the bytes a request."""
    with OtlpSinkProcess() as sink:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        tracer = tracer_from_environment()
        assert tracer is not None and tracer._send is not None
        per_export = tracer._wake_at  # the requests one export takes
        ring = ReceiptRing(requests, 1 << 30)
        core, placed = receipts_core.core(ReceiptRecorder(ring))
        receipts_core.run(core, placed, requests, 0)
        receipts = list(ring.newest_first())
        rng = random.Random(1)
        parts: dict[str, list[float]] = {name: [] for name in PARTS}
        sent = 0
        for _ in range(rounds):
            t0 = time.process_time()
            trees = [request_spans(r) for r in receipts]
            t1 = time.process_time()
            exports = [
                tracer._encoder.encode(
                    (otlp.Trace(t, rng.getrandbits(128), None) for t in trees[i : i + per_export]),
                    rng,
                )[0]
                for i in range(0, len(trees), per_export)
            ]
            t2 = time.process_time()
            for data in exports:
                tracer._send(data)
            t3 = time.process_time()
            sent = sum(map(len, exports))
            del trees, exports
            thread = 0.0
            queue, room = tracer._queue, tracer._queue.maxlen or 1
            for i in range(0, len(receipts), room):  # as much as the tracer's queue holds
                queue.extend((r, rng.getrandbits(128), None) for r in receipts[i : i + room])
                began = time.process_time()
                tracer._export_queued()
                thread += time.process_time() - began
            for name, took in zip(parts, (t1 - t0, t2 - t1, t3 - t2, thread)):
                parts[name].append(took / len(receipts) * 1e6)
        tracer.shutdown()
    return {name: min(values) for name, values in parts.items()}, sent / len(receipts)


def cells(best: dict[str, float]) -> str:
    split = ", ".join(f"{name} {best[name]:.1f}" for name in PARTS[:3])
    total = sum(best[n] for n in PARTS[:3])
    return f"{split} (sum {total:.1f}); as the thread runs them {best['thread']:.1f}"


def against(args: argparse.Namespace) -> None:
    trees = {
        "this": Path(__file__).resolve().parent.parent,
        "against": Path(args.against).resolve(),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    size: dict[str, float] = {}
    loads = []
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            env = {**os.environ, "PYTHONPATH": str(trees[name] / "src")}
            command = [sys.executable, __file__, "--child", f"--requests={args.requests}"]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            best, size[name] = json.loads(out.stdout)
            runs[name].append(best)
        loads.append(os.getloadavg()[0])
        print(
            f"round {r + 1}/{args.rounds} load {loads[-1]:.2f}: "
            + "; ".join(f"{n} {runs[n][-1]['thread']:.1f}" for n in trees),
            file=sys.stderr,
            flush=True,
        )
    for name, path in trees.items():
        best = {part: min(run[part] for run in runs[name]) for part in PARTS}
        print(
            f"{name} ({path}): per traced request, best of {args.rounds} rounds over "
            f"{args.requests} receipts (us CPU): {cells(best)}; {size[name]:.0f} bytes a request"
        )
    ratios = ", ".join(
        f"{a['thread'] / b['thread']:.2f}" for a, b in zip(runs["this"], runs["against"])
    )
    print(
        f"this / against, as the thread runs them: per round {ratios}; "
        f"load average {min(loads):.2f}-{max(loads):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", metavar="TREE", help="also measure another checkout's src/")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one pass, JSON
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.requests, 2)))  # the best of two: the first warms up
    elif args.against:
        against(args)
    else:
        best, size = measure(args.requests, args.rounds)
        print(
            f"per traced request, best of {args.rounds} over {args.requests} receipts (us CPU): "
            f"{cells(best)}; {size:.0f} bytes a request; load average {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    exit_on_sigterm()
    main()
