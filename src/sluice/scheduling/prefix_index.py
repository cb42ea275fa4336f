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

from itertools import islice


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
        get = owners.get
        # One pass that touches each owners entry once while it is in cache: the owners dict
        # is ~100 MB, so its cache misses, not bytecode, dominate (bulk passes that build
        # temporary dicts measured ~40% slower).
        for h in hashes:
            if h in lru:
                del lru[h]  # re-insert: most recently used
                lru[h] = None
                continue
            lru[h] = None
            mask = get(h)
            # Store the shared `bit` object itself, not an equal new int: 32 bytes an entry.
            owners[h] = bit if mask is None else mask | bit
        excess = len(lru) - capacity
        if excess > 0:
            # One scan for all victims: `next(iter(d))` per eviction would rescan the holes
            # that deletions leave at the front of a dict (O(n) each, milliseconds per add).
            victims = list(islice(lru, excess))
            for oldest in victims:
                del lru[oldest]
            self._drop(victims, bit)

    def _drop(self, hashes: list[int], bit: int) -> None:
        """Remove `bit` from the owners of `hashes` (each is known to hold it)."""
        owners, bits, clear = self._owners, self._bits, ~bit
        for h in hashes:
            mask = owners[h]
            if mask is bit:  # the common case: no other owner
                del owners[h]
                continue
            rest = mask & clear
            if not rest:
                del owners[h]
            elif rest & (rest - 1):
                owners[h] = rest
            else:  # one owner left: point at its shared bit object (see `add`)
                owners[h] = bits[rest.bit_length() - 1]


def _record(matched: dict[int, int], mask: int, blocks: int) -> None:
    """matched[slot] = blocks for every slot whose bit is set in `mask`."""
    while mask:
        low = mask & -mask
        matched[low.bit_length() - 1] = blocks
        mask ^= low
