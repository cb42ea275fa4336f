"""The own key space's engine-hash map (open addressing over arrays) against a dict: any
sequence of adds and removals — colliding hashes, runs that wrap around the table, growth —
answers every lookup as the dict does and lists the same own keys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.scheduling.precise_translate import EngineKeyMap

# Hashes that share a home cell in the smallest table (equal modulo its 64 cells) — some at its last
# cells, so that their run wraps around to the first —, hashes that differ only above the 60
# bits kept (the same block to the map), and plenty of others for growth.
COLLIDING = [(k << 40) | low for k in range(10) for low in (5, 62, 126)]
HASHES = st.one_of(
    st.sampled_from([*COLLIDING, (1 << 63) | 77, 77, 63, 64, 0]),
    st.integers(0, (1 << 64) - 1),
)
OWN = st.lists(st.integers(1, (1 << 60) - 1), min_size=1, max_size=3)
op = st.one_of(
    st.tuples(st.just("add"), HASHES, OWN),
    st.tuples(st.just("pop"), HASHES, st.just([])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=300))
def test_the_map_answers_as_a_dict_would(ops) -> None:
    mapped = EngineKeyMap()
    model: dict[int, tuple[int, ...]] = {}
    for kind, engine_hash, own in ops:
        key = engine_hash & ((1 << 60) - 1)
        if kind == "add":
            # Own keys are chain hashes: a last key names one engine block only.
            if any(group[-1] == own[-1] for group in model.values()):
                continue
            assert mapped.add(engine_hash, own) == (key not in model)
            model.setdefault(key, tuple(own))
        else:
            assert mapped.pop(engine_hash) == model.pop(key, None)
        assert len(mapped) == len(model)
        assert (engine_hash in mapped) == (key in model)
        assert mapped.last(engine_hash) == (model[key][-1] if key in model else None)
    for key, group in model.items():
        assert mapped.last(key) == group[-1]
    assert sorted(mapped.own_keys()) == sorted(k for group in model.values() for k in group)


def test_a_full_churn_keeps_the_table_its_size() -> None:
    """Removals shift cells back instead of leaving tombstones: storing and evicting blocks
    for much longer than the table holds does not grow it."""
    mapped = EngineKeyMap()
    for h in range(1, 3001):
        mapped.add(h * 0x9E3779B97F4A7C15, [h])
    size = len(mapped._keys)
    for h in range(3001, 60001):
        mapped.add(h * 0x9E3779B97F4A7C15, [h])
        assert mapped.pop((h - 3000) * 0x9E3779B97F4A7C15) == (h - 3000,)
    assert len(mapped) == 3000 and len(mapped._keys) == size
    assert sorted(mapped.own_keys()) == list(range(57001, 60001))


def test_a_run_that_wraps_around_the_table_survives_removals_at_its_start() -> None:
    mapped = EngineKeyMap()
    cells = len(mapped._keys)
    last_home = [(k << 40) | (cells - 2) for k in range(4)]  # all at home: the last cell
    for n, h in enumerate(last_home):
        mapped.add(h, [n + 1])  # cells: last, 0, 1, 2
    assert mapped.pop(last_home[0]) == (1,)
    assert [mapped.last(h) for h in last_home] == [None, 2, 3, 4]
    assert mapped.pop(last_home[2]) == (3,)
    assert [mapped.last(h) for h in last_home] == [None, 2, None, 4]
