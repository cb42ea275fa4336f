"""One endpoint's KV-event stream, without sockets: what it applies, when it asks for a replay,
and when its view can be trusted. Batches are the simulator's, encoded as vLLM encodes them."""

from __future__ import annotations

from collections.abc import Sequence

from sluice.datalayer.kvevents.stream import EndpointStream, StreamSettings
from sluice.datalayer.kvevents.wire import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    decode_batch,
)
from sluice.sim import kv_events as vllm


class SetSink:
    """The truth a stream should rebuild: the set of hashes each endpoint holds."""

    def __init__(self) -> None:
        self.held: dict[str, set[int]] = {}
        self.clears = 0

    def apply(self, endpoint: str, events: Sequence[Event]) -> bool:
        held = self.held.setdefault(endpoint, set())
        cleared = False
        for event in events:
            if isinstance(event, BlockStored):
                held.update(event.block_hashes)
            elif isinstance(event, BlockRemoved):
                held.difference_update(event.block_hashes)
            elif isinstance(event, AllBlocksCleared):
                held.clear()
                cleared = True
        return cleared

    def clear(self, endpoint: str) -> None:
        self.held[endpoint] = set()
        self.clears += 1

    def forget(self, endpoint: str) -> None:
        self.held.pop(endpoint, None)


def stored(*hashes: int) -> bytes:
    event = vllm.BlockStored(list(hashes), None, [1] * 16 * len(hashes), 16, None, "GPU", None)
    return vllm.encode_batch(vllm.KVEventBatch(ts=0.0, events=[event], data_parallel_rank=0))


def removed(*hashes: int) -> bytes:
    event = vllm.BlockRemoved(list(hashes), "GPU")
    return vllm.encode_batch(vllm.KVEventBatch(ts=0.0, events=[event], data_parallel_rank=0))


def connected(sink: SetSink, **settings: object) -> EndpointStream:
    stream = EndpointStream("e", sink, StreamSettings(**settings))  # type: ignore[arg-type]
    assert stream.on_connected(0.0) == 0  # a fresh subscriber replays from the first batch
    stream.on_replay_done(0.0)  # nothing published yet
    return stream


def test_the_sim_encodes_batches_exactly_as_vllm_lays_them_out() -> None:
    batch = decode_batch(stored(7, 8))
    (event,) = batch.events
    assert isinstance(event, BlockStored) and event.block_hashes == [7, 8]
    assert event.block_size == 16 and event.medium == "GPU" and batch.data_parallel_rank == 0


def test_the_sim_publishes_the_layout_a_current_vllm_sends() -> None:
    """A vLLM 0.26 message, as captured from a running engine (volcano-sh/kthena#1535): the
    batch positional, each event a map tagged by "type", the fields without a default sent as
    nil, ``extra_keys`` one entry per block, ``group_idx`` and ``kv_cache_spec_kind`` on
    BlockStored, ``group_idx`` on BlockRemoved. The sim's engine emits exactly that."""
    import msgspec

    from sluice.sim.kvcache import BlockPool

    pool = BlockPool(2, enable_kv_cache_events=True)
    (block,) = pool.allocate(1) or []
    pool.cache(block, 11, token_ids=list(range(16)))
    pool.free([block])
    pool.allocate(2)  # evicts it
    batch = vllm.KVEventBatch(ts=1.5, events=pool.take_events(), data_parallel_rank=0)
    ts, (stored_event, removed_event), rank = msgspec.msgpack.decode(vllm.encode_batch(batch))
    assert (ts, rank) == (1.5, 0)
    assert stored_event == {
        "type": "BlockStored",
        "block_hashes": [11],
        "parent_block_hash": None,
        "token_ids": list(range(16)),
        "block_size": 16,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
        "extra_keys": [None],
        "group_idx": 0,
        "kv_cache_spec_kind": "full_attention",
    }
    assert removed_event == {
        "type": "BlockRemoved",
        "block_hashes": [11],
        "medium": "GPU",
        "group_idx": 0,
    }
    old = msgspec.msgpack.decode(vllm.encode_batch(batch, layout="array"))
    assert old[1][1] == ["BlockRemoved", [11], "GPU", 0]  # vLLM <= 0.23: positional


