"""One JSON document from an engine's HTTP API (`/v1/models`, llama.cpp's `/props`), for the
slow pollers beside the metrics scraper: the parsed body, or None when the engine cannot say."""

from __future__ import annotations

from typing import Any

import aiohttp


async def get_engine_json(
    session: aiohttp.ClientSession, hostport: str, path: str, timeout: aiohttp.ClientTimeout
) -> Any | None:
    """`GET http://{hostport}{path}`: its JSON on 200; None on another status, a connection or
    time-out failure, or a body that is not JSON."""
    try:
        async with session.get(f"http://{hostport}{path}", timeout=timeout) as response:
            if response.status != 200:
                return None
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
