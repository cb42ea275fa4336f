"""The precise prefix index: which block keys each endpoint's engine holds, as its KV events say.

Layout (memory is the constraint, as for the approximate index: 64 endpoints x 31,250 blocks):

* one map ``key -> packed bits``, bit ``s`` = "endpoint slot s holds this block"; a value with
  one bit set is a shared object per slot, so the common case costs the key and the map's slot;
  engine hashes are kept to their low 60 bits (``KEY_MASK``), as the request's keys are. In the
  engine key space the map is the native ``KeyTable`` where the extension is built
  (``datalayer.kvevents.lane.owners_map``: uint64 keys inline, 16 bytes a slot — 91 MB for
  2 M blocks against a dict's 166–246 MB — with the dict operations used here), else a dict;
* ``engine`` key space (see ``precise_hashing``): the engine's hashes are the keys, and nothing
  else is kept per block. Clearing an endpoint (a reconnect, a restarted engine) must not stall
  the event loop on a scan of millions of keys: the endpoint moves to a fresh slot at once (the
  old slot has no name, so matches on it count for nobody) and the old slot's bits are swept
  out of the dict a few thousand keys at a time as events arrive (``sweep``), after which the
  slot is free again;
* ``own`` key space: per slot a map from the engine's hash to Sluice's key(s) for that block
  (``precise_translate.EngineKeyMap``: arrays, no int object per block), needed because
  removals name the engine's hashes; it doubles as the slot's list of keys.

An endpoint holds a key or not (set semantics): a BlockStored of a held key and a BlockRemoved of
an unknown one change nothing, so a batch applied twice or a removal whose store was never seen
is harmless. (vLLM may cache two blocks under one hash and report each eviction; the first
removal then drops a key the engine still holds — an underestimate, never a false hit.)

Only the GPU tier is indexed (an event's ``medium`` is ``"GPU"``, or absent as in vLLM before
it had tiers): a block offloaded to CPU memory (vLLM's offloading connector reports it stored
and removed with ``medium="CPU"``, under the same hash) is not in the cache a request's prefill
reads, and its removal must not drop the GPU copy. Other tiers' events are counted
(``other_tiers``) and skipped.

Only one KV-cache group is indexed per endpoint. A hybrid model (full-attention layers beside
sliding-window, Mamba or other layers; vLLM's ``group_idx``) keeps one set of blocks per group,
under the same block hashes, each stored and evicted on its own: a sliding-window group drops a
block the full-attention group still holds. Mixing them would drop keys the engine can still
hit (or keep ones it cannot), so the index follows the endpoint's first full-attention group —
learned from the first BlockStored whose ``kv_cache_spec_kind`` is a full-attention kind (or
absent) — and skips the other groups' events (counted in ``other_groups``). A prefix the
full-attention group holds is what a hybrid engine can reuse at most (its sliding-window or
Mamba group must also hold the blocks near the end of the prefix), so for a hybrid model the
scores are an upper bound; an engine without a full-attention group is not indexed. Events
without a ``group_idx`` (vLLM before it had groups: one group) are always applied.

Matching is the approximate index's: walk the request's keys, and-ing the holders' bits; every
endpoint's count is the leading blocks it holds contiguously.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

from sluice.datalayer.kvevents.lane import owners_map
from sluice.datalayer.kvevents.stream import LaneEntry
from sluice.datalayer.kvevents.wire import (
    MEDIUM_GPU,
    REMOVED_TYPES,
    STORED_TYPES,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    on_gpu,
)
from sluice.scheduling.precise_hashing import BlockKeys
from sluice.scheduling.precise_translate import EngineKeyMap
from sluice.scheduling.slots import SlotTable, longest_prefixes

# vLLM's KVCacheSpecKind values of layers that attend to the whole prefix.
FULL_ATTENTION_KINDS = frozenset({"full_attention", "mla_attention", "sink_full_attention"})
_SWEEP_STEP = 4096  # keys of a retired slot swept per batch applied
# Engine hashes are kept to 60 bits: CPython stores such an int in 32 bytes instead of 36 (4 MB
# less a million blocks), and a collision stays as unlikely as in a simulation's lifetime.
KEY_MASK = (1 << 60) - 1


class PreciseIndex:
    """Implements `datalayer.kvevents.stream.KVEventSink`."""

    def __init__(self, keys: BlockKeys) -> None:
        self.keys = keys
        # engine space: the native KeyTable where it is built (a dict's operations)
        self._owners: dict[int, int] = owners_map() if keys.space == "engine" else {}
        self._table = SlotTable(width=1)
        self._held = self._table.held  # by slot: the shared "holds" bit object
        self._counts: list[int] = []  # by slot: blocks held
        # Engine space: retired slots still being swept out of the dict, each with a snapshot
        # of the dict's keys and how far the sweep has got.
        self._sweeps: deque[tuple[int, list[int], int]] = deque()
        self._translate: list[EngineKeyMap | None] = []  # own space
        # Endpoints whose events cannot be used, and why (a block size or hash seed mismatch).
        self.unusable: dict[str, str] = {}
        self._verified: set[str] = set()
        self.unchained = 0  # own space: stored blocks whose parent was never seen
        self.other_tiers = 0  # events about another cache tier than the GPU's (skipped)
        self.other_groups = 0  # events about another KV-cache group than the indexed one
        self._groups: dict[str, int] = {}  # endpoint -> the KV-cache group indexed

    # -- slots --------------------------------------------------------------------------------

    @property
    def names(self) -> list[str | None]:
        """slot -> endpoint, ``None`` for a free slot (read-only view)."""
        return self._table.names

    def slot(self, endpoint: str) -> int | None:
        return self._table.get(endpoint)

    def _slot_for(self, endpoint: str) -> int:
        slot = self._table.get(endpoint)
        if slot is not None:
            return slot
        slot, new = self._table.acquire(endpoint)
        if new:
            self._counts.append(0)
            self._translate.append(None)
        self._counts[slot] = 0
        if self.keys.space == "own":
            self._translate[slot] = EngineKeyMap()
        return slot

    # -- KVEventSink -------------------------------------------------------------------------------

    def apply(self, endpoint: str, events: Sequence[Event]) -> bool:
        """Apply one batch of `endpoint`'s events; true when one of them emptied its cache."""
        if endpoint in self.unusable:
            return False
        slot = self._slot_for(endpoint)
        if self.keys.space == "own":
            return self._apply_own(endpoint, slot, events)
        # Engine key space, the hot path (~100k events/s for 100 engines): everything inline,
        # one dict operation per block (a lookup in a dict of millions of keys is a cache miss,
        # which is most of the cost): pop a removed key and put back what others still hold;
        # setdefault a stored key, so that a new one (the common case) is found and inserted
        # at once, and whatever else was there comes back to be merged.
        owners, held = self._owners, self._held[slot]
        pop, setdefault = owners.pop, owners.setdefault
        count = self._counts[slot]
        cleared = False
        removed_types, stored_types = REMOVED_TYPES, STORED_TYPES
        indexed = self._groups.get(endpoint)  # None: not learned yet
        for event in events:
            kind = type(event)  # a set of exact types: ~10 % faster than isinstance here
            if kind in removed_types:
                removal: BlockRemoved = event  # type: ignore[assignment]
                medium = removal.medium
                if medium is not None and medium != MEDIUM_GPU:
                    self.other_tiers += 1
                    continue
                group = removal.group_idx
                if group is not None and group != indexed:
                    self.other_groups += 1  # (before a group is learned nothing is held)
                    continue
                for engine_hash in removal.block_hashes:
                    key = engine_hash & KEY_MASK
                    bits = pop(key, 0)
                    if bits is held:  # the common case: this endpoint alone held it
                        count -= 1
                    elif bits:
                        if bits & held:
                            # Not `held` itself, so others hold it too (single-holder values
                            # are always the slot's shared object).
                            owners[key] = self._canonical(bits & ~held)
                            count -= 1
                        else:
                            owners[key] = bits  # not ours: put it back
            elif kind in stored_types:
                stored: BlockStored = event  # type: ignore[assignment]
                medium = stored.medium  # `on_gpu`, inline
                if medium is not None and medium != MEDIUM_GPU:
                    self.other_tiers += 1
                    continue
                group = stored.group_idx
                if group is not None and group != indexed:
                    indexed = self._learn_group(endpoint, stored)
                    if group != indexed:
                        continue
                if not self._usable_engine_block(endpoint, stored):
                    return cleared  # the endpoint was cleared
                before = len(owners)
                for engine_hash in stored.block_hashes:
                    key = engine_hash & KEY_MASK
                    holders = setdefault(key, held)
                    if holders is not held and not holders & held:
                        owners[key] = holders | held
                        count += 1
                count += len(owners) - before  # the keys nobody held
            elif isinstance(event, AllBlocksCleared):
                self._counts[slot] = count
                self.clear(endpoint)
                slot = self._slot_for(endpoint)
                held, count, indexed = self._held[slot], 0, None
                cleared = True
        self._counts[slot] = count
        if self._sweeps:
            self.sweep(_SWEEP_STEP)
        return cleared

    # -- the native fast lane (datalayer/kvevents/lane.py) -----------------------------------

    def lane_entry(self, endpoint: str) -> LaneEntry | None:
        """Where a lane applies `endpoint`'s batches as `apply` would (engine key space, an
        endpoint in use); None: its batches take `apply`."""
        if self.keys.space != "engine" or endpoint in self.unusable:
            return None
        if type(self._owners) is dict:  # the lane applies to the native KeyTable only
            return None
        slot = self._slot_for(endpoint)  # (as `apply` takes one: a stream of empty batches)
        return LaneEntry(
            self._owners,
            self._held[slot],
            self._held,
            self._counts,
            slot,
            self._groups.get(endpoint),
            self.keys.block_size,
            endpoint in self._verified,
            KEY_MASK,
        )

    def lane_applied(
        self, endpoint: str, batches: int, other_tiers: int, other_groups: int
    ) -> None:
        """A lane applied `batches` of `endpoint`'s batches: their skipped events are counted
        and retired slots swept as far as `apply` would have for as many batches."""
        self.other_tiers += other_tiers
        self.other_groups += other_groups
        if self._sweeps:
            self.sweep(_SWEEP_STEP * batches)

    def _apply_own(self, endpoint: str, slot: int, events: Sequence[Event]) -> bool:
        cleared = False
        for event in events:
            if isinstance(event, AllBlocksCleared):
                self.clear(endpoint)
                cleared = True
            elif not on_gpu(event):
                self.other_tiers += 1
            elif not self._in_indexed_group(endpoint, event):
                continue
            elif isinstance(event, BlockStored):
                self._stored_own(endpoint, slot, event)
                if endpoint in self.unusable:
                    return cleared
            else:
                self._removed_own(slot, event.block_hashes)
        return cleared

    def clear(self, endpoint: str) -> None:
        """Drop everything `endpoint` holds."""
        slot = self._table.get(endpoint)
        self._verified.discard(endpoint)
        self._groups.pop(endpoint, None)  # a restarted engine may serve another model
        self.unusable.pop(endpoint, None)
        if slot is None or (not self._counts[slot] and not self._translate[slot]):
            return
        if self.keys.space == "own":
            for key in self._keys_of(slot):
                self._drop(key, slot)
            self._counts[slot] = 0
            self._translate[slot] = EngineKeyMap()
            return
        self._retire(endpoint, slot)

    def forget(self, endpoint: str) -> None:
        """The endpoint left the pool: clear it and free its slot."""
        self.clear(endpoint)
        slot = self._table.release(endpoint)
        if slot is not None:
            self._translate[slot] = None

    def _retire(self, endpoint: str, slot: int) -> None:
        """Engine space: give `endpoint` a fresh slot now; sweep the old one's bits later."""
        self._table.detach(endpoint)
        self._counts[slot] = 0
        self._sweeps.append((slot, list(self._owners), 0))  # one C-speed copy of the keys
        self._slot_for(endpoint)
        self.sweep(_SWEEP_STEP)

    def sweep(self, budget: int) -> None:
        """Remove retired slots' bits from up to `budget` keys; a swept slot is free again."""
        owners = self._owners
        while budget > 0 and self._sweeps:
            slot, keys, position = self._sweeps.popleft()
            held = self._held[slot]
            end = min(len(keys), position + budget)
            for key in keys[position:end]:
                bits = owners.get(key, 0)
                if bits & held:
                    rest = bits & ~held
                    if rest:
                        owners[key] = self._canonical(rest)
                    else:
                        del owners[key]
            budget -= end - position
            if end < len(keys):
                self._sweeps.appendleft((slot, keys, end))
            else:
                self._table.free(slot)

    @property
    def sweeping(self) -> int:
        """Keys still to look at for retired slots."""
        return sum(len(keys) - position for _, keys, position in self._sweeps)

    # -- reading ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._owners)

    def held(self, endpoint: str) -> set[int]:
        """The keys `endpoint` holds (tests and debugging)."""
        slot = self._table.get(endpoint)
        return set() if slot is None else set(self._keys_of(slot))

    def count(self, endpoint: str) -> int:
        slot = self._table.get(endpoint)
        return 0 if slot is None else self._counts[slot]

    def match(self, keys: list[int]) -> dict[int, int]:
        """slot -> number of leading blocks it holds contiguously."""
        return longest_prefixes(self._owners.get, keys, self._table.holders, 0)

    # -- KV-cache groups ---------------------------------------------------------------------------

    def indexed_group(self, endpoint: str) -> int | None:
        """The KV-cache group whose blocks are indexed for `endpoint` (None: not learned)."""
        return self._groups.get(endpoint)

    def _learn_group(self, endpoint: str, event: BlockStored) -> int | None:
        """The group indexed for `endpoint` once `event` (of another group than the one
        indexed, or before one is) has been seen; counts the event when it is not indexed."""
        indexed = self._groups.get(endpoint)
        kind = event.kv_cache_spec_kind
        if indexed is None and (kind is None or kind in FULL_ATTENTION_KINDS):
            indexed = self._groups[endpoint] = event.group_idx  # type: ignore[assignment]
        else:
            self.other_groups += 1
        return indexed

    def _in_indexed_group(self, endpoint: str, event: BlockStored | BlockRemoved) -> bool:
        group = event.group_idx
        if group is None:
            return True
        indexed = self._groups.get(endpoint)
        if group == indexed:
            return True
        if isinstance(event, BlockStored):
            return self._learn_group(endpoint, event) == group
        self.other_groups += 1
        return False

    # -- engine key space ------------------------------------------------------------------------

    def _usable_engine_block(self, endpoint: str, event: BlockStored) -> bool:
        """Whether the engine's hashes can be our keys: its block size is ours and, checked
        once on the first block of a prompt, it hashes with our seed and algorithm."""
        keys = self.keys
        if event.block_size != keys.block_size:
            self._unusable(
                endpoint,
                f"engine block size {event.block_size} != blockSizeTokens {keys.block_size}",
            )
            return False
        if event.parent_block_hash is None and endpoint not in self._verified:
            extra = event.extra_keys[0] if event.extra_keys else _lora_extra(event)
            expected = keys.engine_hash_of_first_block(
                event.tokens(), tuple(extra) if extra is not None else None
            )
            if expected != event.block_hashes[0] & KEY_MASK:
                self._unusable(
                    endpoint,
                    "the engine hashes blocks with another seed or algorithm: set "
                    "tokenProcessorConfig.hashSeed to its PYTHONHASHSEED and hashAlgorithm to "
                    "its --prefix-caching-hash-algo",
                )
                return False
            self._verified.add(endpoint)
        return True

    # -- own key space ---------------------------------------------------------------------------

    def _stored_own(self, endpoint: str, slot: int, event: BlockStored) -> None:
        keys = self.keys
        ratio, rem = divmod(event.block_size, keys.block_size)
        if rem or not ratio:
            self._unusable(
                endpoint,
                f"engine block size {event.block_size} is not a multiple of blockSizeTokens "
                f"{keys.block_size}",
            )
            return
        translate = self._translate[slot]
        assert translate is not None
        parent: int | None = None
        if event.parent_block_hash is not None:
            parent = translate.last(event.parent_block_hash)
            if parent is None:
                self.unchained += len(event.block_hashes)
                return  # stored after a block we never saw: its keys are unknowable
        lora = event.lora_name
        salt = _salt_of(event) if event.parent_block_hash is None else None
        n = len(event.block_hashes)
        own = keys.own_chain(
            event.tokens(),
            n * ratio,
            parent,
            lora,
            salt,
            first_index=0 if event.parent_block_hash is None else 1,
        )
        owners, held = self._owners, self._held[slot]
        added = 0
        for j, engine_hash in enumerate(event.block_hashes):
            mine = own[j * ratio : (j + 1) * ratio]
            if not translate.add(engine_hash, mine):
                continue
            for key in mine:
                bits = owners.get(key)
                if bits is None:
                    owners[key] = held
                elif not bits & held:
                    owners[key] = bits | held
            added += ratio
        self._counts[slot] += added

    def _removed_own(self, slot: int, hashes: Sequence[int]) -> None:
        translate = self._translate[slot]
        assert translate is not None
        removed = 0
        for engine_hash in hashes:
            mine = translate.pop(engine_hash)
            if mine is None:
                continue
            for key in mine:
                self._drop(key, slot)
                removed += 1
        self._counts[slot] -= removed

    # -- helpers ----------------------------------------------------------------------------------

    def _keys_of(self, slot: int) -> Iterator[int]:
        held, owners = self._held[slot], self._owners
        if self.keys.space == "engine":  # a scan: tests and debugging only
            yield from [key for key, bits in owners.items() if bits & held]
            return
        translate = self._translate[slot]
        if translate is not None:
            yield from list(translate.own_keys())

    def _drop(self, key: int, slot: int) -> None:
        owners, held = self._owners, self._held[slot]
        bits = owners.get(key, 0)
        if not bits & held:
            return
        rest = bits & ~held
        if rest:
            owners[key] = self._canonical(rest)
        else:
            del owners[key]

    def _canonical(self, bits: int) -> int:
        """`bits`, as the slot's shared object when only one slot is in it."""
        if bits & (bits - 1):
            return bits
        return self._held[bits.bit_length() - 1]

    def _unusable(self, endpoint: str, why: str) -> None:
        self.clear(endpoint)
        self.unusable[endpoint] = why


def _lora_extra(event: BlockStored) -> tuple[str, ...] | None:
    """Older vLLM reports no extra_keys: the LoRA name is the only one it hashed."""
    return (event.lora_name,) if event.lora_name is not None else None


def _salt_of(event: BlockStored) -> str | None:
    """The cache_salt vLLM hashed into a prompt's first block: its extra keys after the LoRA
    name (text-only requests)."""
    if not event.extra_keys or not event.extra_keys[0]:
        return None
    rest = list(event.extra_keys[0])
    if event.lora_name is not None and rest and rest[0] == event.lora_name:
        rest = rest[1:]
    if len(rest) == 1 and isinstance(rest[0], str):
        return rest[0]
    return "\x00".join(map(str, rest)) if rest else None
