"""An approximate model of every endpoint's prefix cache: which block hashes it holds.

Memory is the constraint (64 endpoints x 31,250 blocks = 2 M entries must stay well under
300 MB, also after hours of churn), so the layout is:

* one dict `hash -> packed bits`: for endpoint slot s, bit 2s = "s holds this block" and bit
  2s+1 = "s re-used it since its clock hand last passed" (CLOCK's reference bit);
* per slot, a fixed ring of the hashes it holds (`array('q')`, 8 bytes a block, never resized
  once full) swept by a clock hand: the victim is the first block whose reference bit is clear,
  clearing bits on the way (second chance). CLOCK approximates LRU; an exact per-slot LRU needs
  an ordered dict per slot, which under churn CPython resizes to 3x its live entries (a 2 M-entry
  index measured 239 MB after a fill and 327 MB after churn; the rings cannot grow).

Bits rather than "a slot, or a set of slots": the dict holds only ints, so the garbage collector
never tracks it (a tracked 2 M-entry dict made every full collection a multi-millisecond pause
on the request path), shared blocks cost one int, and matching is `&` on ints. Single-slot values
are one shared object per (slot, reference bit), so the common case costs nothing per entry.
"""

from __future__ import annotations

from array import array

from sluice.scheduling.slots import SlotTable, longest_prefixes

# Second chances granted per eviction before the hand takes a re-used block anyway: bounds one
# eviction's work (~0.3 ms; a ring of re-used blocks would otherwise be swept whole, ~10 ms).
# Four full prompts' worth (4 x maxPrefixBlocksToMatch), because a hot prompt's blocks sit side
# by side in the ring and evicting one from its middle breaks the whole chain: at 32 the
# shared-prefix benchmark's hit rate fell from 0.90 to 0.88; at 1,024 it equals unbounded CLOCK.
MAX_SECOND_CHANCES = 1024


