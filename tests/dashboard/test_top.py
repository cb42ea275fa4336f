"""`sluice top` renders the same snapshot the dashboard shows, and reads it from the port."""

from __future__ import annotations

import subprocess
import sys

from sluice.dashboard.top import render

STATE = {
    "at": 0.0,
    "pool": "default/quickstart",
    "queued": 2,
    "in_flight": 5,
    "bands": [
        {
            "priority": 10,
            "objectives": ["interactive"],
            "queued": 0,
            "in_flight": 1,
            "wait_p50_s": 0.002,
            "wait_p90_s": 0.010,
            "wait_p99_s": 1.5,
            "tenants": [
                {
                    "fairness_id": "alice",
                    "queued": 0,
                    "in_flight": 1,
                    "served_tokens": 900,
                    "share": 1.0,
                    "fair_share": 1.0,
                }
            ],
        },
        {
            "priority": -1,
            "objectives": ["batch"],
            "queued": 2,
            "in_flight": 4,
            "wait_p50_s": None,
            "wait_p90_s": None,
            "wait_p99_s": None,
            "tenants": [],
        },
    ],
    "endpoints": [
        {
            "name": "rank-0",
            "waiting": 3,
            "running": 4,
            "kv_cache_usage": 0.42,
            "pending_prefill_tokens": 512,
            "in_flight": 5,
            "age_s": 0.05,
            "fresh": True,
            "req_per_s": 12.34,
        },
        {
            "name": "rank-1",
            "waiting": 0,
            "running": 0,
            "kv_cache_usage": None,
            "pending_prefill_tokens": 0,
            "in_flight": 0,
            "age_s": None,
            "fresh": False,
            "req_per_s": 0.0,
        },
    ],
    "rejections": {"rejected-saturated": 3},
}


def test_top_renders_bands_tenants_endpoints_and_rejections() -> None:
    text = render(STATE)
    lines = text.splitlines()
    assert "queued 2  in flight 5" in lines[0]
    band = next(line for line in lines if line.startswith("10 "))
    assert band.split() == ["10", "interactive", "0", "1", "2ms", "10ms", "1.50s"]
    assert any(line.split()[:2] == ["-1", "batch"] and line.split()[-1] == "-" for line in lines)
    alice = next(line for line in lines if line.startswith("alice"))
    assert alice.split() == ["alice", "10", "0", "1", "900", "100%", "100%"]
    rank0 = next(line for line in lines if line.startswith("rank-0"))
    assert rank0.split() == ["rank-0", "3", "4", "42%", "512", "5", "50ms", "12.3"]
    rank1 = next(line for line in lines if line.startswith("rank-1"))
    assert "never STALE" in rank1 and " - " in rank1
    assert lines[-1] == "REJECTIONS  rejected-saturated=3"
    # columns line up: every row of a table is as wide as its header
    header = next(i for i, line in enumerate(lines) if line.startswith("endpoint"))
    assert len(lines[header + 1]) == len(lines[header + 2]) == len(lines[header])


def test_top_once_names_the_url_it_cannot_read() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sluice", "top", "--once", "--metrics-port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "http://127.0.0.1:1/debug/state" in out.stderr
