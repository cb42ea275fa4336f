"""What the engines themselves count, read from their `/metrics`: generated tokens (once a
second during a replay) and prefix-cache hits and queries (after it)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence

from sluice.bench.records import Sample
from sluice.bench.wall.processes import Engines


async def sample_engines(
    session: object, engine_urls: Sequence[str], t0: float, samples: list[Sample]
) -> None:
    while True:
        await sample_once(session, engine_urls, t0, samples)
        await asyncio.sleep(1.0)


async def sample_once(
    session: object, engine_urls: Sequence[str], t0: float, samples: list[Sample]
) -> None:
    """The engines' own count of generated tokens (vLLM's `generation_tokens_total`)."""
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
            total += int(_gauge(text, "vllm:generation_tokens_total"))
            # an engine with a request running is busy, as the virtual runner counts it
            busy += _gauge(text, "vllm:num_requests_running") > 0
    except (TimeoutError, aiohttp.ClientError):
        return
    samples.append(Sample(at, {}, {}, busy, len(engine_urls), {}, total))


def _gauge(page: str, name: str) -> float:
    """The value of an unlabelled-or-labelled sample `name` on a Prometheus page (0 if absent)."""
    match = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", page, re.M)
    return float(match.group(1)) if match else 0.0


def prefix_counters(engines: Engines) -> tuple[float, float]:
    import urllib.request

    hits = queries = 0.0
    for url in engines.urls:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        for name, value in re.findall(r"^(vllm:prefix_cache_\w+)(?:\{[^}]*\})? (\S+)$", text, re.M):
            if name.startswith("vllm:prefix_cache_hits"):
                hits += float(value)
            elif name.startswith("vllm:prefix_cache_queries"):
                queries += float(value)
    return hits, queries
