"""The shared store: Redis or Valkey (the choice is measured in docs/replicas.md).

One sync is one round trip: a Lua script publishes this replica's summary (it expires with
its lease, so a dead replica's summary goes too), renews its membership, grants its leases
(`leases.GRANT_LUA`) and returns every live peer's summary; pipelined with it, the prefix
entries this replica added since the last sync go onto a capped stream and the others' are
read from it (`prefix_share`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from sluice.replicas.core import LeaseAsk
from sluice.replicas.leases import GRANT_LUA

SYNC_SCRIPT = (
    """
local prefix = KEYS[1]
local me = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', prefix .. 'summary:' .. me, ARGV[3], 'PX', lease_ms)
redis.call('ZADD', prefix .. 'members', now + lease_ms, me)
redis.call('ZREMRANGEBYSCORE', prefix .. 'members', '-inf', now)
local first = 4
"""
    + GRANT_LUA
    + """
local blobs = {}
for _, who in ipairs(redis.call('ZRANGE', prefix .. 'members', 0, -1)) do
  if who ~= me then
    local blob = redis.call('GET', prefix .. 'summary:' .. who)
    if blob then blobs[#blobs + 1] = blob end
  end
end
return {granted, blobs}
"""
)

# How many prefix-stream entries the store keeps (about; older ones are trimmed).
PREFIX_STREAM_LEN = 10_000

StoreError = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class SyncResult:
    granted: dict[str, int]
    peers: list[bytes]
    prefix_entries: list[bytes]


class RedisStore:
    def __init__(self, url: str, pool: str, *, timeout_s: float) -> None:
        self.url = url
        self.prefix = f"sluice:{{{pool}}}:"  # one hash slot: the script touches many keys
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        # EVALSHA in the pipeline itself: redis-py's registered scripts add a SCRIPT EXISTS
        # round trip before every pipeline; the script is loaded only when the store says it
        # does not know it (first sync, or a store that restarted).
        self._sha = hashlib.sha1(SYNC_SCRIPT.encode()).hexdigest()
        # A new replica reads the stream from its start: it learns the pool's recent prefixes.
        self._prefix_from = "0-0"

    async def sync(
        self,
        replica: str,
        summary: bytes,
        lease_s: float,
        asks: Sequence[LeaseAsk],
        prefix_out: bytes | None,
    ) -> SyncResult:
        args: list[str | bytes | int] = [replica, max(1, int(lease_s * 1000)), summary]
        for ask in asks:
            args += [ask.endpoint, ask.cap, ask.target, ask.in_flight]
        results = await self._round_trip(replica, args, prefix_out)
        if isinstance(results[0], NoScriptError):
            # The store does not know the script: load it and sync again (the prefix entries
            # may then be added twice; adding block hashes again changes nothing).
            await self._client.script_load(SYNC_SCRIPT)
            results = await self._round_trip(replica, args, prefix_out)
        for result in results:
            if isinstance(result, Exception):
                raise result
        granted_list, blobs = results[0]
        granted = {ask.endpoint: int(g) for ask, g in zip(asks, granted_list, strict=True)}
        entries: list[bytes] = []
        for _, messages in results[-1] or ():
            for message_id, fields in messages:
                self._prefix_from = message_id
                if fields.get(b"r") != replica.encode():
                    entries.append(fields[b"e"])
        return SyncResult(granted, list(blobs), entries)

    async def _round_trip(
        self, replica: str, args: list[str | bytes | int], prefix_out: bytes | None
    ) -> list[Any]:
        stream = self.prefix + "prefix"
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._sha, 1, self.prefix, *args)
            if prefix_out is not None:
                pipe.xadd(
                    stream,
                    {"r": replica, "e": prefix_out},
                    maxlen=PREFIX_STREAM_LEN,
                    approximate=True,
                )
            pipe.xread({stream: self._prefix_from}, count=1000)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def close(self) -> None:
        await self._client.aclose()
