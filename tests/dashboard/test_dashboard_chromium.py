"""The live dashboard in real headless Chromium, on the quickstart (`sluice up`) under
mixed-priority load: the bands, tenants and endpoints it shows are those of `/metrics` and
`/debug/decisions`, its values move while the load runs, and a screenshot lands in docs/."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from sluice.bench.harness.child import stop_processes
from sluice.bench.harness.ports import free_port

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
# The screenshot docs/ shows is refreshed on request (SLUICE_UPDATE_SCREENSHOT=1), so that a test
# run leaves the checkout as it found it; otherwise it goes to a temporary file.
SCREENSHOT = (
    DOCS / "dashboard.png"
    if os.environ.get("SLUICE_UPDATE_SCREENSHOT") == "1"
    else Path(tempfile.gettempdir()) / f"sluice-dashboard-{os.getpid()}.png"
)
MIX = [("interactive", "alice"), ("standard", "bob"), ("batch", "carol"), ("batch", "dave")]


def chromium(url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=2500",
                *extra,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[dict[str, int]]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs it (apt-get install -y chromium)")
    ports = {name: free_port() for name in ("proxy", "grpc", "health", "metrics")}
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "sluice", "up"),
            *("--proxy-port", str(ports["proxy"]), "--grpc-port", str(ports["grpc"])),
            *("--grpc-health-port", str(ports["health"])),
            *("--metrics-port", str(ports["metrics"])),
        ],
        stdout=(tmp_path / "sluice-up.log").open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield ports
    finally:
        stop_processes(process, timeout=10)


async def load(port: int, until: float) -> int:
    """Bounded mixed-priority load: 12 clients, each a request at a time, until `until`."""
    sent = 0

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal sent
        objective, tenant = MIX[i % len(MIX)]
        while time.monotonic() < until:
            body = {
                "model": "sim-model",
                "max_tokens": 48,
                "messages": [{"role": "user", "content": f"tell me about {i} " * 20}],
            }
            headers = {
                "x-llm-d-inference-objective": objective,
                "x-llm-d-inference-fairness-id": tenant,
            }
            try:
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers
                ) as r:
                    await r.read()
                    sent += 1
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(i, session) for i in range(12)))
    return sent


async def fetch(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        assert r.status == 200
        return await r.text()


async def wait_up(base: str) -> None:
    for _ in range(240):
        try:
            await fetch(f"{base}/metrics")
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.25)
    pytest.fail("sluice up did not serve its metrics port within 60 s")


def shown(dom: str) -> dict[str, set]:
    return {
        "bands": set(re.findall(r'<tr data-priority="(-?\d+)">', dom)),
        "tenants": set(re.findall(r'<tr data-priority="(-?\d+)" data-tenant="([^"]+)">', dom)),
        "endpoints": set(re.findall(r'<tr data-endpoint="([^"]+)">', dom)),
        "decisions": set(re.findall(r'<tr data-seq="\d+"[^>]*><td>([^<]+)</td>', dom)),
        "status": set(re.findall(r'id="status" class="status live">([^<]+)<', dom)),
    }


async def test_the_dashboard_shows_what_metrics_and_receipts_say(quickstart) -> None:
    base = f"http://127.0.0.1:{quickstart['metrics']}"
    await wait_up(base)
    until = time.monotonic() + 14
    traffic = asyncio.create_task(load(quickstart["proxy"], until))
    await asyncio.sleep(4)
    first = shown(await asyncio.to_thread(chromium, f"{base}/?poll", "--dump-dom"))
    await asyncio.sleep(2)
    second = shown(await asyncio.to_thread(chromium, f"{base}/?poll", "--dump-dom"))
    await asyncio.to_thread(
        chromium,
        f"{base}/?poll",
        f"--screenshot={SCREENSHOT}",
        "--window-size=1500,1250",
    )
    exposition = await fetch(f"{base}/metrics")
    decisions = await fetch(f"{base}/debug/decisions?limit=1000")
    sent = await traffic
    assert sent > 20, "the load ran"

    # Bands and tenants: those flow control exported (fairness id x priority).
    exported = set(
        re.findall(
            r"inference_extension_flow_control_request_queue_duration_seconds_count\{"
            r'fairness_id="([^"]+)",priority="(-?\d+)"',
            exposition,
        )
    )
    assert {(p, t) for t, p in exported} <= second["tenants"] | first["tenants"]
    assert {p for t, p in exported} == {"10", "0", "-1"} <= second["bands"]
    # Endpoints: those the pool metrics name.
    pods = set(
        re.findall(
            r'llm_d_epp_per_endpoint_queue_size\{model_server_endpoint="([^"]+)"', exposition
        )
    )
    assert len(pods) == 4 and second["endpoints"] == pods
    # Decisions: receipts that /debug/decisions serves.
    served = set(re.findall(r'"request_id":"([^"]+)"', decisions))
    assert second["decisions"] and second["decisions"] <= served
    # Values update while the load runs.
    assert first["status"] != second["status"]
    assert first["decisions"] != second["decisions"]
    assert (SCREENSHOT).stat().st_size > 10_000
