"""One endpoint's map from the engine's block hashes to Sluice's own keys (the precise index's
``own`` key space): removals name only the engine's hashes, and a stored chain continues the
own key of its parent.

Memory is why this is not a dict: 64 endpoints x 31,250 blocks is 2 M entries, and a dict
keeps each engine hash as an int object (32 bytes; 48 allocated for a full 64-bit hash) beside
its 24-byte entry and index slot, and grows to three times its live entries under churn. Here
the entries live in two ``array('Q')`` — open addressing with linear probing, 16 bytes a cell,
load kept between 1/2 and 3/4 (the table grows by half, not doubling: 31,250 entries take 41,991
cells, 656 KiB, where a power of two would be 65,536, 1 MiB) — and a removal shifts the cells
after it back (no tombstones), so churn does not grow the table. The price is CPU: a probe is
Python bytecode, ~3x a dict operation.

Keys are engine hashes to their low 60 bits (as the index keeps them), plus one: 0 marks an
empty cell. A key's home cell is the key modulo the table size: engine hashes are digests,
uniform already.
An engine block of ``ratio`` own blocks (the engine's block size a multiple of ours) maps to
the last of its own keys (a chain's continuation), and that key to the group of them in a
dict, which is empty when the block sizes are equal.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

_KEY_MASK = (1 << 60) - 1
_MIN_CELLS = 64


def _cells(n: int) -> array[int]:
    return array("Q", bytes(8 * n))


class EngineKeyMap:
    __slots__ = ("_groups", "_keys", "_size", "_used", "_values")

    def __init__(self) -> None:
        self._keys = _cells(_MIN_CELLS)
        self._values = _cells(_MIN_CELLS)
        self._size = _MIN_CELLS
        self._used = 0
        self._groups: dict[int, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return self._used

    def __contains__(self, engine_hash: int) -> bool:
        return self.last(engine_hash) is not None

    def last(self, engine_hash: int) -> int | None:
        """The own key a chain stored after this engine block continues from."""
        cell = (engine_hash & _KEY_MASK) + 1
        keys, size = self._keys, self._size
        i = cell % size
        while True:  # linear probing (inlined in each method: a call costs a probe's time)
            found = keys[i]
            if found == cell:
                return self._values[i]
            if not found:
                return None
            i += 1
            if i == size:
                i = 0

    def add(self, engine_hash: int, own: Sequence[int]) -> bool:
        """Map an engine block to its own keys (one or more); false if it was mapped already."""
        cell = (engine_hash & _KEY_MASK) + 1
        keys, size = self._keys, self._size
        i = cell % size
        while True:
            found = keys[i]
            if found == cell:
                return False
            if not found:
                break
            i += 1
            if i == size:
                i = 0
        keys[i] = cell
        last = self._values[i] = own[-1]
        if len(own) > 1:
            self._groups[last] = tuple(own)
        self._used += 1
        if self._used * 4 > size * 3:
            self._resize(size * 3 // 2)
        return True

    def pop(self, engine_hash: int) -> tuple[int, ...] | None:
        """Unmap an engine block; its own keys, or None if it was not mapped."""
        cell = (engine_hash & _KEY_MASK) + 1
        keys, values, size = self._keys, self._values, self._size
        i = cell % size
        while True:
            found = keys[i]
            if found == cell:
                break
            if not found:
                return None
            i += 1
            if i == size:
                i = 0
        last = values[i]
        # Backward shift: move up each later cell of the run that may sit in the hole.
        j = i
        while True:
            j += 1
            if j == size:
                j = 0
            found = keys[j]
            if not found:
                break
            home = found % size
            if (i < j and (home <= i or home > j)) or (i > j and j < home <= i):
                keys[i], values[i] = found, values[j]
                i = j
        keys[i] = values[i] = 0
        self._used -= 1
        group = self._groups.pop(last, None) if self._groups else None
        return (last,) if group is None else group

    def own_keys(self) -> Iterator[int]:
        """Every own key mapped (in no particular order)."""
        groups = self._groups
        for cell, last in zip(self._keys, self._values):
            if cell:
                group = groups.get(last) if groups else None
                if group is None:
                    yield last
                else:
                    yield from group

    def _resize(self, size: int) -> None:
        keys, values = self._keys, self._values
        self._keys, self._values, self._size = _cells(size), _cells(size), size
        new_keys, new_values = self._keys, self._values
        for cell, last in zip(keys, values):
            if cell:
                i = cell % size
                while new_keys[i]:
                    i += 1
                    if i == size:
                        i = 0
                new_keys[i], new_values[i] = cell, last
