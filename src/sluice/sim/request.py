"""What the engine is asked to do, already tokenized: the unit both the HTTP front and the
virtual-time runner submit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sluice.sim.tokenizer import block_hashes, count_tokens, natural_length, render_chat


@dataclass(frozen=True, slots=True)
class SimRequest:
    request_id: str
    prompt_tokens: int
    max_tokens: int
    # Where generation stops with finish_reason "stop"; None (ignore_eos) runs to max_tokens.
    stop_after: int | None = None
    priority: int = 0
    lora: str | None = None
    block_hashes: tuple[int, ...] = field(default=(), repr=False)
    block_size: int = 16  # the block size the hashes were computed with (must match the engine)

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1 or self.max_tokens < 1:
            raise ValueError("prompt_tokens and max_tokens must be >= 1")

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
        block_size: int = 16,
        ignore_eos: bool = True,
        min_tokens: int = 0,
        seed: int = 0,
        mean_output_tokens: float = 128.0,
        priority: int = 0,
        lora: str | None = None,
        cache_salt: str | None = None,
    ) -> SimRequest:
        """Tokenize ``text`` (a completion prompt or a rendered chat) into a request."""
        stop_after = None
        if not ignore_eos:
            stop_after = max(min_tokens, natural_length(text, seed=seed, mean=mean_output_tokens))
        return cls(
            request_id=request_id,
            prompt_tokens=count_tokens(text),
            max_tokens=max_tokens,
            stop_after=stop_after,
            priority=priority,
            lora=lora,
            block_hashes=block_hashes(text, block_size, lora=lora, cache_salt=cache_salt),
            block_size=block_size,
        )

    @classmethod
    def from_chat(
        cls, request_id: str, messages: list[dict[str, object]], **options: Any
    ) -> SimRequest:
        """Tokenize chat ``messages`` as /v1/chat/completions does; options as ``from_text``."""
        return cls.from_text(request_id, render_chat(messages), **options)
