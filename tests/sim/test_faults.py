"""Fault injection, switched at run time through the admin endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sluice.sim.faults import FaultMode
from sluice.sim.pool import EngineSpec, start_pool
from sluice.sim.profiles import PROFILES

ZERO = PROFILES["zero-latency"]
COMPLETION = {"prompt": "hello", "max_tokens": 50, "stream": True}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    pool = await start_pool([EngineSpec(ZERO.engine, ZERO.cost)])
    async with aiohttp.ClientSession(pool.urls[0]) as session:
        yield session
    await pool.close()


async def set_fault(http: aiohttp.ClientSession, mode: str) -> None:
    async with http.post("/admin/faults", json={"mode": mode}) as r:
        assert r.status == 200 and (await r.json())["mode"] == mode


async def test_error500(http: aiohttp.ClientSession) -> None:
    await set_fault(http, "error500")
    async with http.post("/v1/completions", json=COMPLETION) as r:
        assert r.status == 500 and "error" in await r.json()
    await set_fault(http, "none")
    async with http.post("/v1/completions", json=COMPLETION) as r:
        assert r.status == 200


async def test_no_metrics(http: aiohttp.ClientSession) -> None:
    await set_fault(http, "no_metrics")
    async with http.get("/metrics") as r:
        assert r.status == 503
    async with http.post("/v1/completions", json=COMPLETION) as r:
        assert r.status == 200  # inference is unaffected


async def test_drop_midstream_cuts_the_connection(http: aiohttp.ClientSession) -> None:
    await set_fault(http, "drop_midstream")
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post("/v1/completions", json=COMPLETION) as r:
            assert r.status == 200  # headers went out before the cut
            await r.read()


async def test_hang_holds_requests_until_cleared(http: aiohttp.ClientSession) -> None:
    await set_fault(http, "hang")
    pending = asyncio.ensure_future(http.post("/v1/completions", json=COMPLETION))
    await asyncio.sleep(0.3)
    assert not pending.done()
    await set_fault(http, "none")
    response = await asyncio.wait_for(pending, 5)
    assert response.status == 503
    response.release()


async def test_bad_fault_requests_are_refused(http: aiohttp.ClientSession) -> None:
    async with http.post("/admin/faults", json={"mode": "explode"}) as r:
        assert r.status == 400


async def test_a_fault_can_be_set_at_start_up() -> None:
    pool = await start_pool([EngineSpec(ZERO.engine, ZERO.cost, fault=FaultMode.ERROR500)])
    try:
        async with (
            aiohttp.ClientSession(pool.urls[0]) as http,
            http.post("/v1/completions", json=COMPLETION) as r,
        ):
            assert r.status == 500
    finally:
        await pool.close()
