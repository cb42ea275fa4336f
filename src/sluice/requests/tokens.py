"""Prompt-size estimation without a tokenizer.

The rule (documented here because flow control bills tenants by it):

* text: ``ceil(characters / 4)`` — the usual ~4 characters per token of English BPE vocabularies
  (characters, not UTF-8 bytes, so a CJK prompt is not billed three times);
* token ids (``prompt: [1, 2, 3]``): exactly one token per id;
* chat: every message costs ``MESSAGE_OVERHEAD_TOKENS`` on top of its text (role markers and
  separators of the chat template), plus ``REPLY_PRIMING_TOKENS`` once for the assistant header;
* a media part (image, audio, video, file) costs a flat ``MEDIA_PART_TOKENS``: its true cost
  depends on the model's encoder, which we cannot know.

It is an estimate for scheduling and fairness; the model server's reported usage is the truth
and replaces it when the response completes. Every function is O(1) or O(number of parts) —
``len`` of a ``str`` is constant time, so a 16 KiB prompt costs the same as a 16 B one.
"""

from __future__ import annotations

from collections.abc import Iterable

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_PRIMING_TOKENS = 3
MEDIA_PART_TOKENS = 256


def text_tokens(text: str) -> int:
    """Tokens in `text`: ceil(len / 4); an empty string is 0 tokens."""
    return chars_to_tokens(len(text))


def chars_to_tokens(chars: int) -> int:
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def chat_tokens(
    message_text_chars: Iterable[int], *, media_parts: int = 0, extra_chars: int = 0
) -> int:
    """Tokens of a chat prompt given the text length of each message.

    `extra_chars` is prompt text outside the messages that the chat template still renders
    (tool schemas, Responses-API instructions).
    """
    total = REPLY_PRIMING_TOKENS + media_parts * MEDIA_PART_TOKENS + chars_to_tokens(extra_chars)
    for chars in message_text_chars:
        total += MESSAGE_OVERHEAD_TOKENS + chars_to_tokens(chars)
    return total
