"""What one replica tells the others each sync interval: compact, versioned msgspec arrays."""

from __future__ import annotations

import msgspec

VERSION = 1


class FlowSummary(msgspec.Struct, array_like=True, frozen=True):
    fairness_id: str
    waiting: int
    oldest_wait_s: float
    # Unweighted token cost served on the publishing replica (corrected at completion), and
    # the flow's pool-wide token-fair key as that replica sees it (counter + peers' service).
    served: float
    key: float
    # Whether the publisher may release it now (not held for a peer's higher band or for a
    # less-served flow elsewhere): only eligible waiting work asks for room leases.
    eligible: bool


class BandSummary(msgspec.Struct, array_like=True, frozen=True):
    priority: int
    waiting: int
    oldest_wait_s: float
    flows: tuple[FlowSummary, ...]


class EndpointSummary(msgspec.Struct, array_like=True, frozen=True):
    name: str
    in_flight: int
    pending_prefills: int
    pending_prefill_tokens: int
    lease: int  # -1: none


class ReplicaSummary(msgspec.Struct, array_like=True, frozen=True):
    version: int
    replica: str
    at: float  # the publisher's wall clock (time.time()), for ages across processes
    bands: tuple[BandSummary, ...]
    endpoints: tuple[EndpointSummary, ...]
    # The largest request cost (virtual tokens) the publisher charged lately: the fairness
    # slack one sync interval of staleness needs is a couple of these.
    max_cost: float

    @property
    def demand(self) -> int:
        """Requests waiting that could be released now (what asks for room leases)."""
        return sum(f.waiting for b in self.bands for f in b.flows if f.eligible)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ReplicaSummary)


def encode(summary: ReplicaSummary) -> bytes:
    return _encoder.encode(summary)


def decode(blob: bytes) -> ReplicaSummary | None:
    """A peer's summary, or None if it is not one this version reads (a rolling upgrade: the
    newer replica's summary is skipped, never misread)."""
    try:
        summary = _decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return summary if summary.version == VERSION else None
