"""vLLM's KV-event wire format, decoded (pure).

A ZMQ message is ``(topic, seq, payload)``: ``seq`` 8 bytes big-endian, ``payload`` a msgpack
``KVEventBatch`` ``[ts, [event, ...], data_parallel_rank?]``. vLLM encodes events with msgspec
``array_like=True, tag=True`` — ``["BlockStored", block_hashes, parent_block_hash, token_ids,
block_size, lora_id, medium, lora_name, extra_keys?, group_idx?, kv_cache_spec_kind?,
kv_cache_spec_sliding_window?]``, ``["BlockRemoved", block_hashes, medium, group_idx?]``,
``["AllBlocksCleared"]`` — and, since vllm-project/vllm#42892 (vLLM releases after 0.23), each
event as a map tagged by ``"type"`` (``{"type": "BlockRemoved", "block_hashes": [...], ...}``,
defaults omitted), the batch staying an array; a batch that is itself a map decodes too. Each
of those layouts has a typed msgspec decoder (C, no Python object per field), and a
`BatchDecoder` remembers which one its engine sends, so a stream pays for no failed attempt;
anything else (newer fields in the array layout, bytes hashes) goes through a generic decode.
Block hashes are ``ExternalBlockHash``: ints, or raw digest bytes when
``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0``, which become the same int vLLM would have sent (the
low 64 bits).

``medium`` names the cache tier an event is about: ``"GPU"`` for the engine's own block pool
(``MEDIUM_GPU``; older vLLM sent no medium, and then only GPU events existed), anything else
(``"CPU"`` from vLLM's offloading connector, whose BlockStored carries no token ids) another
tier. `on_gpu` tells them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

MEDIUM_GPU = "GPU"
END_OF_REPLAY = -1  # the replay ROUTER's end marker, as a signed 8-byte sequence number
_LOW_64 = (1 << 64) - 1


class DecodeError(ValueError):
    """A payload that is not a vLLM KV-event batch."""


class BlockStored(msgspec.Struct, array_like=True, tag=True, gc=False):
    block_hashes: list[int]
    parent_block_hash: int | None
    # Kept encoded until needed (checking a seed, recomputing keys): most batches never need
    # them, and decoding 16 ids a block is most of a batch's decoding cost.
    token_ids: msgspec.Raw
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None

    def tokens(self) -> list[int]:
        """The token ids of the stored blocks (decoded on each call)."""
        return _TOKENS.decode(self.token_ids)


_TOKENS = msgspec.msgpack.Decoder(list[int])


class BlockRemoved(msgspec.Struct, array_like=True, tag=True, gc=False):
    block_hashes: list[int]
    medium: str | None = None
    group_idx: int | None = None


class AllBlocksCleared(msgspec.Struct, array_like=True, tag=True, gc=False):
    pass


Event = BlockStored | BlockRemoved | AllBlocksCleared


def on_gpu(event: BlockStored | BlockRemoved) -> bool:
    """Whether the event is about the engine's GPU block pool (the prefix cache routing sees)."""
    medium = event.medium
    return medium is None or medium == MEDIUM_GPU


class EventBatch(msgspec.Struct, array_like=True, gc=False):
    ts: float
    events: Sequence[Event]
    data_parallel_rank: int | None = None


# The map layout (vllm-project/vllm#42892): the same classes, read by field name.
class _MapBlockStored(BlockStored, array_like=False, tag_field="type", tag="BlockStored"):
    pass


class _MapBlockRemoved(BlockRemoved, array_like=False, tag_field="type", tag="BlockRemoved"):
    pass


class _MapAllBlocksCleared(
    AllBlocksCleared, array_like=False, tag_field="type", tag="AllBlocksCleared"
):
    pass


class _MapEventsBatch(EventBatch):
    events: Sequence[_MapBlockStored | _MapBlockRemoved | _MapAllBlocksCleared]


class _MapBatch(_MapEventsBatch, array_like=False):
    pass


# Every class an event of each kind decodes to (a hot loop dispatches on the exact type).
STORED_TYPES: frozenset[type] = frozenset({BlockStored, _MapBlockStored})
REMOVED_TYPES: frozenset[type] = frozenset({BlockRemoved, _MapBlockRemoved})