class PrefixIndex:
    def __init__(self, max_second_chances: int = MAX_SECOND_CHANCES) -> None:
        self._max_second_chances = max_second_chances
        self._owners: dict[int, int] = {}  # hash -> packed bits (never 0)
        self._table = SlotTable(width=2)
        self._rings: list[array[int] | None] = []  # by slot: hashes held, in clock order
        self._hands: list[int] = []  # by slot: the next ring position the clock looks at
        # By slot, one shared object each: "holds" (1 << 2s) and "holds, re-used" (3 << 2s).
        self._held = self._table.held
        self._held_used: list[int] = []

    # -- servers ------------------------------------------------------------------------------

    @property
    def slots(self) -> dict[str, int]:
        """server -> slot (read-only view; do not mutate)."""
        return self._table.by_name

    @property
    def names(self) -> list[str | None]:
        """slot -> server, `None` for a free slot (read-only view; do not mutate)."""
        return self._table.names

    def slot(self, server: str) -> int | None:
        return self._table.get(server)

    def _slot_for(self, server: str) -> int:
        slot = self._table.get(server)
        if slot is None:
            slot, new = self._table.acquire(server)
            if new:
                self._rings.append(None)
                self._hands.append(0)
                self._held_used.append(3 << 2 * slot)
            self._rings[slot] = array("q")
            self._hands[slot] = 0
        return slot

    def remove_server(self, server: str) -> None:
        slot = self._table.release(server)
        if slot is None:
            return
        ring = self._rings[slot]
        self._rings[slot] = None
        if ring:
            for h in ring:
                self._release(h, slot)

    def servers(self) -> list[str]:
        return list(self._table.by_name)

    def held(self, server: str) -> list[int]:
        """The block hashes `server` holds, in no particular order (for tests and debugging)."""
        slot = self._table.get(server)
        ring = None if slot is None else self._rings[slot]
        return [] if ring is None else list(ring)

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._owners)

    def match(self, hashes: list[int]) -> dict[int, int]:
        """slot -> number of leading blocks it holds *contiguously* (greedy: stops when no
        endpoint still matching holds the next block). Reference bits are not holders."""
        return longest_prefixes(self._owners.get, hashes, self._table.holders, 1)

    # -- learning ---------------------------------------------------------------------------------

    def add(self, server: str, hashes: list[int], capacity: int) -> None:
        """Record that `server` now caches `hashes`; beyond `capacity` blocks, evict by CLOCK."""
        slot = self._slot_for(server)
        ring = self._rings[slot]
        assert ring is not None
        if len(ring) != capacity and self._hands[slot]:
            self._rotate_to_hand(slot, ring)
        if len(ring) > capacity:  # the engine reported a smaller cache: forget the oldest
            for h in ring[: len(ring) - capacity]:
                self._release(h, slot)
            del ring[: len(ring) - capacity]
        held, held_used = self._held[slot], self._held_used[slot]
        used = held_used ^ held
        owners = self._owners
        get = owners.get
        hand, size = self._hands[slot], len(ring)
        # Ring positions between the hand and this call's first write (appends go behind the
        # hand, which is at 0 while the ring grows): at `capacity` the hand is back at them.
        travel = 0
        # One pass that touches each owners entry once while it is in cache: the owners dict
        # is ~100 MB, so its cache misses, not bytecode, dominate.
        for h in hashes:
            bits = get(h)
            if bits is None:
                # Store the shared `held` object itself, not an equal new int: 32 bytes an entry.
                owners[h] = held
            elif bits & held:  # already held: mark it re-used (no new int when single-slot)
                if not bits & used:
                    owners[h] = held_used if bits is held else bits | used
                continue
            else:
                owners[h] = bits | held
            if size < capacity:
                ring.append(h)
                size += 1
                travel += 1
                continue
            # The common case: not re-used, no other holder, and the hand has not come full
            # circle in this call (so it cannot be one of this call's own blocks).
            if travel < capacity and owners[ring[hand]] is held:
                del owners[ring[hand]]
            else:
                hand, travel = self._evict(slot, ring, hand, travel, hashes)
            ring[hand] = h
            hand = hand + 1 if hand + 1 < capacity else 0
            travel += 1
        self._hands[slot] = hand

    def _evict(
        self, slot: int, ring: array[int], hand: int, travel: int, adding: list[int]
    ) -> tuple[int, int]:
        """CLOCK from `hand`: release the first block not re-used since the hand last passed
        it, clearing re-use bits on the way (at most `max_second_chances`). Never one of the
        blocks being added (as an LRU would not), unless they alone overflow the ring.
        Returns the freed position and the hand's travel in this call."""
        owners, used = self._owners, self._held_used[slot] ^ self._held[slot]
        capacity = len(ring)
        chances = self._max_second_chances
        protected: set[int] | None = None  # built only when it matters: rare
        while True:
            candidate = ring[hand]
            bits = owners[candidate]
            if travel >= capacity or (bits & used and not chances):
                if protected is None:
                    protected = set(adding) if len(adding) < capacity else set()
                if candidate not in protected:
                    break
            elif bits & used:
                owners[candidate] = self._canonical(bits ^ used)
                chances -= 1
            else:
                break
            hand = hand + 1 if hand + 1 < capacity else 0
            travel += 1
        self._release(candidate, slot)
        return hand, travel

    def _rotate_to_hand(self, slot: int, ring: array[int]) -> None:
        """Reorder `ring` oldest first, hand at 0, so that growing it appends behind the hand
        and shrinking it drops the oldest blocks (the cache size changed: rare)."""
        hand = self._hands[slot]
        ring[:] = ring[hand:] + ring[:hand]
        self._hands[slot] = 0

    def _release(self, h: int, slot: int) -> None:
        """Clear `slot`'s bits on `h` (known to be held by it); forget `h` if no slot is left."""
        owners = self._owners
        rest = owners[h] & ~self._held_used[slot]
        if rest:
            owners[h] = self._canonical(rest)
        else:
            del owners[h]

    def _canonical(self, bits: int) -> int:
        """`bits`, as the slot's shared object when only one slot is in it (see `add`)."""
        slot = self._table.slot_of_bit(bits)
        if bits >> 2 * slot > 3:
            return bits  # several slots: its own int
        return self._held[slot] if bits == self._held[slot] else self._held_used[slot]
