"""The load generator: a workload replayed through the router (open loop at its arrival times,
or its closed loop; streaming with usage in the last chunk), client-side TTFT and e2e recorded."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

from sluice.bench.records import RequestRecord, Sample
from sluice.bench.wall.processes import VLLM_COUNTERS, EngineCounters
from sluice.bench.wall.sampling import sample_engines, sample_once
from sluice.bench.workloads import Arrival, Workload


async def _one(
    session: object,
    url: str,
    arrival: Arrival,
    record: RequestRecord,
    t0: float,
    extra: Mapping[str, str],
) -> None:
    import aiohttp
    import orjson

    assert isinstance(session, aiohttp.ClientSession)
    headers = {**arrival.headers(), **extra}
    try:
        async with session.post(url + arrival.path, data=arrival.body(), headers=headers) as resp:
            if resp.status == 429:
                record.outcome = "rejected"
                return
            if resp.status != 200:
                record.outcome = "error"
                return
            usage: dict[str, object] = {}
            if arrival.stream:
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        break
                    if record.first_token_at is None:
                        record.first_token_at = time.monotonic() - t0
                    doc = orjson.loads(payload)
                    if doc.get("usage"):
                        usage = doc["usage"]
            else:  # the whole response at once: its first token reaches the client at its end
                doc = orjson.loads(await resp.read())
                record.first_token_at = time.monotonic() - t0
                usage = doc.get("usage") or {}
            record.completed_at = time.monotonic() - t0
            record.outcome = "completed"
            record.output_tokens = int(str(usage.get("completion_tokens", 0)))
            record.prompt_tokens = int(str(usage.get("prompt_tokens", record.prompt_tokens)))
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                record.cached_tokens = int(details.get("cached_tokens", 0))
    except (TimeoutError, aiohttp.ClientError):
        record.outcome = "error"


async def replay(
    urls: Sequence[str],
    workload: Workload,
    drain_s: float,
    engine_urls: Sequence[str] = (),
    restart: Callable[[int], None] | None = None,
    seed: int = 0,
    headers: Mapping[str, Mapping[str, str]] | None = None,
    counters: EngineCounters = VLLM_COUNTERS,
) -> tuple[list[RequestRecord], list[Sample]]:
    """Send the workload (open loop at its arrival times, or its closed loop) to `urls`, taken
    in turn; sample the engines' generated-token counters once a second meanwhile. Arrivals
    marked `bypass` go straight to a random engine (the router never sees them); the
    workload's `restarts` call `restart(engine index)` at their times (in a thread: it blocks
    until the new process listens). `headers`: per objective, headers the clients add (a peer's
    own priority header)."""
    import aiohttp

    closed = workload.concurrency is not None
    budget = workload.duration_s + drain_s if not closed else 3600.0
    timeout = aiohttp.ClientTimeout(total=budget)
    connector = aiohttp.TCPConnector(limit=0)
    records: list[RequestRecord] = []
    samples: list[Sample] = []
    turn = itertools.cycle(urls)
    bypass = random.Random(seed ^ 0xB1)  # the virtual runner's stream, for the same share
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.monotonic()
        sampler = asyncio.create_task(sample_engines(session, engine_urls, t0, samples, counters))

        def start(a: Arrival, at: float) -> asyncio.Task[None]:
            record = RequestRecord(
                a.request_id, a.tenant, 0, at, prompt_tokens=0, max_tokens=a.max_tokens
            )
            record.dispatched_at = at
            records.append(record)
            url = bypass.choice(engine_urls) if a.bypass and engine_urls else next(turn)
            extra = (headers or {}).get(a.objective or "", {})
            return asyncio.create_task(_one(session, url, a, record, t0, extra))

        async def restarts() -> None:
            loop = asyncio.get_running_loop()
            for at, index in sorted(workload.restarts):
                delay = at - (time.monotonic() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                if restart is not None:
                    await loop.run_in_executor(None, restart, index)

        restarter = asyncio.create_task(restarts())

        try:
            if closed:
                pending = iter(workload.arrivals)

                async def client() -> None:
                    for a in pending:  # shared: each client takes the next one
                        await start(a, time.monotonic() - t0)

                clients = workload.concurrency or 1
                await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), budget)
            else:
                tasks = []
                for a in workload.arrivals:
                    delay = a.at - (time.monotonic() - t0)
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(start(a, a.at))
                await asyncio.wait_for(asyncio.gather(*tasks), budget)
        except TimeoutError:
            pass
        finally:
            sampler.cancel()
            restarter.cancel()  # restarts the replay window cut off do not happen
            await sample_once(session, engine_urls, t0, samples, counters)
        if restarter.done() and not restarter.cancelled() and restarter.exception():
            raise RuntimeError(f"an engine restart failed: {restarter.exception()}")
    return records, samples


async def probe_latency(url: str, n: int = 40) -> float:
    """Median e2e of sequential one-token requests (seconds)."""
    import aiohttp

    body = b'{"model":"sim-model","prompt":"Say hello.","max_tokens":1}'
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.post(
                url + "/v1/completions", data=body, headers={"content-type": "application/json"}
            ) as resp:
                await resp.read()
            times.append(time.perf_counter() - started)
    return statistics.median(times[5:])