# Newest layout first: an engine's stream keeps whichever one decoded its last batch.
_LAYOUTS: tuple[msgspec.msgpack.Decoder[Any], ...] = (
    msgspec.msgpack.Decoder(_MapEventsBatch),
    msgspec.msgpack.Decoder(EventBatch),
    msgspec.msgpack.Decoder(_MapBatch),
)
_FIELDS: dict[str, tuple[type[Any], tuple[str, ...]]] = {
    "BlockStored": (BlockStored, BlockStored.__struct_fields__),
    "BlockRemoved": (BlockRemoved, BlockRemoved.__struct_fields__),
    "AllBlocksCleared": (AllBlocksCleared, ()),
}


def sequence_number(frame: bytes) -> int:
    """An 8-byte big-endian sequence frame (signed: the replay end marker is -1)."""
    if len(frame) != 8:
        raise DecodeError(f"sequence frame of {len(frame)} bytes, not 8")
    return int.from_bytes(frame, "big", signed=True)


class BatchDecoder:
    """Decodes one engine's batches: the typed decoder of the layout it sent last first, the
    others after it, then the generic decode (which the next batch tries the typed ones
    before again)."""

    __slots__ = ("_order",)

    def __init__(self) -> None:
        self._order = _LAYOUTS

    def decode(self, payload: bytes) -> EventBatch:
        order = self._order
        try:
            return order[0].decode(payload)  # type: ignore[no-any-return]
        except msgspec.DecodeError:
            pass  # another layout: try the others
        for decoder in order[1:]:
            try:
                batch: EventBatch = decoder.decode(payload)
            except msgspec.DecodeError:
                continue
            self._order = (decoder, *(d for d in order if d is not decoder))
            return batch
        try:
            raw = msgspec.msgpack.decode(payload)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"not msgpack: {exc}") from None
        return _generic_batch(raw)


def decode_batch(payload: bytes) -> EventBatch:
    """The batch in ``payload``, in whichever layout it is (see `BatchDecoder`)."""
    return BatchDecoder().decode(payload)


def _generic_batch(raw: Any) -> EventBatch:
    if isinstance(raw, dict):
        ts, events, rank = raw.get("ts"), raw.get("events"), raw.get("data_parallel_rank")
    elif isinstance(raw, list) and len(raw) >= 2:
        ts, events, rank = raw[0], raw[1], raw[2] if len(raw) > 2 else None
    else:
        raise DecodeError("a batch is [ts, events, data_parallel_rank?]")
    if not isinstance(ts, int | float) or not isinstance(events, list):
        raise DecodeError("a batch's ts must be a number and its events a list")
    return EventBatch(float(ts), [_event(e) for e in events], rank)


def _event(raw: Any) -> Event:
    if isinstance(raw, dict):
        tag = raw.get("type")
        entry = _FIELDS.get(tag) if isinstance(tag, str) else None
        if entry is None:
            raise DecodeError(f"unknown event type {tag!r}")
        cls, names = entry
        values = [raw.get(name) for name in names]
    elif isinstance(raw, list) and raw and isinstance(raw[0], str):
        entry = _FIELDS.get(raw[0])
        if entry is None:
            raise DecodeError(f"unknown event tag {raw[0]!r}")
        cls, names = entry
        values = list(raw[1 : 1 + len(names)])  # newer trailing fields are ignored
        values += [None] * (len(names) - len(values))
    else:
        raise DecodeError("an event is a tagged array or a map with a 'type'")
    if cls is AllBlocksCleared:
        return AllBlocksCleared()
    fields = dict(zip(names, values))
    hashes = fields["block_hashes"]
    if not isinstance(hashes, list):
        raise DecodeError("block_hashes must be a list")
    fields["block_hashes"] = [external_hash(h) for h in hashes]
    if cls is BlockStored:
        parent = fields["parent_block_hash"]
        fields["parent_block_hash"] = None if parent is None else external_hash(parent)
        if not isinstance(fields["token_ids"], list) or not isinstance(fields["block_size"], int):
            raise DecodeError("BlockStored needs token_ids (a list) and block_size (an int)")
        fields["token_ids"] = raw_token_ids(fields["token_ids"])
    return cls(**fields)  # type: ignore[no-any-return]


def raw_token_ids(ids: list[int]) -> msgspec.Raw:
    """Token ids in the encoded form `BlockStored.token_ids` keeps them in."""
    return msgspec.Raw(msgspec.msgpack.encode(ids))


def external_hash(value: object) -> int:
    """vLLM's int form of a block hash: ints as sent, digest bytes as their low 64 bits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(value, "big") & _LOW_64
    raise DecodeError(f"a block hash must be an int or bytes, not {type(value).__name__}")
