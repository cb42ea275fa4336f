"""Block keys of the precise prefix index: over token-id blocks, in one of two key spaces.

* ``engine`` (``tokenProcessorConfig.hashSeed`` set): the keys are vLLM's own block hashes —
  ``hash_block_tokens``: ``H((parent digest, tuple(block token ids), extra_keys))`` chained from
  ``NONE_HASH = H(hashSeed)``, reported as the digest's low 64 bits (``ExternalBlockHash``), with
  ``H`` = ``hashAlgorithm`` (vLLM's ``--prefix-caching-hash-algo``: ``sha256`` pickles,
  ``sha256_cbor`` canonical CBOR, ``xxhash``/``xxhash_cbor`` the same with xxh3-128). An engine
  started with ``PYTHONHASHSEED=hashSeed`` and the same algorithm and block size reports
  exactly these keys (kept to their low 60 bits), so events are stored as they come: no hashing
  on ingestion.
* ``own`` (no ``hashSeed``, as upstream's default): Sluice's chain ``xxh3_64(token ids + extra
  keys, seed = parent key)`` recomputed from each BlockStored's token ids — any engine seed,
  algorithm, or a block size that is a multiple of ``blockSizeTokens`` works, at the price of
  hashing on ingestion and a per-endpoint map from the engine's hashes to these keys (removals
  name only the engine's hashes).

``extra_keys`` are vLLM's: the LoRA adapter's name on every block, then ``cache_salt`` on
block 0. vLLM's rule is mirrored here (the EPP must compute what the engine computes, as llm-d's
Go indexer does); ``tests/scheduling/test_precise_hashing.py`` pins it against the simulator's.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from typing import Any, Literal

import cbor2
import xxhash

KeySpace = Literal["engine", "own"]
HASH_ALGORITHMS = ("sha256", "sha256_cbor", "xxhash", "xxhash_cbor")
_OWN_MASK = (1 << 60) - 1  # compact CPython ints (32 bytes, not 36)
# The index keeps the engine's 64-bit hashes to their low 60 bits for the same reason.
_ENGINE_KEY = (1 << 60) - 1
_MEMO_LIMIT = 65_536  # memoized block digests (~15 MB), forgotten all at once when full


def _pickled(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _cbor(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


_FUNCTIONS: dict[str, Callable[[Any], bytes]] = {
    "sha256": lambda v: hashlib.sha256(_pickled(v)).digest(),
    "sha256_cbor": lambda v: hashlib.sha256(_cbor(v)).digest(),
    "xxhash": lambda v: xxhash.xxh3_128_digest(_pickled(v)),
    "xxhash_cbor": lambda v: xxhash.xxh3_128_digest(_cbor(v)),
}


def _packed(token_ids: Sequence[int], count: int) -> bytes:
    """The first `count` ids as little-endian uint32s."""
    if isinstance(token_ids, array) and token_ids.typecode == "I" and sys.byteorder == "little":
        return token_ids[:count].tobytes()
    return struct.pack(f"<{count}I", *token_ids[:count])


def extra_keys(index: int, lora: str | None, cache_salt: str | None) -> tuple[str, ...] | None:
    """vLLM's ``generate_block_hash_extra_keys`` for a text-only request."""
    keys: tuple[str, ...] = (lora,) if lora is not None else ()
    if index == 0 and cache_salt:
        keys += (cache_salt,)
    return keys or None


class BlockKeys:
    """How block keys are made: key space, block size, and (engine space) vLLM's hashing."""

    def __init__(
        self,
        block_size: int,
        *,
        hash_seed: str = "",
        algorithm: str = "sha256",
    ) -> None:
        if block_size < 1:
            raise ValueError("block size must be >= 1")
        if algorithm not in _FUNCTIONS:
            raise ValueError(f"hash algorithm must be one of {', '.join(HASH_ALGORITHMS)}")
        self.block_size = block_size
        self.space: KeySpace = "engine" if hash_seed else "own"
        self.algorithm = algorithm
        self._fn = _FUNCTIONS[algorithm]
        self._none_hash = self._fn(hash_seed) if hash_seed else b""
        self._memo: dict[tuple[bytes, bytes, tuple[str, ...] | None], bytes] = {}

    # -- a request's keys ----------------------------------------------------------------------

    def request_keys(
        self,
        token_ids: Sequence[int],
        *,
        lora: str | None = None,
        cache_salt: str | None = None,
        max_blocks: int,
    ) -> list[int]:
        """Keys of the prompt's full blocks (at most ``max_blocks``), in this key space."""
        n = min(len(token_ids) // self.block_size, max_blocks)
        if self.space == "engine":
            return self._engine_chain(token_ids, n, lora, cache_salt)
        return self.own_chain(token_ids, n, None, lora, cache_salt, first_index=0)

    def _engine_chain(
        self, token_ids: Sequence[int], n: int, lora: str | None, cache_salt: str | None
    ) -> list[int]:
        """vLLM's chain. A digest is memoized by (parent digest, block's token bytes, extra
        keys): prompts share prefixes (system prompts, earlier turns), and a dict lookup costs a
        fraction of pickling and hashing the block again."""
        size, fn, parent = self.block_size, self._fn, self._none_hash
        memo = self._memo
        if len(memo) > _MEMO_LIMIT:
            memo.clear()
        packed = _packed(token_ids, n * size)
        width = size * 4
        keys = []
        for i in range(n):
            extra = extra_keys(i, lora, cache_salt)
            memo_key = (parent, packed[i * width : (i + 1) * width], extra)
            digest = memo.get(memo_key)
            if digest is None:
                digest = fn((parent, tuple(token_ids[i * size : (i + 1) * size]), extra))
                memo[memo_key] = digest
            parent = digest
            keys.append(int.from_bytes(digest, "big") & _ENGINE_KEY)
        return keys

    def own_chain(
        self,
        token_ids: Sequence[int],
        n: int,
        parent: int | None,
        lora: str | None,
        cache_salt: str | None,
        *,
        first_index: int,
    ) -> list[int]:
        """Sluice's keys of ``n`` blocks of ``token_ids`` continuing ``parent`` (None: the
        prompt's start). ``first_index`` is the first block's position in the prompt (0 gets
        ``cache_salt``)."""
        size = self.block_size
        digest, mask = xxhash.xxh3_64_intdigest, _OWN_MASK
        tokens = _packed(token_ids, n * size)
        width = size * 4
        key = 0 if parent is None else parent
        keys = []
        lora_tail = b"" if lora is None else b"\x00lora\x00" + lora.encode()
        for i in range(n):
            block = tokens[i * width : (i + 1) * width]
            if lora_tail or (first_index + i == 0 and cache_salt):
                block += lora_tail
                if first_index + i == 0 and cache_salt:
                    block += b"\x00salt\x00" + cache_salt.encode()
            key = digest(block, key) & mask
            keys.append(key)
        return keys

    # -- an engine's blocks ----------------------------------------------------------------------

    def engine_hash_of_first_block(
        self, token_ids: Sequence[int], extra: tuple[Any, ...] | None
    ) -> int:
        """vLLM's hash of a prompt's first block under this configuration (engine space): an
        engine whose BlockStored disagrees hashes with another seed or algorithm."""
        digest = self._fn((self._none_hash, tuple(token_ids[: self.block_size]), extra))
        return int.from_bytes(digest, "big") & _ENGINE_KEY
