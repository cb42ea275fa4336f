"""The EPP's tokenizer for the precise prefix index: a request's token ids as the engine sees them.

Precise routing needs the engine's token ids (upstream's ``token-producer`` asks a vLLM render
service for them). Sluice ships the renderer of the engines it can run here, the simulated ones
(``sluice sim``): chat messages rendered with the sim's template (``<|role|>\\n{content}<|end|>\\n``
per message, then ``<|assistant|>\\n``), then four characters a token, an ASCII token's id being
its four bytes little-endian and any other ``0x80000000 | xxh32(UTF-8)``. Token-id prompts
(``prompt: [1, 2, 3]``) are taken as given, as vLLM does. A prompt the two cannot agree on (chat
content given as a list of parts with images: Sluice joins text parts with newlines and the sim
without) tokenizes differently, which costs cache hits, never correctness.
"""

from __future__ import annotations

import struct
import sys
from array import array

import xxhash

from sluice.requests.model import InferenceRequest

CHARS_PER_TOKEN = 4
TOKENIZERS = ("sim",)


def render(request: InferenceRequest) -> str:
    if request.messages:
        turns = "".join(f"<|{m.role or 'user'}|>\n{m.content}<|end|>\n" for m in request.messages)
        return turns + "<|assistant|>\n"
    return request.prompt


def token_ids(request: InferenceRequest) -> array[int]:
    if request.prompt_token_ids:
        return array("I", request.prompt_token_ids)
    return text_token_ids(render(request))


def text_token_ids(text: str) -> array[int]:
    if not text:
        return array("I", [0])
    n = -(-len(text) // CHARS_PER_TOKEN)
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
