"""The precise index (engine key space) against a model of one set of keys per endpoint: any
sequence of stores, removals (of held, shared and unknown keys), clears and departures leaves
each endpoint holding exactly the model's keys, its count their number, and `match` each
endpoint's longest contiguous held prefix."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.datalayer.kvevents.wire import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    raw_token_ids,
)
from sluice.scheduling.precise_hashing import BlockKeys
from sluice.scheduling.precise_index import KEY_MASK, PreciseIndex

ENDPOINTS = ("a", "b", "c")
# A few keys, so endpoints share them; two differ only above the 60 bits the index keeps.
HASHES = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, (1 << 63) | 9, (1 << 62) | 9])
TOKENS = raw_token_ids([0] * 16)

event = st.one_of(
    st.builds(lambda hs: BlockStored(hs, 1, TOKENS, 16), st.lists(HASHES, max_size=6)),
    st.builds(BlockRemoved, st.lists(HASHES, max_size=6)),
    st.just(AllBlocksCleared()),
)
step = st.tuples(
    st.sampled_from(ENDPOINTS),
    st.one_of(st.lists(event, max_size=5), st.sampled_from(["clear", "forget"])),
)


def model_apply(held: set[int], events: list[Event]) -> None:
    for e in events:
        if isinstance(e, BlockStored):
            held.update(h & KEY_MASK for h in e.block_hashes)
        elif isinstance(e, BlockRemoved):
            held.difference_update(h & KEY_MASK for h in e.block_hashes)
        else:
            held.clear()


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40), st.lists(HASHES, min_size=1, max_size=8))
def test_the_index_holds_what_a_set_per_endpoint_would(steps, prompt) -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed="0"))
    model: dict[str, set[int]] = {name: set() for name in ENDPOINTS}
    for name, action in steps:
        index._verified.add(name)  # synthetic hashes: no first block to check the seed on
        if action == "clear":
            index.clear(name)
            model[name].clear()
        elif action == "forget":
            index.forget(name)
            model[name].clear()
        else:
            index.apply(name, action)
            model_apply(model[name], action)
        for other in ENDPOINTS:
            assert index.held(other) == model[other]
            assert index.count(other) == len(model[other])
    keys = [h & KEY_MASK for h in prompt]
    expected = {}
    for name in ENDPOINTS:
        n = 0
        while n < len(keys) and keys[n] in model[name]:
            n += 1
        slot = index.slot(name)
        if n and slot is not None:
            expected[slot] = n
    got = {slot: n for slot, n in index.match(keys).items() if index.names[slot] is not None}
    assert got == expected
