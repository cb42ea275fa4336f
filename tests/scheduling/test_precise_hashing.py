"""The EPP computes what the engine computes: the same token ids for a request, and — with the
engine's seed and algorithm — vLLM's own block hashes. The simulator stands for vLLM here."""

from __future__ import annotations

import pytest

from sluice.requests.model import ChatMessage
from sluice.scheduling.precise_hashing import HASH_ALGORITHMS, BlockKeys
from sluice.scheduling.precise_index import KEY_MASK
from sluice.scheduling.precise_tokens import text_token_ids, token_ids
from sluice.sim.block_hash import BlockHasher
from sluice.sim.tokenizer import render_chat
from sluice.sim.tokenizer import token_ids as sim_token_ids

from .helpers import request

TEXT = "You are a careful assistant. " * 30


def test_a_prompt_tokenizes_to_the_engines_token_ids() -> None:
    """One rule in one home (sluice.util.sim_tokens), not two copies that could drift."""
    assert text_token_ids is sim_token_ids
    for text in (TEXT, "", "abc", "na\u00efve caf\u00e9 " * 9):
        assert list(token_ids(request(prompt=text))) == list(sim_token_ids(text))


def test_a_chat_renders_with_the_engines_template() -> None:
    messages = (ChatMessage("system", "be brief"), ChatMessage("user", "hello there"))
    rendered = render_chat([{"role": m.role, "content": m.content} for m in messages])
    assert list(token_ids(request(messages=messages))) == list(sim_token_ids(rendered))


def test_token_id_prompts_are_taken_as_given() -> None:
    req = request()
    req.prompt_token_ids = (5, 6, 7)
    assert list(token_ids(req)) == [5, 6, 7]


@pytest.mark.parametrize("algorithm", HASH_ALGORITHMS)
def test_with_the_engines_seed_the_keys_are_vllms_block_hashes(algorithm: str) -> None:
    """(To their low 60 bits: the index keeps keys compact.)"""
    ids = sim_token_ids(TEXT)
    engine = BlockHasher(16, algorithm, "42")
    keys = BlockKeys(16, hash_seed="42", algorithm=algorithm)
    for lora, salt in ((None, None), ("sql-adapter", None), (None, "tenant-a"), ("x", "y")):
        expected = [h & KEY_MASK for h in engine.hashes(ids, lora=lora, cache_salt=salt)]
        got = keys.request_keys(ids, lora=lora, cache_salt=salt, max_blocks=10_000)
        assert got == expected and len(got) == len(ids) // 16


def test_another_seed_gives_other_hashes_and_sluices_own_keys_need_none() -> None:
    ids = sim_token_ids(TEXT)
    assert BlockHasher(16, "sha256", "1").hashes(ids) != BlockHasher(16, "sha256", "2").hashes(ids)
    own = BlockKeys(16)
    assert own.space == "own"
    keys = own.request_keys(ids, max_blocks=10_000)
    assert keys == own.request_keys(ids, max_blocks=10_000)
    salted = own.request_keys(ids, cache_salt="s", max_blocks=10_000)
    assert salted[0] != keys[0] and len(keys) == len(ids) // 16
    assert own.request_keys(ids, max_blocks=3) == keys[:3]


def test_own_keys_of_a_stored_run_continue_its_parents_chain() -> None:
    ids = list(sim_token_ids(TEXT))
    own = BlockKeys(16)
    whole = own.request_keys(ids, max_blocks=10_000)
    tail = own.own_chain(ids[32:], 3, whole[1], None, None, first_index=2)
    assert tail == whole[2:5]
