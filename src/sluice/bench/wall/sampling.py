"""What the engines themselves count, read from their `/metrics`: generated tokens (once a
second during a replay) and prefix-cache hits and queries (after it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from sluice.bench.records import Sample
from sluice.bench.wall.processes import VLLM_COUNTERS, EngineCounters, Engines
from sluice.datalayer.promtext import parse_families


async def sample_engines(
    session: object,
    engine_urls: Sequence[str],
    t0: float,
    samples: list[Sample],
    counters: EngineCounters = VLLM_COUNTERS,
) -> None:
    while True:
        await sample_once(session, engine_urls, t0, samples, counters)
        await asyncio.sleep(1.0)


async def sample_once(
    session: object,
    engine_urls: Sequence[str],
    t0: float,
    samples: list[Sample],
    counters: EngineCounters = VLLM_COUNTERS,
) -> None:
    """Every engine's own count of generated tokens (vLLM's `generation_tokens_total`,
    llama.cpp's `tokens_predicted_total`), added up; no sample at all when one engine does not
    answer (a partial sum would read as a drop)."""
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    if not engine_urls:
        return
    at = time.monotonic() - t0
    total = 0
    busy = 0
    try:
        for url in engine_urls:
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
            total += int(family_total(text, counters.generated))
            # an engine with a request running is busy, as the virtual runner counts it
            busy += family_total(text, counters.running) > 0
    except (TimeoutError, aiohttp.ClientError):
        return
    samples.append(Sample(at, {}, {}, busy, len(engine_urls), {}, total))


def family_total(page: str, name: str) -> float:
    """The sum over every series of family `name` on a Prometheus page (0 if absent): an
    engine that labels its counters per model or per rank counts whole."""
    return sum(s.value for s in parse_families(page, (name,)).get(name, []))


def prefix_counters(engines: Engines) -> tuple[float, float]:
    import urllib.request

    hits = queries = 0.0
    for url in engines.urls:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        hits += family_total(text, engines.counters.cached)
        queries += sum(family_total(text, name) for name in engines.counters.looked_up)
    return hits, queries
