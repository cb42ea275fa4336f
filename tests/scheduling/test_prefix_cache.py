"""The prefix index: chat hashing by role and content, seeding, contiguous matching, LRU."""

from __future__ import annotations

from sluice.datalayer.endpoint import EngineMetrics
from sluice.requests.model import ChatMessage
from sluice.scheduling.framework import CycleState
from sluice.scheduling.prefix_hashing import block_hashes
from sluice.scheduling.prefix_index import PrefixIndex
from sluice.scheduling.prefix_scorer import PrefixCacheScorer

from .helpers import NOW, pool, request

SYSTEM = ChatMessage("system", "You are a careful assistant. " * 20)


def test_chat_turns_extend_the_previous_turns_hash_chain() -> None:
    first = request(messages=(SYSTEM, ChatMessage("user", "hello " * 30)))
    follow_up = request(
        messages=(
            *first.messages,
            ChatMessage("assistant", "hi! " * 30),
            ChatMessage("user", "more"),
        )
    )
    a, b = block_hashes(first, 64, 256), block_hashes(follow_up, 64, 256)
    assert len(a) > 0 and b[: len(a) - 1] == a[: len(a) - 1]


def test_role_matters_but_json_formatting_cannot() -> None:
    as_user = request(messages=(ChatMessage("user", SYSTEM.content),))
    assert (
        block_hashes(as_user, 64, 256)[0] != block_hashes(request(messages=(SYSTEM,)), 64, 256)[0]
    )


def test_model_adapter_and_cache_salt_seed_the_chain() -> None:
    prompt = "x" * 640
    base = block_hashes(request(prompt), 64, 256)
    assert block_hashes(request(prompt, model="sql-lora"), 64, 256)[0] != base[0]
    assert block_hashes(request(prompt, cache_salt="tenant-a"), 64, 256)[0] != base[0]
    assert block_hashes(request(prompt), 64, 256) == base


def test_prompts_shorter_than_a_block_have_no_hashes_and_limits_apply() -> None:
    assert block_hashes(request("short"), 64, 256) == []
    assert len(block_hashes(request("y" * 10_000), 64, 4)) == 4
    assert len(block_hashes(request("y" * 130), 64, 256)) == 2  # trailing partial ignored


def test_match_counts_only_contiguous_leading_blocks() -> None:
    index = PrefixIndex()
    index.add("a", [1, 2, 3, 4], capacity=100)
    index.add("b", [1, 2, 9, 4], capacity=100)
    slot_a, slot_b = index.slot("a"), index.slot("b")
    assert index.match([1, 2, 3, 4]) == {slot_a: 4, slot_b: 2}
    assert index.match([7, 2, 3]) == {}


def test_lru_evicts_oldest_blocks_per_server() -> None:
    index = PrefixIndex()
    index.add("a", [1, 2, 3], capacity=3)
    index.add("a", [1, 4], capacity=3)  # 1 refreshed; 2 is now the oldest
    assert index.match([2]) == {}
    assert index.match([1]) == {index.slot("a"): 1}
    index.remove_server("a")
    assert len(index) == 0


def test_score_is_the_matched_fraction_and_autotune_uses_engine_block_size() -> None:
    scorer = PrefixCacheScorer("prefix")
    registry = pool(EngineMetrics(cache_block_size=16, cache_num_blocks=1000), EngineMetrics())
    states = registry.snapshot()
    warm = request("z" * 64 * 4)
    scorer.score(CycleState(warm, NOW), states)
    scorer.on_dispatch(None, warm, states[0].endpoint)
    probe = request("z" * 64 * 4 + "w" * 64 * 4)
    assert scorer.score(CycleState(probe, NOW), states) == [0.5, 0.0]
