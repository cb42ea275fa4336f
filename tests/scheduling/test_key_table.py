"""The precise index's native key table (`owners_map()`) behaves as the dict it replaces, for
every operation the index uses: any sequence of sets, deletions, pops, setdefaults and lookups
— over keys that collide in its buckets, across its growth, with keys no table can hold — leaves
it equal to a dict that went through the same, and every answer along the way is the dict's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.datalayer.kvevents.lane import owners_map

table_type = type(owners_map())
needs_table = pytest.mark.skipif(table_type is dict, reason="the extension is not built")

# Few keys (so deletions shift runs back) and many (so it grows); and keys it cannot hold.
KEYS = st.one_of(
    st.integers(0, 40),
    st.integers(0, 1 << 64).map(lambda k: k & ((1 << 64) - 1)),
    st.sampled_from([(1 << 64) - 1, 1 << 63, 0]),
)
# Keys no table holds. (Not floats: a dict finds 2 under 2.0, the table only under ints — the
# index's keys are ints, and so are its requests'.)
ALIEN = st.one_of(st.integers(-5, -1), st.just(1 << 64), st.just("7"), st.just(True))
VALUES = st.sampled_from([1, 2, 4, 6, 1 << 70, (1 << 70) | 1])

operation = st.one_of(
    st.tuples(st.just("set"), KEYS, VALUES),
    st.tuples(st.just("del"), KEYS, st.none()),
    st.tuples(st.just("pop"), st.one_of(KEYS, ALIEN), st.none()),
    st.tuples(st.just("pop default"), st.one_of(KEYS, ALIEN), VALUES),
    st.tuples(st.just("setdefault"), KEYS, VALUES),
    st.tuples(st.just("get"), st.one_of(KEYS, ALIEN), st.none()),
    st.tuples(st.just("in"), st.one_of(KEYS, ALIEN), st.none()),
    st.tuples(st.just("bulk"), st.integers(0, 3000), VALUES),  # past a few growths
)


def apply(mapping: Any, op: str, key: Any, value: Any) -> Any:
    try:
        if op == "set":
            mapping[key] = value
        elif op == "del":
            del mapping[key]
        elif op == "pop":
            return ("popped", mapping.pop(key))
        elif op == "pop default":
            return ("popped", mapping.pop(key, value))
        elif op == "setdefault":
            return ("kept", mapping.setdefault(key, value))
        elif op == "get":
            return ("got", mapping.get(key), mapping.get(key, -1))
        elif op == "in":
            return ("in", key in mapping)
        elif op == "bulk":
            for k in range(key):
                mapping[k * 7919 + 1000] = value
            for k in range(0, key, 3):
                del mapping[k * 7919 + 1000]
    except KeyError:
        return "KeyError"
    return None


@needs_table
@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_the_key_table_answers_as_a_dict_does(operations: list[tuple[str, Any, Any]]) -> None:
    table, reference = owners_map(), {}
    for op, key, value in operations:
        assert apply(table, op, key, value) == apply(reference, op, key, value), (op, key)
        assert len(table) == len(reference)
    assert sorted(table) == sorted(reference)
    assert sorted(table.items()) == sorted(reference.items())
    for key, value in reference.items():
        assert table[key] is value  # the very objects (the index tells slots apart by identity)


@needs_table
def test_a_key_it_cannot_hold_is_refused_when_stored_and_absent_when_looked_up() -> None:
    table = owners_map()
    with pytest.raises(OverflowError):
        table[-1] = 1
    with pytest.raises(OverflowError):
        table.setdefault(1 << 64, 1)
    assert table.get(-1, 0) == 0 and table.pop("x", 5) == 5 and -1 not in table
    with pytest.raises(KeyError):
        table[1 << 64]


@needs_table
def test_two_million_blocks_take_a_third_of_a_dicts_memory() -> None:
    """16 bytes a slot, at most 70 % full: 2 M keys in 4 M slots, 64 MiB; the dict and its 2 M
    int keys take ~3x that."""
    table = owners_map()
    held = 1 << 5
    for key in range(0, 2_000_000 * 977, 977):
        table[key] = held
    assert len(table) == 2_000_000
    assert table.__sizeof__() <= 64 * 2**20 + 4096
