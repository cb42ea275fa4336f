"""Endpoint slots for the prefix indexes (`prefix_index`, `precise_index`): each endpoint an
index tracks gets a small integer slot, reused once freed, that owns ``width`` adjacent bits of
the packed int an index keeps per block (bit ``width * s`` = "slot s holds this block"; the
approximate index's second bit is CLOCK's reference bit). Matching a request walks its block
keys, and-ing the holders' bits (`longest_prefixes`).

A slot's "holds" bit is one shared int object (`held`), so a block held by one endpoint alone
costs the index nothing beyond its key and dict entry: indexes store that object itself, and
`is` tells the common case apart without arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice


class SlotTable:
    """name <-> slot. A slot is taken with `acquire`; `release` frees it at once, `detach`
    only unnames it (the precise index sweeps a detached slot's bits out before `free`)."""

    __slots__ = ("_free", "by_name", "held", "holders", "names", "width")

    def __init__(self, width: int = 1) -> None:
        self.width = width
        self.by_name: dict[str, int] = {}
        self.names: list[str | None] = []  # by slot; None: free or detached
        self.held: list[int] = []  # by slot: the shared "holds" bit object
        self.holders = 0  # every slot's "holds" bit: masks a packed value down to holders
        self._free: list[int] = []

    def __len__(self) -> int:
        """Slots ever made (the per-slot lists of an index are this long)."""
        return len(self.names)

    def get(self, name: str) -> int | None:
        return self.by_name.get(name)

    def acquire(self, name: str) -> tuple[int, bool]:
        """`name`'s slot, taking a free one (or a new one, then ``True``) if it has none."""
        slot = self.by_name.get(name)
        if slot is not None:
            return slot, False
        new = not self._free
        if new:
            slot = len(self.names)
            self.names.append(name)
            bit = 1 << self.width * slot
            self.held.append(bit)
            self.holders |= bit
        else:
            slot = self._free.pop()
            self.names[slot] = name
        self.by_name[name] = slot
        return slot, new

    def detach(self, name: str) -> int | None:
        """Unname `name`'s slot without freeing it; the slot, if it had one."""
        slot = self.by_name.pop(name, None)
        if slot is not None:
            self.names[slot] = None
        return slot

    def free(self, slot: int) -> None:
        """A detached slot may be taken again."""
        self._free.append(slot)

    def release(self, name: str) -> int | None:
        """Unname and free `name`'s slot; the slot, if it had one."""
        slot = self.detach(name)
        if slot is not None:
            self._free.append(slot)
        return slot

    def slot_of_bit(self, bits: int) -> int:
        """The slot owning the lowest set bit of `bits`."""
        return ((bits & -bits).bit_length() - 1) // self.width


def longest_prefixes(
    get: Callable[[int, int], int], keys: list[int], holders: int, shift: int
) -> dict[int, int]:
    """slot -> number of leading `keys` it holds *contiguously* (greedy: stops when no slot
    still matching holds the next key). `get` is the owners dict's ``get``; `holders` masks a
    value down to "holds" bits; slot ``s`` owns bit ``s << shift``."""
    if not keys:
        return {}
    alive = get(keys[0], 0) & holders
    if not alive:
        return {}
    matched: dict[int, int] = {}
    i = 1
    for key in islice(keys, 1, None):
        still = alive & get(key, 0)
        if still != alive:  # rare: some slots stop matching at block i
            _record(matched, alive ^ still, i, shift)
            alive = still
            if not alive:
                return matched
        i += 1
    _record(matched, alive, i, shift)
    return matched


def _record(matched: dict[int, int], mask: int, blocks: int, shift: int) -> None:
    """matched[slot] = blocks for every slot whose holds-bit is set in `mask`."""
    while mask:
        low = mask & -mask
        matched[(low.bit_length() - 1) >> shift] = blocks
        mask ^= low
