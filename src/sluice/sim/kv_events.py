"""vLLM's KV-cache events as plain data, encoded exactly as vLLM puts them on the wire.

``vllm/distributed/kv_events.py``: msgspec Structs with ``array_like=True, omit_defaults=True,
tag=True``, so each event is a msgpack array ``[tag, field, ...]`` (tag = the class name) with
trailing defaults left out, and a batch is ``[ts, [events...], data_parallel_rank]``. Hashes are
``ExternalBlockHash`` ints (see ``block_hash``); ``medium`` is ``"GPU"`` for the GPU cache.

``KVEventsConfig`` is vLLM's ``--kv-events-config`` JSON, with vLLM's field names and defaults.
"""

from __future__ import annotations

from typing import Any

import msgspec

MEDIUM_GPU = "GPU"


class KVCacheEvent(
    msgspec.Struct,
    array_like=True,
    omit_defaults=True,
    gc=False,
    tag=True,
):
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


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: str | None


class AllBlocksCleared(KVCacheEvent):
    pass


Event = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Event]
    data_parallel_rank: int | None = None


_ENCODER = msgspec.msgpack.Encoder()


def encode_batch(batch: KVEventBatch) -> bytes:
    return _ENCODER.encode(batch)


def encode_map_batch(batch: KVEventBatch) -> bytes:
    """The batch as vLLM after vllm-project/vllm#42892 sends it: each event a map tagged by
    ``"type"`` (the batch still an array), with the fields a single-group engine of that era
    adds (one ``extra_keys`` entry per block, ``group_idx`` 0, ``kv_cache_spec_kind``)."""
    events: list[dict[str, Any]] = []
    for event in batch.events:
        if isinstance(event, BlockStored):
            events.append(
                {
                    "type": "BlockStored",
                    "block_hashes": event.block_hashes,
                    "parent_block_hash": event.parent_block_hash,
                    "token_ids": event.token_ids,
                    "block_size": event.block_size,
                    "lora_id": event.lora_id,
                    "medium": event.medium,
                    "lora_name": event.lora_name,
                    "extra_keys": event.extra_keys or [None] * len(event.block_hashes),
                    "group_idx": 0,
                    "kv_cache_spec_kind": "full_attention",
                }
            )
        elif isinstance(event, BlockRemoved):
            events.append(
                {
                    "type": "BlockRemoved",
                    "block_hashes": event.block_hashes,
                    "medium": event.medium,
                    "group_idx": 0,
                }
            )
        else:
            events.append({"type": "AllBlocksCleared"})
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
