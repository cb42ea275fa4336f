"""The download-free tokenizer's documented rule."""

from __future__ import annotations

from sluice.sim.tokenizer import count_tokens, filler, render_chat, token_ids


def test_four_characters_make_a_token() -> None:
    assert [count_tokens(t) for t in ("", "abc", "abcd", "abcde", "x" * 400)] == [1, 1, 1, 2, 100]


def test_chat_is_rendered_with_roles_and_a_small_template() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ]
    rendered = render_chat(messages)
    assert rendered == "<|system|>\nbe brief<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert count_tokens(rendered) - count_tokens("be briefhi") <= 12


def test_an_ascii_token_id_is_its_four_bytes_little_endian() -> None:
    assert list(token_ids("abcdefg")) == [
        int.from_bytes(b"abcd", "little"),
        int.from_bytes(b"efg\0", "little"),
    ]
    assert list(token_ids("")) == [0]  # an empty prompt still costs its BOS token


def test_a_non_ascii_token_gets_an_id_no_ascii_token_can_have() -> None:
    ids = token_ids("caf\u00e9 au lait")
    assert len(ids) == count_tokens("caf\u00e9 au lait")
    assert ids[0] & 0x80000000 and not ids[1] & 0x80808080
    assert token_ids("caf\u00e9") == token_ids("caf\u00e9")


def test_filler_is_deterministic_and_retokenizes_to_its_length() -> None:
    assert filler(0, 3) + filler(3, 2) == filler(0, 5)
    assert count_tokens(filler(0, 37)) == 37
