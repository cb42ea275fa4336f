"""A deterministic tokenizer that needs no download, and the filler text the engine "generates".

Rule: token i of a text is its characters [4i, 4i+4) (Python str characters, so ~4 chars per
token like BPE on English). An empty prompt still costs one token (vLLM adds a BOS token).
Chat messages are rendered with a small template before counting:
``<|role|>\\n{content}<|end|>\\n`` per message, then ``<|assistant|>\\n`` as the generation prompt.

Token ids: an ASCII token's id is its four bytes read as a little-endian uint32 (so ids below
2^31, every byte < 0x80, and the text is recoverable); a token holding any non-ASCII character
gets ``0x80000000 | xxh32(UTF-8)``, which no ASCII token can collide with. A text's partial last
token is padded with NUL bytes. ``block_hash.BlockHasher`` hashes these ids exactly as vLLM does.
The rule itself lives in ``sluice.util.sim_tokens`` (the EPP's precise index uses it too: it
imports nothing of the EPP, so the sim still stands alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import xxhash

# The token-id rule and the template live below both the sim and the EPP, which must agree.
from sluice.util.sim_tokens import CHARS_PER_TOKEN as CHARS_PER_TOKEN
from sluice.util.sim_tokens import GENERATION_PROMPT as GENERATION_PROMPT
from sluice.util.sim_tokens import chat_turn
from sluice.util.sim_tokens import count_tokens as count_tokens
from sluice.util.sim_tokens import token_ids as token_ids

# Each filler word is exactly one token (4 characters), so generated text re-tokenizes to the
# same count it was generated with.
FILLER_WORDS = (" the", " sim", " lab", " one", " big", " red", " fox", " ran", " far", " and")


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
        chat_turn(str(m.get("role", "user")), message_text(m.get("content"))) for m in messages
    ]
    return "".join(rendered) + GENERATION_PROMPT


def natural_length(text: str, *, seed: int, mean: float) -> int:
    """Where the model would emit EOS: exponential with ``mean``, fixed by the prompt."""
    u = xxhash.xxh64_intdigest(text.encode(), seed=seed & 0xFFFFFFFFFFFFFFFF) / 2.0**64
    return max(1, round(-mean * math.log1p(-u)))


def filler(start: int, count: int) -> str:
    """Text of generated tokens ``start`` .. ``start+count-1``."""
    n = len(FILLER_WORDS)
    return "".join(FILLER_WORDS[i % n] for i in range(start, start + count))
