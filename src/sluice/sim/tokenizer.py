"""A deterministic tokenizer that needs no download, and the filler text the engine "generates".

Rule: token i of a text is its characters [4i, 4i+4) (Python str characters, so ~4 chars per
token like BPE on English). An empty prompt still costs one token (vLLM adds a BOS token).
Chat messages are rendered with a small template before counting:
``<|role|>\\n{content}<|end|>\\n`` per message, then ``<|assistant|>\\n`` as the generation prompt.

Token ids: an ASCII token's id is its four bytes read as a little-endian uint32 (so ids below
2^31, every byte < 0x80, and the text is recoverable); a token holding any non-ASCII character
gets ``0x80000000 | xxh32(UTF-8)``, which no ASCII token can collide with. A text's partial last
token is padded with NUL bytes. ``block_hash.BlockHasher`` hashes these ids exactly as vLLM does.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
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


def token_ids(text: str) -> array[int]:
    """The ids of ``text``'s tokens (``count_tokens(text)`` of them; see the module docstring)."""
    if not text:
        return array("I", [0])  # the BOS token an empty prompt still costs
    n = count_tokens(text)
    if text.isascii():  # the bytes are the ids: no int objects on the way
        ids = array("I")
        ids.frombytes(text.encode().ljust(n * CHARS_PER_TOKEN, b"\0"))
        if sys.byteorder != "little":
            ids.byteswap()
        return ids
    ids = array("I")
    for i in range(n):
        chunk = text[i * CHARS_PER_TOKEN : (i + 1) * CHARS_PER_TOKEN]
        if chunk.isascii():
            ids.append(struct.unpack("<I", chunk.encode().ljust(CHARS_PER_TOKEN, b"\0"))[0])
        else:
            ids.append(0x80000000 | xxhash.xxh32_intdigest(chunk.encode()))
    return ids


def natural_length(text: str, *, seed: int, mean: float) -> int:
    """Where the model would emit EOS: exponential with ``mean``, fixed by the prompt."""
    u = xxhash.xxh64_intdigest(text.encode(), seed=seed & 0xFFFFFFFFFFFFFFFF) / 2.0**64
    return max(1, round(-mean * math.log1p(-u)))


def filler(start: int, count: int) -> str:
    """Text of generated tokens ``start`` .. ``start+count-1``."""
    n = len(FILLER_WORDS)
    return "".join(FILLER_WORDS[i % n] for i in range(start, start + count))
