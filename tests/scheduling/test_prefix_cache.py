"""The prefix index: chat hashing by role and content, seeding, contiguous matching, and
CLOCK eviction per server (an LRU approximation)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sluice.config import load_config
from sluice.datalayer.endpoint import EngineMetrics
from sluice.requests.model import ChatMessage
from sluice.scheduling.framework import CycleState
from sluice.scheduling.prefix_hashing import block_hashes
from sluice.scheduling.prefix_index import PrefixIndex
from sluice.scheduling.prefix_scorer import PrefixCacheScorer
from sluice.scheduling.scheduler import Scheduler

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


def test_blocks_used_once_leave_in_arrival_order_and_reused_ones_get_a_second_chance() -> None:
    index = PrefixIndex()
    index.add("a", [1, 2, 3], capacity=3)
    index.add("a", [1, 4], capacity=3)  # 1 re-used: the clock passes it over; 2 is the victim
    assert index.match([2]) == {}
    assert index.match([1]) == {index.slot("a"): 1}
    index.add("a", [5], capacity=3)  # 1's second chance was spent; 3 is the oldest one-off
    assert sorted(index.held("a")) == [1, 4, 5]
    index.remove_server("a")
    assert len(index) == 0


def test_a_smaller_reported_cache_shrinks_what_the_index_assumes() -> None:
    index = PrefixIndex()
    index.add("a", list(range(1, 9)), capacity=8)
    index.add("a", [9], capacity=4)
    assert len(index.held("a")) == 4 and 9 in index.held("a")
    assert len(index) == 4


_SERVERS = ("a", "b", "c")


# Re-used blocks being added again, with the clock out of second chances: they must stay.
@example([("a", [1, 2, 4, 6], 4), ("a", [1, 2, 3, 5], 5)], [[1]], 1)
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(_SERVERS),
                st.lists(st.integers(1, 30), max_size=10),
                st.integers(1, 12),
            ),
            st.sampled_from(_SERVERS),  # the server leaves the pool
        ),
        max_size=60,
    ),
    st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=8), min_size=1, max_size=5),
    st.sampled_from([1, 2, 32]),
)
def test_the_index_stays_exactly_the_union_of_per_server_caches(
    operations: list[tuple[str, list[int], int] | str],
    probes: list[list[int]],
    max_second_chances: int,
) -> None:
    index = PrefixIndex(max_second_chances)
    ever_added: dict[str, set[int]] = {s: set() for s in _SERVERS}
    capacity_of: dict[str, int] = {}
    for op in operations:
        if isinstance(op, str):
            index.remove_server(op)
            ever_added[op].clear()
            capacity_of.pop(op, None)
            continue
        server, hashes, capacity = op
        index.add(server, hashes, capacity)
        ever_added[server].update(hashes)
        capacity_of[server] = capacity
        held = index.held(server)
        assert len(held) == len(set(held)) <= capacity
        assert set(held) <= ever_added[server]
        if len(hashes) < capacity:  # what was just dispatched is cached, as with an LRU
            assert set(hashes) <= set(held)
    held_by = {s: set(index.held(s)) for s in _SERVERS}
    assert len(index) == len(set().union(*held_by.values()))
    for probe in probes:
        expected = {}
        for server, held in held_by.items():
            run = next((i for i, h in enumerate(probe) if h not in held), len(probe))
            if run:
                expected[index.slot(server)] = run
        assert index.match(probe) == expected


def test_score_is_the_matched_fraction_and_autotune_uses_engine_block_size() -> None:
    scorer = PrefixCacheScorer("prefix")
    registry = pool(EngineMetrics(cache_block_size=16, cache_num_blocks=1000), EngineMetrics())
    states = registry.snapshot()
    warm = request("z" * 64 * 4)
    scorer.score(CycleState(warm, NOW), states)
    scorer.on_dispatch(None, warm, states[0].endpoint)
    probe = request("z" * 64 * 4 + "w" * 64 * 4)
    assert scorer.score(CycleState(probe, NOW), states) == [0.5, 0.0]


@pytest.mark.parametrize(("weight", "scale_tokens"), [(0.5, 128), (0.5, 32), (1.0, 256)])
def test_match_length_weight_blends_in_the_matched_length_as_upstream(
    weight: float, scale_tokens: int
) -> None:
    """llm-d-router's `matchLengthWeight`: w * min(1, matched tokens / scale)^2 + (1-w) * ratio."""
    scorer = PrefixCacheScorer(
        "prefix", match_length_weight=weight, match_length_scale_tokens=scale_tokens
    )
    engine_block_tokens = 16
    registry = pool(EngineMetrics(cache_block_size=engine_block_tokens), EngineMetrics())
    states = registry.snapshot()
    block = engine_block_tokens * 4  # characters (4 a token)
    warm = request("z" * block * 4)
    scorer.score(CycleState(warm, NOW), states)
    scorer.on_dispatch(None, warm, states[0].endpoint)
    probe = request("z" * block * 4 + "w" * block * 4)
    length = min(1.0, 4 * engine_block_tokens / scale_tokens) ** 2
    expected = weight * length + (1 - weight) * 4 / 8
    assert scorer.score(CycleState(probe, NOW), states) == [pytest.approx(expected), 0.0]


def test_whether_a_prefix_in_use_counts_as_cached_follows_the_engine_unless_configured() -> None:
    """llama.cpp shares a slot's cache only once the slot is free: with `--engine llamacpp`
    the prefix scorer tracks prefixes in use until their request ends; for vLLM-like engines
    (and whenever the config says) it keeps upstream's behaviour."""

    def mode(engine: str, parameters: str = "") -> str:
        text = f"plugins:\n- type: prefix-cache-scorer\n{parameters}"
        scheduler = Scheduler.from_config(load_config(text), engine=engine)
        [(scorer, _)] = scheduler.profiles["default"].scorers
        assert isinstance(scorer, PrefixCacheScorer)
        return scorer.computing_mode

    assert mode("llamacpp") == "completion"
    assert mode("vllm") == mode("sglang") == "none"
    assert mode("llamacpp", "  parameters: {computingPrefixes: none}\n") == "none"
    assert mode("vllm", "  parameters: {computingPrefixes: prefill}\n") == "prefill"
