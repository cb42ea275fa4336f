"""The shared store: Redis or Valkey (the choice is measured in docs/replicas.md).

One sync is one round trip, one command: a Lua script publishes this replica's summary (it
expires with its lease, so a dead replica's summary goes too), renews its membership, grants
its leases (`leases.GRANT_LUA`), puts the prefix entries this replica added since the last sync
onto a capped stream, and returns every live peer's summary and the others' new stream entries
(`prefix_share`; this replica's own are left in the store, not sent back). One EVALSHA and no
pipeline: redis-py packs and parses one command, not three (CPU per sync, docs/replicas.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

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
local stream = prefix .. 'prefix'
if ARGV[5] ~= '' then
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[6], '*', 'r', me, 'e', ARGV[5])
end
local last = ARGV[4]
local entries = {}
if ARGV[7] == '1' then
  for _, entry in ipairs(redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1000)) do
    last = entry[1]
    local fields = entry[2]
    local who, payload
    for j = 1, #fields, 2 do
      if fields[j] == 'r' then who = fields[j + 1] end
      if fields[j] == 'e' then payload = fields[j + 1] end
    end
    if who ~= me and payload then entries[#entries + 1] = payload end
  end
end
local first = 8
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
return {granted, blobs, last, entries}
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
    def __init__(
        self, url: str, pool: str, *, timeout_s: float, share_prefixes: bool = True
    ) -> None:
        self.url = url
        self.prefix = f"sluice:{{{pool}}}:"  # one hash slot: the script touches many keys
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        # EVALSHA itself: redis-py's registered scripts add a SCRIPT EXISTS round trip before
        # every call; the script is loaded only when the store says it does not know it
        # (first sync, or a store that restarted).
        self._sha = hashlib.sha1(SYNC_SCRIPT.encode()).hexdigest()
        # A new replica reads the stream from its start: it learns the pool's recent prefixes.
        self._prefix_from = b"0-0"
        self._read_prefixes = "1" if share_prefixes else "0"

    async def sync(
        self,
        replica: str,
        summary: bytes,
        lease_s: float,
        asks: Sequence[LeaseAsk],
        prefix_out: bytes | None,
    ) -> SyncResult:
        args: list[str | bytes | int] = [
            replica,
            max(1, int(lease_s * 1000)),
            summary,
            self._prefix_from,
            prefix_out or b"",
            PREFIX_STREAM_LEN,
            self._read_prefixes,
        ]
        for ask in asks:
            args += [ask.endpoint, ask.cap, ask.target, ask.in_flight]
        try:
            result = await self._client.evalsha(self._sha, 1, self.prefix, *args)
        except NoScriptError:
            # The store does not know the script: load it and sync again.
            await self._client.script_load(SYNC_SCRIPT)
            result = await self._client.evalsha(self._sha, 1, self.prefix, *args)
        granted_list, blobs, last, entries = result
        self._prefix_from = last
        granted = {ask.endpoint: int(g) for ask, g in zip(asks, granted_list, strict=True)}
        return SyncResult(granted, list(blobs), list(entries))

    async def close(self) -> None:
        await self._client.aclose()
