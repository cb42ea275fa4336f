"""Prefix-cache block hashes exactly as vLLM v1 computes them, over the sim's token ids.

vLLM (``vllm/v1/core/kv_cache_utils.py``): block i's hash is
``H((parent, tuple(token_ids of block i), extra_keys))`` where ``parent`` is block i-1's hash
(raw digest bytes) and, for block 0, ``NONE_HASH = H(PYTHONHASHSEED)`` — or 32 random bytes when
the variable is unset, so two engines started without it never share hashes. ``extra_keys`` is
``None`` or a tuple: the LoRA adapter's name on every block, then ``cache_salt`` on block 0.
``H`` is ``--prefix-caching-hash-algo``: ``sha256`` (pickle, vLLM's default), ``sha256_cbor``
(canonical CBOR), ``xxhash`` (pickle, xxh3-128) or ``xxhash_cbor``. KV events carry each hash as
vLLM's ``ExternalBlockHash``: the digest's low 64 bits as an int (``maybe_convert_block_hash``
with ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1``, the default). The engine keys its cache by that
int too (a 64-bit collision is as unlikely as one of the full digest in a simulation).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
import xxhash

HASH_ALGORITHMS = ("sha256", "sha256_cbor", "xxhash", "xxhash_cbor")
DEFAULT_HASH_ALGORITHM = "sha256"  # vLLM's CacheConfig.prefix_caching_hash_algo default
_LOW_64 = (1 << 64) - 1


def _sha256(value: Any) -> bytes:
    return hashlib.sha256(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def _sha256_cbor(value: Any) -> bytes:
    return hashlib.sha256(cbor2.dumps(value, canonical=True)).digest()


def _xxhash(value: Any) -> bytes:
    return xxhash.xxh3_128_digest(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def _xxhash_cbor(value: Any) -> bytes:
    return xxhash.xxh3_128_digest(cbor2.dumps(value, canonical=True))


_FUNCTIONS: dict[str, Callable[[Any], bytes]] = {
    "sha256": _sha256,
    "sha256_cbor": _sha256_cbor,
    "xxhash": _xxhash,
    "xxhash_cbor": _xxhash_cbor,
}


def hash_function(algorithm: str) -> Callable[[Any], bytes]:
    try:
        return _FUNCTIONS[algorithm]
    except KeyError:
        raise ValueError(
            f"unknown prefix caching hash algorithm {algorithm!r}; "
            f"choose one of {', '.join(HASH_ALGORITHMS)}"
        ) from None


def external_hash(digest: bytes) -> int:
    """vLLM's ``ExternalBlockHash`` of a digest: its low 64 bits, big-endian."""
    return int.from_bytes(digest, "big") & _LOW_64


class BlockHasher:
    """One engine's block hashing: algorithm, seed (``PYTHONHASHSEED``) and block size."""

    __slots__ = ("_fn", "algorithm", "block_size", "none_hash", "seed")

    def __init__(
        self, block_size: int, algorithm: str = DEFAULT_HASH_ALGORITHM, seed: str | None = None
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.block_size = block_size
        self.algorithm = algorithm
        self.seed = seed
        self._fn = hash_function(algorithm)
        # vLLM's init_none_hash: H(PYTHONHASHSEED) when set, else 32 random bytes.
        self.none_hash = self._fn(seed) if seed is not None else os.urandom(32)

    @classmethod
    def from_environment(
        cls, block_size: int, algorithm: str = DEFAULT_HASH_ALGORITHM
    ) -> BlockHasher:
        """As a vLLM process started with this environment would hash."""
        return cls(block_size, algorithm, os.environ.get("PYTHONHASHSEED"))

    def hashes(
        self, token_ids: Sequence[int], *, lora: str | None = None, cache_salt: str | None = None
    ) -> tuple[int, ...]:
        """External hashes of the full blocks of ``token_ids`` (a partial tail is not cached)."""
        size = self.block_size
        fn, parent = self._fn, self.none_hash
        lora_keys: tuple[str, ...] = (lora,) if lora is not None else ()
        first = lora_keys + ((cache_salt,) if cache_salt else ())
        rest = lora_keys or None
        out = []
        for i in range(len(token_ids) // size):
            extra = (first or None) if i == 0 else rest
            parent = fn((parent, tuple(token_ids[i * size : (i + 1) * size]), extra))
            out.append(external_hash(parent))
        return tuple(out)

    def extra_keys(
        self, index: int, *, lora: str | None = None, cache_salt: str | None = None
    ) -> tuple[str, ...] | None:
        """The ``extra_keys`` vLLM hashed into block ``index`` (and reports in BlockStored)."""
        keys: tuple[str, ...] = (lora,) if lora is not None else ()
        if index == 0 and cache_salt:
            keys += (cache_salt,)
        return keys or None
