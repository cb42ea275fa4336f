"""The token-estimation rule: ~4 characters per token, plus chat overheads."""

from __future__ import annotations

import time

from sluice.requests.tokens import (
    MEDIA_PART_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    chat_tokens,
    text_tokens,
)


def test_text_is_about_four_characters_per_token_rounded_up():
    assert [text_tokens("x" * n) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]


def test_characters_not_bytes_are_counted():
    assert text_tokens("模型模型") == 1


def test_each_chat_message_adds_an_overhead_and_the_reply_is_primed_once():
    assert chat_tokens([8, 4]) == REPLY_PRIMING_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + 2 + 1


def test_media_parts_and_extra_text_are_charged():
    assert (
        chat_tokens([], media_parts=2, extra_chars=40)
        == REPLY_PRIMING_TOKENS + 2 * MEDIA_PART_TOKENS + 10
    )


def test_a_16_kib_prompt_is_estimated_in_well_under_a_millisecond():
    prompt = "lorem ipsum " * 1400
    start = time.perf_counter()
    for _ in range(1000):
        text_tokens(prompt)
    per_call = (time.perf_counter() - start) / 1000

    assert text_tokens(prompt) == len(prompt) // 4
    assert per_call < 1e-4
