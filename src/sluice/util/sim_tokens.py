"""The simulated engine's tokenizer rule, in one home: the sim tokenizes with it and the EPP's
precise prefix index reproduces the engine's token ids with it (``scheduling.precise_tokens``).

Token i of a text is its characters [4i, 4i+4) (Python str characters, so ~4 chars per token
like BPE on English). An ASCII token's id is its four bytes read as a little-endian uint32 (ids
below 2^31, the text recoverable); a token holding any non-ASCII character gets ``0x80000000 |
xxh32(UTF-8)``, which no ASCII token can collide with. A partial last token is padded with NUL
bytes; an empty text is the one BOS token id 0. Chat messages render as ``<|role|>\\n{content}
<|end|>\\n`` each, then ``<|assistant|>\\n``.
"""

from __future__ import annotations

import struct
import sys
from array import array

import xxhash

CHARS_PER_TOKEN = 4
GENERATION_PROMPT = "<|assistant|>\n"


def chat_turn(role: str, content: str) -> str:
    """One message in the chat template."""
    return f"<|{role}|>\n{content}<|end|>\n"


def count_tokens(text: str) -> int:
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def token_ids(text: str) -> array[int]:
    """The ids of ``text``'s tokens (``count_tokens(text)`` of them)."""
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
