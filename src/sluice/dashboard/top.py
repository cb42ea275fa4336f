"""`sluice top`: the dashboard's view in a terminal, for a shell on the pod. It reads
`/debug/state` of the metrics port once a second and redraws; `render` is pure (a snapshot in,
text out) so the view is tested without a terminal."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

CLEAR = "\x1b[H\x1b[2J"


def _s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}ms" if v < 1 else f"{v:.2f}s"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return [line(headers), *(line(r) for r in rows)]


def render(state: dict[str, Any]) -> str:
    """The snapshot as text: bands, tenants per band, endpoints, rejections."""
    at = time.strftime("%H:%M:%S", time.localtime(state["at"]))
    out = [
        f"sluice {state['pool']}  {at}  queued {state['queued']}  in flight {state['in_flight']}",
        "",
    ]
    out.append("BANDS")
    out += _table(
        ["band", "objectives", "queued", "in flight", "wait p50", "p90", "p99"],
        [
            [
                str(b["priority"]),
                ",".join(b["objectives"]) or "-",
                str(b["queued"]),
                str(b["in_flight"]),
                _s(b["wait_p50_s"]),
                _s(b["wait_p90_s"]),
                _s(b["wait_p99_s"]),
            ]
            for b in state["bands"]
        ],
    )
    out += ["", "TENANTS"]
    out += _table(
        ["tenant", "band", "queued", "in flight", "served tokens", "share", "fair share"],
        [
            [
                t["fairness_id"],
                str(b["priority"]),
                str(t["queued"]),
                str(t["in_flight"]),
                str(t["served_tokens"]),
                _pct(t["share"]),
                _pct(t["fair_share"]),
            ]
            for b in state["bands"]
            for t in b["tenants"]
        ],
    )
    out += ["", "ENDPOINTS"]
    out += _table(
        ["endpoint", "waiting", "running", "KV", "pending prefill", "in flight", "age", "req/s"],
        [
            [
                e["name"],
                str(e["waiting"]),
                str(e["running"]),
                _pct(e["kv_cache_usage"]),
                str(e["pending_prefill_tokens"]),
                str(e["in_flight"]),
                ("never" if e["age_s"] is None else _s(e["age_s"]))
                + ("" if e["fresh"] else " STALE"),
                f"{e['req_per_s']:.1f}",
            ]
            for e in state["endpoints"]
        ],
    )
    rejections = state.get("rejections") or {}
    out += [
        "",
        "REJECTIONS  " + ("  ".join(f"{r}={n}" for r, n in sorted(rejections.items())) or "none"),
    ]
    return "\n".join(out) + "\n"


def top_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sluice top", description=__doc__)
    parser.add_argument("--metrics-port", type=int, default=9090)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    args = parser.parse_args(argv)
    url = f"http://{args.host}:{args.metrics_port}/debug/state"
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    text = render(json.load(response))
            except (urllib.error.URLError, OSError) as exc:
                if args.once:
                    print(f"sluice top: cannot read {url}: {exc}", file=sys.stderr)
                    return 1
                text = f"sluice top: cannot read {url}: {exc} (retrying)\n"
            sys.stdout.write(text if args.once else CLEAR + text)
            sys.stdout.flush()
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
