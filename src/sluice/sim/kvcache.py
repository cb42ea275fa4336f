"""The KV cache as vLLM v1 manages it: N blocks, a free queue that doubles as the LRU of cached
blocks, and a hash → block map for automatic prefix caching.

A freed block keeps its hash (and stays a prefix-cache hit) until the free queue hands it out
again; blocks of a finished request are freed tail first, so its last blocks are evicted first.
"""

from __future__ import annotations

from collections import OrderedDict


class BlockPool:
    def __init__(self, num_blocks: int, *, enable_prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        # Head = least recently freed = next to be handed out (and its cached content evicted).
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._refs = [0] * num_blocks
        self._hash_of: list[int | None] = [None] * num_blocks
        self._cached: dict[int, int] = {}  # block hash -> block id

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        """Blocks referenced by at least one request (what vLLM's KV usage counts)."""
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.num_used / self.num_blocks

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def longest_prefix(self, hashes: tuple[int, ...], limit: int) -> list[int]:
        """Block ids holding the leading blocks of ``hashes`` (at most ``limit`` of them)."""
        if not self.enable_prefix_caching:
            return []
        hits = []
        for h in hashes[:limit]:
            block = self._cached.get(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def touch(self, blocks: list[int]) -> None:
        """Take a reference on cache-hit blocks, pulling free ones out of the eviction queue."""
        for block in blocks:
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1

    def can_allocate(self, count: int, hits: list[int]) -> bool:
        """Whether ``count`` fresh blocks fit after taking references on ``hits``."""
        return count <= len(self._free) - sum(1 for b in hits if self._refs[b] == 0)

    def allocate(self, count: int) -> list[int] | None:
        """``count`` fresh blocks, evicting the least recently used cached ones; None if too few."""
        if count > len(self._free):
            return None
        blocks = []
        for _ in range(count):
            block, _ = self._free.popitem(last=False)
            evicted = self._hash_of[block]
            if evicted is not None:
                del self._cached[evicted]
                self._hash_of[block] = None
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def cache(self, block: int, block_hash: int) -> None:
        """Publish a now-full block under its hash (a duplicate of a cached hash stays private)."""
        if self.enable_prefix_caching and block_hash not in self._cached:
            self._cached[block_hash] = block
            self._hash_of[block] = block_hash

    def free(self, blocks: list[int]) -> None:
        """Drop one reference on each block; unreferenced ones join the queue, tail first."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None
