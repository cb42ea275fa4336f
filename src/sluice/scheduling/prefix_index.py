"""An approximate model of every endpoint's prefix cache: which block hashes it holds.

Memory is the constraint (64 endpoints x 31,250 blocks = 2 M entries must fit well under
300 MB), so the layout is: one dict `hash -> owners` where owners is a bitmask of endpoint
slots (bit i = slot i), plus one insertion-ordered dict per endpoint used as its LRU. Hash int
objects are shared by both.

Why a bitmask rather than "an int slot, or a set of slots when shared": the dicts then hold
only ints, so the garbage collector never tracks or traverses them (a tracked 2 M-entry dict
made every full collection a multi-millisecond pause on the request path), shared blocks cost
one int instead of a set, and matching is `&` on ints. Single-owner masks are one shared
object per slot, so the common case costs nothing per entry.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any


class PrefixIndex:
    def __init__(self) -> None:
        self._owners: dict[int, int] = {}  # hash -> bitmask of slots holding it (never 0)
        self._lru: list[dict[int, None] | None] = []  # by slot
        self._names: list[str | None] = []  # by slot
        self._bits: list[int] = []  # by slot: 1 << slot, one shared object each
        self._slots: dict[str, int] = {}
        self._free: list[int] = []

    # -- servers ------------------------------------------------------------------------------

    @property
    def slots(self) -> dict[str, int]:
        """server -> slot (read-only view; do not mutate)."""
        return self._slots

    @property
    def names(self) -> list[str | None]:
        """slot -> server, `None` for a free slot (read-only view; do not mutate)."""
        return self._names

    def slot(self, server: str) -> int | None:
        return self._slots.get(server)

    def _slot_for(self, server: str) -> int:
        slot = self._slots.get(server)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._lru[slot] = {}
                self._names[slot] = server
            else:
                slot = len(self._lru)
                self._lru.append({})
                self._names.append(server)
                self._bits.append(1 << slot)
            self._slots[server] = slot
        return slot

    def remove_server(self, server: str) -> None:
        slot = self._slots.pop(server, None)
        if slot is None:
            return
        lru = self._lru[slot]
        self._lru[slot] = None
        self._names[slot] = None
        self._free.append(slot)
        if lru:
            self._drop(list(lru), self._bits[slot])

    def servers(self) -> list[str]:
        return list(self._slots)

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._owners)

    def match(self, hashes: list[int]) -> dict[int, int]:
        """slot -> number of leading blocks it holds *contiguously* (greedy: stops when no
        endpoint still matching holds the next block)."""
        if not hashes:
            return {}
        get = self._owners.get
        alive = get(hashes[0], 0)
        if not alive:
            return {}
        matched: dict[int, int] = {}
        i = 1
        for h in islice(hashes, 1, None):
            still = alive & get(h, 0)
            if still != alive:  # rare: some endpoints stop matching at block i
                _record(matched, alive ^ still, i)
                alive = still
                if not alive:
                    return matched
            i += 1
        _record(matched, alive, i)
        return matched

    # -- learning ---------------------------------------------------------------------------------

    def add(self, server: str, hashes: list[int], capacity: int) -> None:
        """Record that `server` now caches `hashes` (most recent last); evict beyond capacity."""
        slot = self._slot_for(server)
        lru = self._lru[slot]
        assert lru is not None
        bit = self._bits[slot]
        owners = self._owners
        # Per-block work runs in C where possible (comprehensions, dict.fromkeys, map): this is
        # on the request path, 256 blocks and as many evictions per dispatch.
        fresh = [h for h in hashes if h not in lru]
        if len(fresh) != len(hashes):  # blocks it held already become most recently used
            _delete_all(lru, [h for h in dict.fromkeys(hashes) if h in lru])
        get = owners.get
        shared = [(h, mask) for h in fresh if (mask := get(h)) is not None]
        # The shared `bit` object itself, not an equal new int per entry (32 bytes each).
        owners.update(dict.fromkeys(fresh, bit))
        for h, mask in shared:
            owners[h] = mask | bit
        lru.update(dict.fromkeys(hashes))
        excess = len(lru) - capacity
        if excess > 0:
            # One scan for all victims: `next(iter(d))` per eviction would rescan the holes
            # that deletions leave at the front of a dict (O(n) each, milliseconds per add).
            victims = list(islice(lru, excess))
            _delete_all(lru, victims)
            self._drop(victims, bit)

    def _drop(self, hashes: list[int], bit: int) -> None:
        """Remove `bit` from the owners of `hashes` (each is known to hold it)."""
        owners = self._owners
        alone = [h for h in hashes if owners[h] is bit]  # the common case: no other owner
        _delete_all(owners, alone)
        if len(alone) == len(hashes):
            return
        bits, clear = self._bits, ~bit
        for h in hashes:
            mask = owners.get(h)
            if mask is None:
                continue  # deleted above
            rest = mask & clear
            if not rest:
                del owners[h]
            elif rest & (rest - 1):
                owners[h] = rest
            else:  # one owner left: point at its shared bit object (see `add`)
                owners[h] = bits[rest.bit_length() - 1]


def _delete_all(d: dict[int, Any], keys: list[int]) -> None:
    """`del d[k]` for every key, iterated in C (a `for` statement costs bytecode per key)."""
    deque(map(d.__delitem__, keys), maxlen=0)


def _record(matched: dict[int, int], mask: int, blocks: int) -> None:
    """matched[slot] = blocks for every slot whose bit is set in `mask`."""
    while mask:
        low = mask & -mask
        matched[low.bit_length() - 1] = blocks
        mask ^= low
