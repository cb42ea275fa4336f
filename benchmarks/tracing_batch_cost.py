"""CPU the tracer's batch thread spends per traced request, by part: building the request's spans
from its finished receipt (`tracing.spans.request_spans`, thawing the frozen scheduling record
included), encoding them into OTLP requests of ~42 requests each (`tracing.otlp.Encoder`, as the
default batch of 512 spans holds), and sending those over the OTLP/HTTP exporter's own client to
an OTLP receiver in its own process (not counted).

The receipts come from the real director core (`receipts_core.run`: default config, 8
endpoints), all finished before the clock starts, and are distinct objects (as in a serving
process, where each export takes the requests that finished lately, not the same few again).
Best of `--rounds` passes over them, `time.process_time` per part.

    .venv/bin/python benchmarks/tracing_batch_cost.py [--requests 4200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import time

import receipts_core  # beside this script
from sluice.bench.harness.otlp_sink import OtlpSinkProcess
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.tracing import otlp, tracer_from_environment
from sluice.tracing.spans import request_spans

PER_EXPORT = 42  # requests in one export of the default batch (512 spans, 12 a request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with OtlpSinkProcess() as sink:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        tracer = tracer_from_environment()
        assert tracer is not None and tracer._send is not None
        ring = ReceiptRing(args.requests, 1 << 30)
        core, placed = receipts_core.core(ReceiptRecorder(ring))
        receipts_core.run(core, placed, args.requests, 0)
        receipts = list(ring.newest_first())
        rng = random.Random(1)
        parts: dict[str, list[float]] = {"spans": [], "encode": [], "send": []}
        sent = 0
        for _ in range(args.rounds):
            t0 = time.process_time()
            trees = [request_spans(r) for r in receipts]
            t1 = time.process_time()
            exports = [
                tracer._encoder.encode(
                    (otlp.Trace(t, rng.getrandbits(128), None) for t in trees[i : i + PER_EXPORT]),
                    rng,
                )[0]
                for i in range(0, len(trees), PER_EXPORT)
            ]
            t2 = time.process_time()
            for data in exports:
                tracer._send(data)
            t3 = time.process_time()
            sent = sum(map(len, exports))
            for name, took in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[name].append(took / len(receipts) * 1e6)
        tracer.shutdown()
    best = {name: min(values) for name, values in parts.items()}
    cells = ", ".join(f"{name} {us:.1f}" for name, us in best.items())
    print(
        f"per traced request, best of {args.rounds} over {len(receipts)} receipts (us CPU): "
        f"{cells}; total {sum(best.values()):.1f}; {sent / len(receipts):.0f} bytes a request; "
        f"load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
