"""Block hashes of a prompt, for the approximate prefix-cache index.

Differences from upstream (facts §5.3, §14.5), on purpose:
* chat requests hash the messages' roles and contents, not their JSON serialization, so
  formatting differences (key order, spacing, escaping) do not break a shared prefix;
* the chain is seeded with the target model (the LoRA adapter when the request targets one)
  and `cache_salt`, so different adapters or salts never share cache entries — as in vLLM.
Blocks are `block_size` bytes of UTF-8 (≈ chars; 4 per token), the trailing partial block is
ignored, at most `max_blocks` are hashed. Hashes are truncated to 60 bits: small enough for
CPython to store compactly in the index, still collision-free in practice.
"""

from __future__ import annotations

import xxhash

from sluice.requests.model import InferenceRequest

HASH_MASK = (1 << 60) - 1
_ROLE_MARK, _CONTENT_MARK = "\x1e", "\x1f"  # ASCII record/unit separators cannot collide


def prompt_text(request: InferenceRequest) -> str:
    """The text whose prefix an engine would cache: chat turns in order, or the prompt."""
    if request.messages:
        return "".join(f"{_ROLE_MARK}{m.role}{_CONTENT_MARK}{m.content}" for m in request.messages)
    return request.prompt


def chain_seed(request: InferenceRequest) -> int:
    salt = request.cache_salt or ""
    return xxhash.xxh3_64_intdigest(f"{request.target_model}\x00{salt}".encode()) & HASH_MASK


def block_hashes(request: InferenceRequest, block_size: int, max_blocks: int) -> list[int]:
    """Chained hashes of the prompt's full blocks: block i's hash covers blocks 0..i."""
    data = prompt_text(request).encode()
    n_blocks = min(len(data) // block_size, max_blocks)
    if n_blocks == 0:
        return []
    view = memoryview(data)
    digest = xxhash.xxh3_64_intdigest
    mask = HASH_MASK
    h = chain_seed(request)
    out: list[int] = []
    append = out.append
    for start in range(0, n_blocks * block_size, block_size):
        h = digest(view[start : start + block_size], h) & mask
        append(h)
    return out
