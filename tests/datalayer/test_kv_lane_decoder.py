"""The native lane's msgpack decoder reads bytes from the network: whatever it is given —
random bytes, valid batches cut short or with bytes flipped — it returns without reading past
the payload, and whenever it takes a batch it takes what the Python path's decoder reads from
the same bytes, event for event (the operation, its hashes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.datalayer.kvevents.lane import NATIVE
from sluice.datalayer.kvevents.wire import (
    MEDIUM_GPU,
    BatchDecoder,
    BlockRemoved,
    BlockStored,
    DecodeError,
)
from sluice.sim.kv_events import BlockRemoved as SimRemoved
from sluice.sim.kv_events import BlockStored as SimStored
from sluice.sim.kv_events import KVEventBatch, encode_batch

pytestmark = pytest.mark.skipif(NATIVE is None, reason="the native lane is not built")
GROUP, BLOCK_SIZE = 0, 16


def python_ops(payload: bytes) -> list[tuple[str, list[int]]] | None:
    """What the Python path does with each event of the batch, for an endpoint whose group
    (0) is learned and first block verified; None where the lane must not take the batch."""
    try:
        batch = BatchDecoder().decode(payload)
    except DecodeError:
        return None
    out: list[tuple[str, list[int]]] = []
    for event in batch.events:
        if not isinstance(event, BlockStored | BlockRemoved):
            return None
        hashes = [h & ((1 << 64) - 1) for h in event.block_hashes]
        if event.medium is not None and event.medium != MEDIUM_GPU:
            out.append(("other tier", hashes))
        elif event.group_idx is not None and event.group_idx != GROUP:
            out.append(("other group", hashes))
        elif isinstance(event, BlockStored):
            if event.block_size != BLOCK_SIZE:
                return None
            out.append(("store", hashes))
        else:
            out.append(("remove", hashes))
    return out


def lane_ops(payload: bytes) -> list[tuple[str, list[int]]] | None:
    assert NATIVE is not None
    ops = NATIVE.decodable(payload, GROUP, BLOCK_SIZE, True)
    return None if ops is None else [(name, list(hashes)) for name, hashes in ops]


hashes = st.lists(st.integers(0, (1 << 64) - 1), max_size=5)
event = st.one_of(
    st.builds(
        SimStored,
        hashes,
        st.one_of(st.none(), st.integers(0, 1 << 40)),
        st.lists(st.integers(0, 200_000), max_size=40),
        st.sampled_from([16, 16, 32]),
        st.one_of(st.none(), st.integers(0, 5)),
        st.sampled_from([None, "GPU", "CPU"]),
        st.one_of(st.none(), st.text(max_size=5)),
        st.none(),
        st.sampled_from([None, 0, 1]),
        st.sampled_from([None, "full_attention", "sliding_window"]),
    ),
    st.builds(
        SimRemoved, hashes, st.sampled_from([None, "GPU", "CPU"]), st.sampled_from([None, 0, 1])
    ),
)
payloads = st.builds(
    lambda events, layout: encode_batch(KVEventBatch(1.5, events, 0), layout=layout),
    st.lists(event, max_size=6),
    st.sampled_from(["map", "array"]),
)


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_a_valid_batch_is_taken_as_the_python_path_reads_it(payload: bytes) -> None:
    expected = python_ops(payload)
    assert lane_ops(payload) == expected  # (both None: the batch goes the Python way)


@settings(max_examples=600, deadline=None)
@given(payloads, st.data())
def test_a_damaged_batch_is_refused_or_read_as_the_python_path_reads_it(
    payload: bytes, data: st.DataObject
) -> None:
    damaged = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        if not damaged:
            break
        at = data.draw(st.integers(0, len(damaged) - 1))
        if data.draw(st.booleans()):
            damaged[at] = data.draw(st.integers(0, 255))
        else:
            del damaged[at:]
    got = lane_ops(bytes(damaged))
    if got is not None:
        assert got == python_ops(bytes(damaged))


def test_a_string_that_is_not_utf8_is_refused_as_msgspec_refuses_it() -> None:
    """(Found by the test above: a LoRA name of bytes 00 80 was applied by the lane while the
    Python path counted the batch malformed.)"""
    good = encode_batch(
        KVEventBatch(1.5, [SimStored([1, 2], 7, [0] * 16, 16, None, "GPU", "ab")], 0),
        layout="array",
    )
    bad = good.replace(b"\xa2ab", b"\xa2\x00\x80")
    assert lane_ops(good) == python_ops(good) == [("store", [1, 2])]
    assert python_ops(bad) is None and lane_ops(bad) is None


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_it(payload: bytes) -> None:
    got = lane_ops(payload)
    if got is not None:
        assert got == python_ops(payload)
