"""`GET /v1/models` for the whole pool: the union of what each endpoint serves.

Endpoints are asked concurrently with a short timeout; one that is slow or down is skipped rather
than holding up (or failing) the listing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from sluice.datalayer.endpoint import Endpoint


async def list_models(
    session: aiohttp.ClientSession, endpoints: tuple[Endpoint, ...], timeout_s: float
) -> dict[str, Any] | None:
    """The merged model list, or None when no endpoint answered."""
    answers = await asyncio.gather(
        *(_endpoint_models(session, endpoint, timeout_s) for endpoint in endpoints)
    )
    if all(answer is None for answer in answers):
        return None
    merged: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for model in answer or ():
            merged.setdefault(model["id"], model)  # the first endpoint to list an id wins
    return {"object": "list", "data": list(merged.values())}


async def _endpoint_models(
    session: aiohttp.ClientSession, endpoint: Endpoint, timeout_s: float
) -> list[dict[str, Any]] | None:
    try:
        async with session.get(
            f"http://{endpoint.hostport}/v1/models",
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            if response.status != 200:
                return None
            listing = orjson.loads(await response.read())
    except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError):
        return None
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return None
    return [model for model in data if isinstance(model, dict) and isinstance(model.get("id"), str)]
