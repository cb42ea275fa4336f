"""A deterministic tokenizer that needs no download, and the filler text the engine "generates".

Rule: token i of a text is its characters [4i, 4i+4) (Python str characters, so ~4 chars per
token like BPE on English). An empty prompt still costs one token (vLLM adds a BOS token).
Chat messages are rendered with a small template before counting:
``<|role|>\\n{content}<|end|>\\n`` per message, then ``<|assistant|>\\n`` as the generation prompt.

Prefix-cache block hashes are chained over full blocks, as vLLM's: block i's hash covers its own
tokens and (through the seed) every block before it, salted by the LoRA adapter and cache_salt,
so the same text under a different adapter or salt never shares cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import xxhash

CHARS_PER_TOKEN = 4
GENERATION_PROMPT = "<|assistant|>\n"

# Each filler word is exactly one token (4 characters), so generated text re-tokenizes to the
# same count it was generated with.
FILLER_WORDS = (" the", " sim", " lab", " one", " big", " red", " fox", " ran", " far", " and")


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def message_text(content: object) -> str:
    """Text of an OpenAI message ``content``: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return "" if content is None else str(content)


def render_chat(messages: Iterable[Mapping[str, object]]) -> str:
    rendered = [
        f"<|{m.get('role', 'user')}|>\n{message_text(m.get('content'))}<|end|>\n" for m in messages
    ]
    return "".join(rendered) + GENERATION_PROMPT


def block_hashes(
    text: str, block_size: int, *, lora: str | None = None, cache_salt: str | None = None
) -> tuple[int, ...]:
    """Chained hashes of the full ``block_size``-token blocks (a partial tail is not cached)."""
    num_full = count_tokens(text) // block_size
    chars = block_size * CHARS_PER_TOKEN
    parent = xxhash.xxh64_intdigest(f"{lora or ''}\x00{cache_salt or ''}".encode())
    hashes = []
    for i in range(num_full):
        parent = xxhash.xxh64_intdigest(text[i * chars : (i + 1) * chars].encode(), seed=parent)
        hashes.append(parent)
    return tuple(hashes)


def natural_length(text: str, *, seed: int, mean: float) -> int:
    """Where the model would emit EOS: exponential with ``mean``, fixed by the prompt."""
    u = xxhash.xxh64_intdigest(text.encode(), seed=seed & 0xFFFFFFFFFFFFFFFF) / 2.0**64
    return max(1, round(-mean * math.log1p(-u)))


def filler(start: int, count: int) -> str:
    """Text of generated tokens ``start`` .. ``start+count-1``."""
    n = len(FILLER_WORDS)
    return "".join(FILLER_WORDS[i % n] for i in range(start, start + count))
