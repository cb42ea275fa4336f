"""What the engine is asked to do, already tokenized: the unit both the HTTP front and the
virtual-time runner submit. Prefix-cache hashes are the engine's business (its hash seed), so a
request carries token ids and the keys that salt them, not hashes."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sluice.sim.tokenizer import natural_length, render_chat, token_ids


@dataclass(frozen=True, slots=True)
class SimRequest:
    request_id: str
    prompt_tokens: int
    max_tokens: int
    # Where generation stops with finish_reason "stop"; None (ignore_eos) runs to max_tokens.
    stop_after: int | None = None
    priority: int = 0
    lora: str | None = None
    # The prompt's token ids (empty: a request that never hits or fills the prefix cache).
    token_ids: Sequence[int] = field(default=(), repr=False)
    cache_salt: str | None = None

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1 or self.max_tokens < 1:
            raise ValueError("prompt_tokens and max_tokens must be >= 1")
        if self.token_ids and len(self.token_ids) != self.prompt_tokens:
            raise ValueError("token_ids must hold prompt_tokens ids")

    @property
    def output_tokens(self) -> int:
        """How many tokens this request will generate."""
        return self.max_tokens if self.stop_after is None else min(self.max_tokens, self.stop_after)

    @property
    def finish_reason(self) -> str:
        return (
            "stop"
            if self.stop_after is not None and self.stop_after < self.max_tokens
            else "length"
        )

    @classmethod
    def from_text(
        cls,
        request_id: str,
        text: str,
        *,
        max_tokens: int,
        ignore_eos: bool = True,
        min_tokens: int = 0,
        seed: int = 0,
        mean_output_tokens: float = 128.0,
        priority: int = 0,
        lora: str | None = None,
        cache_salt: str | None = None,
        ids: Sequence[int] | None = None,
    ) -> SimRequest:
        """Tokenize ``text`` (a completion prompt or a rendered chat) into a request; ``ids``
        are the prompt's token ids when the client sent ids (``text`` then only seeds the
        natural output length)."""
        stop_after = None
        if not ignore_eos:
            stop_after = max(min_tokens, natural_length(text, seed=seed, mean=mean_output_tokens))
        ids = token_ids(text) if not ids else array("I", ids)
        return cls(
            request_id=request_id,
            prompt_tokens=len(ids),
            max_tokens=max_tokens,
            stop_after=stop_after,
            priority=priority,
            lora=lora,
            token_ids=ids,
            cache_salt=cache_salt,
        )

    @classmethod
    def from_chat(
        cls, request_id: str, messages: list[dict[str, object]], **options: Any
    ) -> SimRequest:
        """Tokenize chat ``messages`` as /v1/chat/completions does; options as ``from_text``."""
        return cls.from_text(request_id, render_chat(messages), **options)
