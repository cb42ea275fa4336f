"""An approximate model of every endpoint's prefix cache: which block hashes it holds.

Memory is the constraint (64 endpoints x 31,250 blocks = 2 M entries must fit well under
300 MB), so the layout is: one dict `hash -> owner` where the owner is a small int slot (the
common case: one endpoint) or a set of slots (a prefix shared by several), plus one
insertion-ordered dict per endpoint used as its LRU. Hash int objects are shared by both.
"""

from __future__ import annotations

from itertools import islice


class PrefixIndex:
    def __init__(self) -> None:
        self._owners: dict[int, int | set[int]] = {}
        self._lru: list[dict[int, None] | None] = []  # by slot
        self._slots: dict[str, int] = {}
        self._free: list[int] = []

    # -- servers ------------------------------------------------------------------------------

    @property
    def slots(self) -> dict[str, int]:
        """server -> slot (read-only view; do not mutate)."""
        return self._slots

    def slot(self, server: str) -> int | None:
        return self._slots.get(server)

    def _slot_for(self, server: str) -> int:
        slot = self._slots.get(server)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._lru[slot] = {}
            else:
                slot = len(self._lru)
                self._lru.append({})
            self._slots[server] = slot
        return slot

    def remove_server(self, server: str) -> None:
        slot = self._slots.pop(server, None)
        if slot is None:
            return
        lru = self._lru[slot]
        self._lru[slot] = None
        self._free.append(slot)
        for h in lru or ():
            self._drop_owner(h, slot)

    def servers(self) -> list[str]:
        return list(self._slots)

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._owners)

    def match(self, hashes: list[int]) -> dict[int, int]:
        """slot -> number of leading blocks it holds *contiguously* (greedy: stops when no
        endpoint still matching holds the next block)."""
        owners = self._owners
        if not hashes:
            return {}
        first = owners.get(hashes[0])
        if first is None:
            return {}
        alive: set[int] = {first} if type(first) is int else set(first)  # type: ignore[arg-type]
        matched: dict[int, int] = {}
        n = len(hashes)
        i = 1
        while i < n:
            owner = owners.get(hashes[i])
            if owner is None:
                break
            if type(owner) is int:
                if owner not in alive:
                    break
                if len(alive) > 1:
                    for slot in alive:
                        if slot != owner:
                            matched[slot] = i
                    alive = {owner}
            else:
                still = alive & owner  # type: ignore[operator]
                if not still:
                    break
                if len(still) != len(alive):
                    for slot in alive - still:
                        matched[slot] = i
                    alive = still
            i += 1
        for slot in alive:
            matched[slot] = i
        return matched

    # -- learning ---------------------------------------------------------------------------------

    def add(self, server: str, hashes: list[int], capacity: int) -> None:
        """Record that `server` now caches `hashes` (most recent last); evict beyond capacity."""
        slot = self._slot_for(server)
        lru = self._lru[slot]
        assert lru is not None
        owners = self._owners
        for h in hashes:
            if h in lru:
                del lru[h]  # re-insert below: most recently used
                lru[h] = None
                continue
            lru[h] = None
            owner = owners.get(h)
            if owner is None:
                owners[h] = slot
            elif type(owner) is int:
                if owner != slot:
                    owners[h] = {owner, slot}
            else:
                owner.add(slot)  # type: ignore[union-attr]
        excess = len(lru) - capacity
        if excess > 0:
            # One scan for all victims: `next(iter(d))` per eviction would rescan the holes
            # that deletions leave at the front of a dict (O(n) each, milliseconds per add).
            for oldest in list(islice(lru, excess)):
                del lru[oldest]
                self._drop_owner(oldest, slot)

    def _drop_owner(self, h: int, slot: int) -> None:
        owner = self._owners.get(h)
        if owner is None:
            return
        if type(owner) is int:
            if owner == slot:
                del self._owners[h]
            return
        assert isinstance(owner, set)
        owner.discard(slot)
        if len(owner) == 1:
            self._owners[h] = next(iter(owner))
        elif not owner:
            del self._owners[h]
