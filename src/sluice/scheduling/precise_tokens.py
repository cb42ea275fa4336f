"""The EPP's tokenizer for the precise prefix index: a request's token ids as the engine sees them.

Precise routing needs the engine's token ids (upstream's ``token-producer`` asks a vLLM render
service for them). Sluice ships the renderer of the engines it can run here, the simulated ones
(``sluice sim``), whose rule has one home both import, ``sluice.util.sim_tokens``: chat messages
rendered with the sim's template, then four characters a token. Token-id prompts
(``prompt: [1, 2, 3]``) are taken as given, as vLLM does. A prompt the two cannot agree on (chat
content given as a list of parts with images: Sluice joins text parts with newlines and the sim
without) tokenizes differently, which costs cache hits, never correctness.
"""

from __future__ import annotations

from array import array

from sluice.requests.model import InferenceRequest
from sluice.util.sim_tokens import GENERATION_PROMPT, chat_turn
from sluice.util.sim_tokens import token_ids as text_token_ids

TOKENIZERS = ("sim",)


def render(request: InferenceRequest) -> str:
    if request.messages:
        turns = "".join(chat_turn(m.role or "user", m.content) for m in request.messages)
        return turns + GENERATION_PROMPT
    return request.prompt


def token_ids(request: InferenceRequest) -> array[int]:
    if request.prompt_token_ids:
        return array("I", request.prompt_token_ids)
    return text_token_ids(render(request))
