"""The models' context lengths, read from the engines' `/v1/models` (vLLM's and the simulator's
`max_model_len` on each model; llama.cpp's server has none), so cost estimates are clamped to
what a model can really do.

Polled slowly (contexts change only when an engine restarts with other arguments); a model no
engine reports keeps the `--max-model-len` fallback. With several engines serving one model the
smallest context counts: a request larger than it fails on that engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from sluice.datalayer.engine_json import get_engine_json
from sluice.datalayer.registry import EndpointRegistry


def contexts_from_listing(listing: Any) -> dict[str, int]:
    """`{"data": [{"id": m, "max_model_len": n}, ...]}` → {m: n}; anything else is skipped."""
    out: dict[str, int] = {}
    data = listing.get("data") if isinstance(listing, dict) else None
    for model in data if isinstance(data, list) else ():
        if not isinstance(model, dict):
            continue
        name, length = model.get("id"), model.get("max_model_len")
        if isinstance(name, str) and type(length) is int and length > 0:
            out[name] = min(length, out.get(name, length))
    return out


def merge(found: list[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for contexts in found:
        for name, length in contexts.items():
            out[name] = min(length, out.get(name, length))
    return out


class ModelContextWatcher:
    """Every `interval_s`, ask each endpoint's `/v1/models` and report the merged contexts."""

    def __init__(
        self,
        registry: EndpointRegistry,
        on_update: Callable[[dict[str, int]], None],
        *,
        interval_s: float = 30.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._registry = registry
        self._on_update = on_update
        self._interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._last: dict[str, int] | None = None

    async def refresh_once(self, session: aiohttp.ClientSession) -> dict[str, int]:
        endpoints = [s.endpoint for s in self._registry.snapshot()]
        found = await asyncio.gather(*(self._ask(session, e.hostport) for e in endpoints))
        contexts = merge(list(found))
        if contexts != self._last:
            self._last = contexts
            self._on_update(contexts)
        return contexts

    async def _ask(self, session: aiohttp.ClientSession, hostport: str) -> dict[str, int]:
        listing = await get_engine_json(session, hostport, "/v1/models", self._timeout)
        # an engine that cannot say (None: no listing) keeps the fallback for its models
        return contexts_from_listing(listing)

    async def run(self) -> None:
        async with aiohttp.ClientSession(trust_env=False) as session:
            quick = 30  # the pool may load after start-up: ask every second for a while
            while True:
                contexts = await self.refresh_once(session)
                quick = 0 if contexts else max(0, quick - 1)
                await asyncio.sleep(min(1.0, self._interval_s) if quick else self._interval_s)
