"""The download-free tokenizer's documented rule."""

from __future__ import annotations

from sluice.sim.tokenizer import block_hashes, count_tokens, filler, render_chat


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


def test_block_hashes_chain_over_the_prefix() -> None:
    a = block_hashes("x" * 64 + "y" * 64, 16)
    b = block_hashes("x" * 64 + "z" * 64, 16)
    c = block_hashes("w" * 64 + "y" * 64, 16)
    assert a[0] == b[0] and a[1] != b[1]
    assert a[1] != c[1]  # same block text, different prefix
    assert block_hashes("x" * 100, 16) == block_hashes(
        "x" * 64, 16
    )  # partial blocks are not hashed


def test_filler_is_deterministic_and_retokenizes_to_its_length() -> None:
    assert filler(0, 3) + filler(3, 2) == filler(0, 5)
    assert count_tokens(filler(0, 37)) == 37
