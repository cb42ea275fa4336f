"""How many requests each engine runs at once, where the engine says so: llama.cpp's
`llama-server` answers `GET /props` with `total_slots` (its `--parallel`).

Why it matters: a slot engine runs `total_slots` requests and queues the rest in arrival order
(`requests_deferred`), where no priority or fair share applies. A 2-slot engine "under
upstream's thresholds" (up to 5 deferred) can hold three requests behind its slots that a
higher band's arrival then waits behind for whole requests. With the slots known, the room caps
Sluice's in flight to them (`room.rules.room_left`), so the queue forms in Sluice.

Polled slowly (slots change only when an engine restarts with other arguments), every second
until each endpoint has answered once; an endpoint that cannot say keeps no slot cap.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from sluice.datalayer.engine_json import get_engine_json
from sluice.datalayer.registry import EndpointRegistry

# engine profile (`--engine`) -> the path that reports its slots; engines not listed have none
SLOTS_PATHS: dict[str, str] = {"llamacpp": "/props"}


def slots_from_props(props: Any) -> int | None:
    """`{"total_slots": n, ...}` → n (a positive integer), else None."""
    slots = props.get("total_slots") if isinstance(props, dict) else None
    return slots if type(slots) is int and slots > 0 else None


class EngineSlotsWatcher:
    """Every `interval_s`, ask each endpoint's slots path and record the answer on its state."""

    def __init__(
        self,
        registry: EndpointRegistry,
        path: str,
        *,
        interval_s: float = 30.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._registry = registry
        self._path = path
        self._interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def refresh_once(self, session: aiohttp.ClientSession) -> bool:
        """Ask every endpoint once; True when each of them has answered (now or before)."""
        states = self._registry.snapshot()
        answers = await asyncio.gather(*(self._ask(session, s.endpoint.hostport) for s in states))
        for state, slots in zip(states, answers, strict=True):
            if slots is not None:
                self._registry.set_slots(state.endpoint.name, slots)
        return all(s.slots is not None for s in self._registry.snapshot())

    async def _ask(self, session: aiohttp.ClientSession, hostport: str) -> int | None:
        props = await get_engine_json(session, hostport, self._path, self._timeout)
        return slots_from_props(props)

    async def run(self) -> None:
        async with aiohttp.ClientSession(trust_env=False) as session:
            while True:
                known = await self.refresh_once(session)
                await asyncio.sleep(self._interval_s if known else min(1.0, self._interval_s))
