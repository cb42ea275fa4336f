"""The KV cache as vLLM v1 manages it: N blocks, a free queue that doubles as the LRU of cached
blocks, and a hash → block map for automatic prefix caching.

A freed block keeps its hash (and stays a prefix-cache hit) until the free queue hands it out
again; blocks of a finished request are freed tail first, so its last blocks are evicted first.

With KV-cache events on, the pool records what vLLM's ``BlockPool`` emits, as plain data for the
shell to publish: ``BlockStored`` when blocks enter the hash map (consecutive blocks of one
request in one event, with their parent's hash and token ids), ``BlockRemoved`` for each cached
block evicted, ``AllBlocksCleared`` on a prefix-cache reset. ``take_events()`` drains them.
The pool is one KV-cache group (a model of full-attention layers only), so every event names
group 0 and BlockStored its kind, ``full_attention``, as vLLM's does for such a model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from sluice.sim.kv_events import (
    FULL_ATTENTION,
    MEDIUM_GPU,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
)

GROUP = 0  # the pool's KV-cache group


class BlockPool:
    def __init__(
        self,
        num_blocks: int,
        *,
        enable_prefix_caching: bool = True,
        enable_kv_cache_events: bool = False,
        block_size: int = 16,
    ) -> None:
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.enable_kv_cache_events = enable_kv_cache_events
        self.block_size = block_size
        self._events: list[Event] = []
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
                if self.enable_kv_cache_events:
                    self._events.append(BlockRemoved([evicted], MEDIUM_GPU, GROUP))
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def cache(
        self,
        block: int,
        block_hash: int,
        *,
        parent: int | None = None,
        token_ids: Sequence[int] = (),
        lora: str | None = None,
        extra_keys: tuple[str, ...] | None = None,
    ) -> None:
        """Publish a now-full block under its hash (a duplicate of a cached hash stays private).
        ``parent`` (the previous block's hash), ``token_ids`` (the block's), ``lora`` and
        ``extra_keys`` only describe it in the BlockStored event."""
        if not self.enable_prefix_caching or block_hash in self._cached:
            return
        self._cached[block_hash] = block
        self._hash_of[block] = block_hash
        if self.enable_kv_cache_events:
            self._stored(block_hash, parent, token_ids, lora, extra_keys)

    def _stored(
        self,
        block_hash: int,
        parent: int | None,
        token_ids: Sequence[int],
        lora: str | None,
        extra_keys: tuple[str, ...] | None,
    ) -> None:
        """Extend the last BlockStored when this block continues it (vLLM's one event per
        request per caching call), else start one."""
        events = self._events
        last = events[-1] if events else None
        if (
            isinstance(last, BlockStored)
            and parent is not None
            and last.block_hashes[-1] == parent
            and last.lora_name == lora
        ):
            last.block_hashes.append(block_hash)
            last.token_ids.extend(token_ids)
            assert last.extra_keys is not None
            last.extra_keys.append(extra_keys)
            return
        events.append(
            BlockStored(
                [block_hash],
                parent,
                list(token_ids),
                self.block_size,
                None,
                MEDIUM_GPU,
                lora,
                [extra_keys],  # vLLM sends one entry per block, None when it has none
                GROUP,
                FULL_ATTENTION,
            )
        )

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash (vLLM's reset_prefix_cache): only when no block is in use."""
        if self.num_used:
            return False
        self._cached.clear()
        self._hash_of = [None] * self.num_blocks
        if self.enable_kv_cache_events:
            self._events.append(AllBlocksCleared())
        return True

    def cached_hashes(self) -> set[int]:
        """Every hash a lookup would hit right now (the truth KV events describe)."""
        return set(self._cached)

    def take_events(self) -> list[Event]:
        """The events recorded since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def free(self, blocks: list[int]) -> None:
        """Drop one reference on each block; unreferenced ones join the queue, tail first."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None
