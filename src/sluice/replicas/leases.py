"""Splitting each endpoint's in-flight cap between replicas, by demand, without overfill.

Each replica holds a lease on part of an endpoint's cap (`maxInFlightPerEndpoint`) and
dispatches only within it (`EndpointState.lease`). The store grants leases atomically
(`GRANT_SCRIPT`): a grant never makes the live leases sum above the cap, and never shrinks a
lease below what its holder still has in flight — so the replicas' dispatches to one endpoint
together stay within its cap while leases move. A lease lives one lease period unless renewed:
a dead replica's part returns to the others within one period.

What each replica asks for (`target`) is computed here from the summaries: what it has in
flight, plus a part of the endpoint's free room proportional to its eligible waiting requests
(requests it could release now); with no demand anywhere the free room is split evenly, the
remainder rotated over endpoints so every replica can start a request at once somewhere.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence


def lease_target(
    endpoint: str,
    cap: int,
    mine: tuple[str, int, int],
    peers: Sequence[tuple[str, int, int]],
) -> int:
    """The lease replica `mine` asks for on `endpoint`. `mine` and `peers`: (replica id, in
    flight there, eligible waiting requests)."""
    everyone = sorted([mine, *peers])
    free = max(0, cap - sum(in_flight for _, in_flight, _ in everyone))
    me, in_flight, demand = mine
    total = sum(d for _, _, d in everyone)
    if total == 0:
        # Idle pool: an even split; the remainder goes to replicas in an order rotated by
        # the endpoint, so each replica gets a whole slot on some endpoint.
        share, extra = divmod(free, len(everyone))
        rank = everyone.index(mine)
        offset = zlib.crc32(endpoint.encode()) % len(everyone)
        return in_flight + share + (1 if (rank - offset) % len(everyone) < extra else 0)
    # Largest-remainder split of the free room over the replicas with demand.
    exact = {who: free * d / total for who, _, d in everyone}
    floors = {who: int(x) for who, x in exact.items()}
    left = free - sum(floors.values())
    by_remainder = sorted(exact, key=lambda who: (floors[who] - exact[who], who))
    bonus = set(by_remainder[:left])
    return in_flight + floors[me] + (1 if me in bonus else 0) if demand else in_flight


# Lua, run inside the store's sync script (`store.SYNC_SCRIPT`): grants this replica's leases.
# Expects `prefix`, `me`, `lease_ms`, `now` (the store's clock, ms: replicas' clocks never need
# to agree) and `first`, the index in ARGV of the first endpoint's (name, cap, target, in
# flight); fills `granted` in the same order.
GRANT_LUA = """
local granted = {}
local i = first
while i + 3 <= #ARGV do
  local key = prefix .. 'lease:' .. ARGV[i]
  local cap = tonumber(ARGV[i + 1])
  local target = tonumber(ARGV[i + 2])
  local held = tonumber(ARGV[i + 3])
  local entries = redis.call('HGETALL', key)
  local others = 0
  local old = 0
  for j = 1, #entries, 2 do
    local slots, expires = string.match(entries[j + 1], '(%d+):(%d+)')
    slots = tonumber(slots)
    if tonumber(expires) <= now then
      redis.call('HDEL', key, entries[j])
    elseif entries[j] == me then
      old = slots
    else
      others = others + slots
    end
  end
  -- never above the cap with the others' live leases; never below what is still in flight
  -- under the old lease (it was counted in everyone's grants already)
  local grant = math.min(target, cap - others)
  local keep = math.min(held, old)
  if grant < keep then grant = keep end
  if grant < 0 then grant = 0 end
  redis.call('HSET', key, me, grant .. ':' .. (now + lease_ms))
  redis.call('PEXPIRE', key, lease_ms * 4)
  granted[#granted + 1] = grant
  i = i + 4
end
"""