def test_map_encoded_events_and_bytes_hashes_decode_to_the_same_ints() -> None:
    import msgspec

    digest = (5).to_bytes(32, "big")
    payload = msgspec.msgpack.encode(
        {"ts": 1.0, "events": [{"type": "BlockRemoved", "block_hashes": [digest, 9]}]}
    )
    (event,) = decode_batch(payload).events
    assert isinstance(event, BlockRemoved) and event.block_hashes == [5, 9]


def test_vllms_map_layout_decodes_on_a_typed_path_to_the_same_events(monkeypatch) -> None:
    """vLLM after vllm-project/vllm#42892 sends events as maps: the same events as the array
    layout, without the generic (Python) decode, a stream's decoder switching layouts as its
    engine does."""
    from sluice.datalayer.kvevents import wire

    events = [
        vllm.BlockStored([7, 8], 3, [1] * 32, 16, None, "GPU", None),
        vllm.BlockRemoved([3], "GPU"),
        vllm.AllBlocksCleared(),
    ]
    batch = vllm.KVEventBatch(ts=2.0, events=events, data_parallel_rank=1)
    as_array, as_map = vllm.encode_batch(batch, layout="array"), vllm.encode_batch(batch)
    assert as_array != as_map
    expected = decode_batch(as_array)

    def generic(raw: object) -> object:
        raise AssertionError("the generic decode ran")

    monkeypatch.setattr(wire, "_generic_batch", generic)
    decoder = wire.BatchDecoder()
    for payload in (as_map, as_array, as_map):
        got = decoder.decode(payload)
        assert (got.ts, got.data_parallel_rank) == (2.0, 1)
        stored, removed, cleared = got.events
        assert isinstance(stored, BlockStored) and isinstance(removed, BlockRemoved)
        assert isinstance(cleared, AllBlocksCleared)
        assert (stored.block_hashes, stored.parent_block_hash, stored.tokens()) == (
            [7, 8],
            3,
            [1] * 32,
        )
        assert (removed.block_hashes, removed.medium) == ([3], "GPU")
        assert stored.block_hashes == expected.events[0].block_hashes  # type: ignore[union-attr]


def test_batches_apply_in_order_and_a_batch_seen_twice_applies_once() -> None:
    sink = SetSink()
    stream = connected(sink)
    assert stream.mode() == ("precise", "live")
    stream.on_live(0, stored(1, 2), 1.0)
    stream.on_live(1, removed(1), 1.1)
    stream.on_replayed(1, removed(1), 1.2)  # late duplicate through a replay: ignored
    assert sink.held["e"] == {2} and stream.last_seq == 1


def test_a_lost_message_is_a_gap_filled_by_replay_before_later_batches_apply() -> None:
    sink = SetSink()
    stream = connected(sink)
    first = stored(1, 2)
    stream.on_live(0, first, 1.0)
    # Batch 1 (removing 1) is lost; batch 2 arrives: replay from batch 0 (ours, to check it is
    # the same publisher), hold batch 2 meanwhile.
    assert stream.on_live(2, stored(3), 1.1) == 0
    assert stream.mode() == ("fallback", "replaying a gap")
    assert stream.on_live(3, removed(2), 1.2) is None  # held too
    stream.on_replayed(0, first, 1.3)
    stream.on_replayed(1, removed(1), 1.3)
    stream.on_replayed(2, stored(3), 1.3)
    assert stream.on_replay_done(1.3) is None
    assert sink.held["e"] == {3} and stream.last_seq == 3
    assert stream.counters.gaps == 1 and stream.mode() == ("precise", "live")


def test_a_lower_sequence_number_is_a_restarted_engine_whose_entries_are_cleared() -> None:
    sink = SetSink()
    stream = connected(sink)
    stream.on_live(0, stored(1), 1.0)
    stream.on_live(1, stored(2), 1.1)
    assert stream.on_live(0, stored(9), 2.0) == 0  # a new publisher: rebuild from its history
    assert sink.held["e"] == set() and stream.counters.resets == 1
    stream.on_replayed(0, stored(9), 2.1)
    stream.on_replay_done(2.1)
    assert sink.held["e"] == {9} and stream.mode() == ("precise", "live")


