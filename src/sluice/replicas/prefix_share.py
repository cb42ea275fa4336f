"""Prefix locality across replicas while precise prefix routing is off: a shared index.

Each replica's `prefix-cache-scorer` learns which endpoint holds which prompt blocks only from
its own dispatches, so a prompt's endpoint would depend on which replica Envoy gave it to.
Every block-hash list a scorer adds to its index is also queued here and published with the
next sync; the other replicas add it to their index of the same scorer, as if they had
dispatched it. The cost (bytes per sync, per request) is in docs/replicas.md.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from sluice.scheduling.prefix_scorer import PrefixCacheScorer

# (scorer name, endpoint, index capacity, block hashes)
Entry = tuple[str, str, int, list[int]]

# At most this many additions are queued between two syncs (a burst beyond it is dropped from
# sharing, never from the local index: sharing is a hint).
MAX_OUTBOX = 4096

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[tuple[str, str, int, list[int]]])


class PrefixShare:
    def __init__(self, scorers: Iterable[PrefixCacheScorer]) -> None:
        self.scorers = {s.name: s for s in scorers}
        self._outbox: list[Entry] = []
        self.sent = 0
        self.received = 0
        for scorer in self.scorers.values():
            scorer.on_added = self._added

    def _added(self, scorer: str, endpoint: str, hashes: list[int], capacity: int) -> None:
        if len(self._outbox) < MAX_OUTBOX:
            self._outbox.append((scorer, endpoint, capacity, hashes))

    def take(self) -> bytes | None:
        """What to publish with this sync (None: nothing new)."""
        if not self._outbox:
            return None
        out, self._outbox = self._outbox, []
        self.sent += len(out)
        return _encoder.encode(out)

    def apply(self, blobs: Iterable[bytes], live: set[str]) -> None:
        """Add the other replicas' entries for endpoints still in the pool."""
        for blob in blobs:
            try:
                entries = _decoder.decode(blob)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            for scorer_name, endpoint, capacity, hashes in entries:
                scorer = self.scorers.get(scorer_name)
                if scorer is not None and endpoint in live:
                    scorer.index.add(endpoint, hashes, capacity)
                    self.received += 1
