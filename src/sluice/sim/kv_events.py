"""vLLM's KV-cache events as plain data, encoded exactly as vLLM puts them on the wire.

``vllm/distributed/kv_events.py`` (read 2026-12-02): msgspec Structs with ``omit_defaults=True,
tag=True`` — since vllm-project/vllm#42892 (every release after 0.23) without ``array_like``, so
each event is a msgpack map tagged by ``"type"`` (the class name) with its fields by name and
defaults left out; the batch ``[ts, [events...], data_parallel_rank]`` stays positional (a
captured vLLM 0.26 message: ``[1789095808.8, [{'type': 'BlockStored', 'block_hashes': [...],
'parent_block_hash': None, 'token_ids': [...], 'block_size': 16, 'lora_id': None, 'medium':
'GPU', 'lora_name': None, 'extra_keys': [None], 'group_idx': 0, 'kv_cache_spec_kind':
'full_attention'}], 0]``). ``lora_id``, ``medium`` and ``lora_name`` have no default, so they are
always sent (as nil when unset); ``extra_keys`` is one entry per block; ``group_idx`` is the
KV-cache group (a hybrid model — full attention beside sliding-window or Mamba layers — has
several, each with its own blocks under the same hashes) and ``kv_cache_spec_kind`` its kind,
on BlockStored only (BlockRemoved carries ``group_idx`` and the hash).

``encode_batch(..., layout="array")`` is the layout before #42892: every event a positional
array ``[tag, field, ...]`` with trailing defaults left out.

Hashes are ``ExternalBlockHash`` ints (see ``block_hash``); ``medium`` is ``"GPU"`` for the GPU
cache. ``KVEventsConfig`` is vLLM's ``--kv-events-config`` JSON, with vLLM's field names and
defaults.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

MEDIUM_GPU = "GPU"
FULL_ATTENTION = "full_attention"  # vLLM's KVCacheSpecKind.FULL_ATTENTION
Layout = Literal["map", "array"]


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    """Base of the three events."""


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


Event = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Event]
    data_parallel_rank: int | None = None


# The same events as vLLM up to 0.23 encoded them: positional arrays.
class _ArrayEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class _ArrayStored(_ArrayEvent, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class _ArrayRemoved(_ArrayEvent, tag="BlockRemoved"):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class _ArrayCleared(_ArrayEvent, tag="AllBlocksCleared"):
    pass


_ARRAY = {BlockStored: _ArrayStored, BlockRemoved: _ArrayRemoved, AllBlocksCleared: _ArrayCleared}
_ENCODER = msgspec.msgpack.Encoder()


def encode_batch(batch: KVEventBatch, *, layout: Layout = "map") -> bytes:
    """The batch's bytes as vLLM publishes them: today's map layout, or the older arrays."""
    if layout == "map":
        return _ENCODER.encode(batch)
    events = [
        _ARRAY[type(e)](**{f: getattr(e, f) for f in e.__struct_fields__}) for e in batch.events
    ]
    return _ENCODER.encode([batch.ts, events, batch.data_parallel_rank])


class KVEventsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """vLLM's ``KVEventsConfig`` (``--kv-events-config '{"enable_kv_cache_events": true, ...}'``).

    ``endpoint`` binds when it holds ``*``, ``::``, ``ipc://`` or ``inproc://`` and connects
    otherwise (vLLM's rule); ``replay_endpoint`` is a ROUTER that re-sends buffered batches."""

    enable_kv_cache_events: bool = False
    publisher: str | None = None  # "zmq" when events are enabled, else "null"
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = 10_000
    hwm: int = 100_000
    max_queue_size: int = 100_000
    topic: str = ""

    def __post_init__(self) -> None:
        if self.publisher is None:
            self.publisher = "zmq" if self.enable_kv_cache_events else "null"
        if self.publisher not in ("zmq", "null"):
            raise ValueError(f"--kv-events-config: unknown publisher {self.publisher!r}")
        if self.buffer_steps < 1:
            raise ValueError("--kv-events-config: buffer_steps must be >= 1")

    @property
    def publishes(self) -> bool:
        return self.enable_kv_cache_events and self.publisher == "zmq"

    @classmethod
    def from_json(cls, text: str) -> KVEventsConfig:
        try:
            return msgspec.json.decode(text.encode(), type=cls)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValueError(f"--kv-events-config: {exc}") from None


def offset_endpoint_port(endpoint: str | None, rank: int) -> str | None:
    """vLLM's rule for data-parallel rank ``rank``: the tcp port plus ``rank`` (``inproc``
    gets a ``_dp<rank>`` suffix). The sim gives engine i of a pool rank i."""
    if not endpoint or rank == 0:
        return endpoint
    if "inproc" in endpoint:
        return f"{endpoint}_dp{rank}"
    if "tcp" in endpoint and ":" in endpoint:
        base, _, port = endpoint.rpartition(":")
        return f"{base}:{int(port) + rank}"
    if "tcp" in endpoint:
        return endpoint
    raise ValueError("Invalid endpoint: must contain 'inproc' or 'tcp'")