def test_a_buffer_that_moved_on_rebuilds_from_the_retained_history_as_partial() -> None:
    sink = SetSink()
    stream = EndpointStream("e", sink, StreamSettings())
    assert stream.on_connected(0.0) == 0
    stream.on_replayed(40, stored(5), 0.1)  # batches 0..39 fell out of the engine's buffer
    stream.on_replay_done(0.1)
    assert sink.held["e"] == {5}
    assert stream.mode() == ("partial", "live")  # blocks stored before batch 40 are unknown


def test_an_unanswered_replay_makes_the_endpoint_fall_back_and_retries_after_a_cooldown() -> None:
    sink = SetSink()
    stream = connected(sink, replay_timeout_s=1.0, replay_cooldown_s=5.0)
    stream.on_live(0, stored(1), 1.0)
    assert stream.on_live(2, stored(2), 1.0) == 0
    stream.tick(2.5)  # no answer within 1 s
    assert stream.mode() == ("fallback", "replay timed out") and sink.held["e"] == set()
    assert stream.tick(3.0) is None  # cooling down
    assert stream.tick(8.0) == 0  # then a full replay


def test_silence_is_probed_and_an_unanswered_probe_means_stale() -> None:
    sink = SetSink()
    stream = connected(sink, probe_interval_s=1.0, replay_timeout_s=0.5)
    first = stored(1)
    stream.on_live(0, first, 1.0)
    assert stream.tick(1.5) is None
    assert stream.tick(2.1) == 0  # "still batch 0 last? anything after it?"
    assert stream.mode() == ("precise", "live")  # a probe does not distrust the view yet
    stream.tick(2.7)
    assert stream.mode() == ("fallback", "stale")
    assert stream.tick(2.8) is None  # cooldown
    assert stream.tick(8.0) == 0
    stream.on_replayed(0, first, 8.1)
    stream.on_replayed(1, stored(4), 8.1)  # the probe finds a batch we never got
    stream.on_replay_done(8.1)
    assert sink.held["e"] == {1, 4} and stream.mode() == ("precise", "live")


def test_a_probe_answered_without_our_last_batch_reveals_a_restarted_engine() -> None:
    sink = SetSink()
    stream = connected(sink, probe_interval_s=1.0)
    stream.on_live(0, stored(1), 1.0)
    stream.on_live(1, stored(2), 1.1)
    assert stream.tick(3.0) == 1
    stream.on_replayed(1, stored(7), 3.1)  # batch 1 of someone else: a new engine
    assert stream.on_replay_done(3.1) == 0  # start over from its history
    assert sink.held["e"] == set() and stream.counters.resets == 1


def test_without_a_replay_endpoint_joining_mid_stream_is_partial() -> None:
    sink = SetSink()
    stream = EndpointStream("e", sink, StreamSettings(replay=False))
    assert stream.on_connected(0.0) is None
    assert stream.mode() == ("fallback", "syncing")
    stream.on_live(12, stored(1), 0.5)
    assert stream.mode() == ("partial", "live")
    stream.on_live(14, stored(2), 0.6)  # a gap it cannot fill: start over from here
    assert sink.held["e"] == {2} and stream.counters.gaps == 1


def test_an_all_blocks_cleared_makes_a_partial_view_complete() -> None:
    sink = SetSink()
    stream = EndpointStream("e", sink, StreamSettings(replay=False))
    stream.on_connected(0.0)
    stream.on_live(5, stored(1), 0.1)
    cleared = vllm.encode_batch(vllm.KVEventBatch(0.0, [vllm.AllBlocksCleared()], 0))
    stream.on_live(6, cleared, 0.2)
    assert stream.mode() == ("precise", "live") and sink.held["e"] == set()


def test_a_disconnected_publisher_falls_back_until_it_reconnects_and_resyncs() -> None:
    sink = SetSink()
    stream = connected(sink)
    stream.on_live(0, stored(1), 1.0)
    stream.on_disconnected(2.0)
    assert stream.mode() == ("fallback", "disconnected")
    assert stream.on_connected(3.0) == 0 and sink.held["e"] == set()
