"""The metrics port's debug routes on the real director: `/debug/decisions` with its filters,
`/debug/state` agreeing with the director, the page and its assets from the package."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from director_harness import make_director, report
from sluice.dashboard.routes import DashboardRoutes
from sluice.dashboard.snapshot import DashboardView
from sluice.director import Director
from sluice.health.metrics import MetricsServer
from sluice.receipts import ReceiptRecorder, ReceiptRing
from sluice.requests.model import Outcome, Usage


@pytest.fixture
async def served():
    recorder = ReceiptRecorder(ReceiptRing(100, 1 << 20))
    director = make_director(ports=(8000, 8001))
    director.core.receipts = recorder  # what App does through Director(receipts=...)
    director.core.room.explain_holds = True
    view = DashboardView(
        flow=director.flow,
        registry=director.registry,
        recorder=recorder,
        staleness_s=60.0,
        pool="default/pool",
        objectives=lambda: {"interactive": 10, "batch": -1},
    )
    server = MetricsServer(
        CollectorRegistry(), host="127.0.0.1", extra_routes=DashboardRoutes(view).add_to
    )
    port = await server.start(0)
    try:
        yield director, f"http://127.0.0.1:{port}"
    finally:
        await server.stop()


async def admit(director: Director, request_id: str, objective: str, tenant: str):
    request = director.parse(
        {
            "x-request-id": request_id,
            "x-gateway-inference-objective": objective,
            "x-gateway-inference-fairness-id": tenant,
        },
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}',
    )
    return await director.admit(request)


async def get_json(session: aiohttp.ClientSession, url: str):
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_decisions_are_served_newest_first_and_filtered(served) -> None:
    director, base = served
    report(director)
    for i, (objective, tenant) in enumerate(
        [("interactive", "alice"), ("batch", "bob"), ("interactive", "bob")]
    ):
        admission = await admit(director, f"r{i}", objective, tenant)
        admission.first_byte()
        admission.finish(Outcome.COMPLETED, Usage(prompt_tokens=3, completion_tokens=4))
    async with aiohttp.ClientSession() as session:
        everything = await get_json(session, f"{base}/debug/decisions")
        assert [d["request_id"] for d in everything] == ["r2", "r1", "r0"]
        bob = await get_json(session, f"{base}/debug/decisions?fairness_id=bob")
        assert [d["request_id"] for d in bob] == ["r2", "r1"]
        batch = await get_json(session, f"{base}/debug/decisions?objective=batch")
        assert [(d["request_id"], d["priority"]) for d in batch] == [("r1", -1)]
        one = await get_json(session, f"{base}/debug/decisions?request_id=r0&outcome=completed")
        assert one[0]["completion_tokens"] == 4 and one[0]["endpoint"]
        on_it = await get_json(session, f"{base}/debug/decisions?endpoint={one[0]['endpoint']}")
        assert "r0" in {d["request_id"] for d in on_it}
        async with session.get(f"{base}/debug/decisions?tenant=bob") as response:
            assert response.status == 400
            assert "unknown filter tenant" in await response.text()


async def test_state_matches_the_director_while_requests_wait(served) -> None:
    director, base = served  # no report yet: every endpoint is stale, requests wait
    waiting = [asyncio.create_task(admit(director, f"w{i}", "batch", "carol")) for i in range(3)]
    await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as session:
        state = await get_json(session, f"{base}/debug/state")
    bands = {b["priority"]: b for b in state["bands"]}
    assert set(bands) == {10, -1}
    assert bands[-1]["queued"] == 3 == director.flow.queued_requests
    assert bands[-1]["objectives"] == ["batch"]
    [carol] = bands[-1]["tenants"]
    assert (carol["fairness_id"], carol["queued"], carol["in_flight"]) == ("carol", 3, 0)
    assert [e["fresh"] for e in state["endpoints"]] == [False, False]
    report(director)  # the engines report: the requests go
    admissions = await asyncio.gather(*waiting)
    async with aiohttp.ClientSession() as session:
        state = await get_json(session, f"{base}/debug/state")
    bands = {b["priority"]: b for b in state["bands"]}
    assert bands[-1]["queued"] == 0 and bands[-1]["in_flight"] == 3
    assert sum(e["in_flight"] for e in state["endpoints"]) == 3
    assert bands[-1]["wait_p50_s"] > 0 and bands[-1]["waits_sampled"] == 3
    for admission in admissions:
        admission.finish(Outcome.COMPLETED, Usage(prompt_tokens=3, completion_tokens=4))
    async with aiohttp.ClientSession() as session:
        decisions = await get_json(session, f"{base}/debug/decisions")
    assert {d["held_by"] for d in decisions} == {"stale-metrics"}


async def test_the_page_and_its_assets_come_from_the_package(served) -> None:
    _, base = served
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/") as response:
            page = await response.text()
            assert response.status == 200 and "<title>Sluice</title>" in page
        for name, kind in (("app.js", "javascript"), ("style.css", "css")):
            async with session.get(f"{base}/static/{name}") as response:
                assert response.status == 200 and kind in response.headers["Content-Type"]
        async with session.get(f"{base}/static/../app.py") as response:
            assert response.status == 404
        assert "http" not in page.replace("http-equiv", ""), "nothing loaded from elsewhere"


async def test_events_stream_a_snapshot_a_second(served) -> None:
    _, base = served
    async with aiohttp.ClientSession() as session, session.get(f"{base}/debug/events") as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        first = await asyncio.wait_for(r.content.readline(), 5)
        assert first.startswith(b"data: {")
        await r.content.readline()
        second = await asyncio.wait_for(r.content.readline(), 5)
        assert second.startswith(b"data: {") and second != first


async def test_sluice_top_once_prints_what_debug_state_says(served) -> None:
    director, base = served
    report(director)
    admission = await admit(director, "t1", "interactive", "erin")
    port = base.rsplit(":", 1)[1]
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sluice", "top", "--once", "--metrics-port", port],
        capture_output=True,
        text=True,
        timeout=30,
    )
    admission.finish(Outcome.COMPLETED)
    assert out.returncode == 0, out.stderr
    erin = next(line for line in out.stdout.splitlines() if line.startswith("erin"))
    assert erin.split()[:4] == ["erin", "10", "0", "1"]  # band 10, none queued, one in flight
    assert sum(line.startswith("p-rank-") for line in out.stdout.splitlines()) == 2
