"""One endpoint's KV-event stream, as a sans-I/O state machine: ordered application, gap
detection with replay, sequence resets, staleness. The shell feeds it what the sockets saw and
the time; it applies batches to a sink and answers with the replay to request, if any.

The rules (vLLM numbers batches 0, 1, 2, ... per publisher; a restart starts over at 0):

* a batch is applied only when it is the next one (``seq == last + 1``): events apply in the
  engine's order, and a batch seen twice (live and replayed) applies once;
* on (re)connecting, the endpoint's entries are cleared and the whole retained history is
  replayed from 0 — a reconnect may be a restarted engine, and the PUB socket drops whatever it
  sent before the subscription took hold. Live batches that arrive meanwhile wait and apply
  after the replay, in order;
* a live batch past ``last + 1`` is a gap (a lost message): replay from ``last`` — the batch
  we applied last comes back first and must be the same bytes, which proves the publisher is
  the one we followed (else it restarted unnoticed: start over);
* a live batch at or below the last live one is a sequence reset (the publisher restarted):
  the endpoint's entries are cleared and its history replayed from 0;
* when the engine has been silent for ``probe_interval_s``, the same replay from ``last`` asks
  it whether anything was missed — our last batch alone proves the stream fresh, an answer
  without it a restarted engine; no answer within ``replay_timeout_s`` makes it stale;
* a replay that fails or cannot cover the gap clears the endpoint (its view would be wrong, not
  merely behind) and the full replay is retried after ``replay_cooldown_s``.

Modes, for the scorer and for decision receipts: ``precise`` (a contiguous history from the
publisher's first batch or from an ``AllBlocksCleared``), ``partial`` (contiguous, but it began
mid-stream: blocks stored earlier are unknown) and ``fallback`` (no trustworthy view: connecting,
disconnected, replaying a gap, stale, failed), each with a reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Literal, NamedTuple, ParamSpec, Protocol, TypeVar

from sluice.datalayer.kvevents.wire import BatchDecoder, DecodeError, Event

Mode = Literal["precise", "partial", "fallback"]
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _laned(
    method: Callable[Concatenate[EndpointStream, _P], _R],
) -> Callable[Concatenate[EndpointStream, _P], _R]:
    """A method that reads or changes the stream: with a lane attached, what it applied is
    taken in first, and the lane reopened (or closed) where the stream is after."""

    @functools.wraps(method)
    def wrapper(self: EndpointStream, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._lane is None:
            return method(self, *args, **kwargs)
        self._take_in()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.relane()

    return wrapper  # type: ignore[return-value]  # (functools.wraps: the same call)


class KVEventSink(Protocol):
    """Where an endpoint's events go (the precise index)."""

    def apply(self, endpoint: str, events: Sequence[Event]) -> bool | None:
        """Apply one batch; true when it emptied the endpoint (an ``AllBlocksCleared``)."""

    def clear(self, endpoint: str) -> None: ...

    def forget(self, endpoint: str) -> None: ...


class LaneEntry(NamedTuple):
    """What a lane applies to: the precise index's key table and this endpoint's slot in it
    (a sink offering lanes has ``lane_entry(endpoint) -> LaneEntry | None`` and
    ``lane_applied(endpoint, batches, other_tiers, other_groups)``, as `PreciseIndex`)."""

    owners: dict[int, int]
    held: int  # the slot's shared "holds" bit object
    held_by_slot: list[int]
    counts: list[int]
    slot: int
    group: int | None  # the KV-cache group indexed (None: not learned yet)
    block_size: int
    verified: bool  # the engine's first-block hash was checked
    key_mask: int


@dataclass(frozen=True, slots=True)
class StreamSettings:
    replay: bool = True  # the engine has a replay endpoint
    replay_timeout_s: float = 2.0  # upstream's replay attempt idle timeout
    replay_cooldown_s: float = 5.0  # before retrying a failed replay
    probe_interval_s: float = 1.0  # silence before asking the replay endpoint what we missed
    max_pending: int = 10_000  # live batches held while a replay runs


@dataclass(slots=True)
class StreamCounters:
    batches: int = 0  # live batches received
    applied: int = 0  # batches applied (live or replayed)
    events: int = 0
    gaps: int = 0
    resets: int = 0
    replays: int = 0
    replays_failed: int = 0
    malformed: int = 0
    probes: int = 0


class EndpointStream:
    def __init__(self, name: str, sink: KVEventSink, settings: StreamSettings) -> None:
        self.name = name
        self._sink = sink
        self.settings = settings
        self._counters = StreamCounters()
        self.connected = False
        self._last_seq: int | None = None  # last batch applied; None: no consistent view
        self.complete = False  # the history since a known empty cache is all applied
        self._last_live: int | None = None
        self._last_heard = float("-inf")
        self._pending: list[tuple[int, bytes]] = []
        # The replay in flight: (start, sent at, probe?) and how many batches it returned.
        self.replay_start: int | None = None
        self._replay_sent = 0.0
        self._replay_probe = False
        self._replayed = 0
        self._verify = False  # the replay re-reads our last batch first
        self._diverged = False  # ... and it was not the same
        self._decoder = BatchDecoder()  # remembers the layout the engine sends
        self._last_payload = b""  # the batch applied last
        self._expected_payload = b""  # ... when the replay in flight was asked for
        self._failed_at: float | None = None
        self._unproductive = 0  # replays in a row that returned nothing while a hole remained
        self.reason = "connecting"
        self._lane: Any = None  # the native fast lane (lane.py), when the subscriber has one

    # -- the native fast lane ------------------------------------------------------------------

    @property
    def counters(self) -> StreamCounters:
        if self._lane is not None:
            self._take_in()
        return self._counters

    @property
    def last_seq(self) -> int | None:
        if self._lane is not None:
            self._take_in()
        return self._last_seq

    @last_seq.setter
    def last_seq(self, seq: int | None) -> None:
        self._last_seq = seq

    def attach_lane(self, lane: Any) -> None:
        """Let `lane` (a `_lane.Lane` on this endpoint's connection) apply in-order batches;
        None detaches it, taking in what it did."""
        if self._lane is not None:
            self._take_in()
            self._lane.open = False
        self._lane = lane
        self.relane()

    def live_next(self) -> int | None:
        """The sequence number a live batch must have to be applied at once, in order (what a
        lane may take), or None while batches need more than that (no view yet, a replay in
        flight, a live batch seen ahead of the view)."""
        last = self._last_seq
        if last is None or self.replay_start is not None:
            return None
        if self._last_live is not None and self._last_live > last:
            return None
        return last + 1

    def relane(self) -> None:
        """Open the lane where the stream is now, or close it."""
        lane = self._lane
        if lane is None:
            return
        expect = self.live_next()
        entry_of = getattr(self._sink, "lane_entry", None)
        entry = entry_of(self.name) if expect is not None and entry_of is not None else None
        if entry is None or expect is None or expect >= 1 << 63:  # (the lane counts in int64)
            lane.open = False
            return
        lane.owners, lane.held, lane.held_by_slot, lane.counts, lane.slot = entry[:5]
        lane.group, lane.block_size, lane.verified, lane.key_mask = entry[5:]
        lane.expect = expect
        lane.open = True

    def _take_in(self) -> None:
        """What the lane applied since, as `on_live` and `_apply` would have recorded it."""
        lane = self._lane
        batches = lane.batches
        if not batches and not lane.malformed:
            return
        counters = self._counters
        counters.malformed += lane.malformed
        lane.malformed = 0
        if not batches:
            return
        counters.batches += batches
        counters.applied += batches
        counters.events += lane.events
        self._last_seq = self._last_live = lane.expect - 1
        self._last_heard = lane.last_heard
        self._last_payload = lane.last_payload
        applied = getattr(self._sink, "lane_applied", None)
        if applied is not None:
            applied(self.name, batches, lane.other_tiers, lane.other_groups)
        lane.batches = lane.events = lane.other_tiers = lane.other_groups = 0

    # -- what the sockets saw ----------------------------------------------------------------

    @_laned
    def on_connected(self, now: float) -> int | None:
        """The SUB socket (re)connected: start over from a clean view."""
        self.connected = True
        self._last_live = None
        self._pending = []
        return self._resync(now, "syncing")

    @_laned
    def on_disconnected(self, now: float) -> None:
        self.connected = False
        self.reason = "disconnected"

    @_laned
    def on_live(self, seq: int, payload: bytes, now: float) -> int | None:
        """A batch from the PUB socket; returns a replay start to request, if any."""
        self.counters.batches += 1
        self._last_heard = now
        if self._last_live is not None and seq <= self._last_live:
            self.counters.resets += 1
            self._last_live = seq
            self._pending = [(seq, payload)]
            return self._resync(now, "sequence reset")
        self._last_live = seq
        if self.replay_start is not None and not self._replay_probe:
            if len(self._pending) < self.settings.max_pending:
                self._pending.append((seq, payload))
            return None
        last = self.last_seq
        if last is not None and seq <= last:
            return None  # already applied through a replay
        if last is not None and seq == last + 1:
            self._apply(seq, payload)
            return None
        if not self.settings.replay:
            # No replay endpoint: start over from what we have (blocks stored before are
            # unknown; a first batch 0 is the publisher's very first).
            if last is not None:
                self.counters.gaps += 1
                self._sink.clear(self.name)
            self.complete = seq == 0
            self._apply(seq, payload)
            return None
        self._pending = [(seq, payload)]
        if last is not None:
            self.counters.gaps += 1
        return self._continue_from(last, now, probe=False)

    @_laned
    def on_replayed(self, seq: int, payload: bytes, now: float) -> None:
        """One batch of the replay in flight."""
        self._last_heard = now
        start = self.replay_start
        if start is None or self._diverged:
            return
        first = self._replayed == 0
        self._replayed += 1
        if first and self._verify:
            # The batch we applied last: the same bytes, or another publisher.
            if seq != start or payload != self._expected_payload:
                self._diverged = True
            return
        if first and seq > start:
            # The buffer no longer holds what we asked for: what was lost may include removals
            # of blocks we hold, so keep only what the retained history says.
            self._sink.clear(self.name)
            self.complete = False
            self.last_seq = None
        elif first and start == 0 and seq == 0:
            self.complete = True
        last = self.last_seq
        if last is not None and seq <= last:
            return
        if last is not None and seq != last + 1:
            return  # a hole inside a replay: on_replay_done sees it and asks again
        self._apply(seq, payload)

    @_laned
    def on_replay_done(self, now: float) -> int | None:
        """The replay's end marker: apply what waited, in order."""
        self._last_heard = now
        if self.replay_start is None:
            return None
        start, returned = self.replay_start, self._replayed
        self.replay_start = None
        self.counters.replays += 1
        self._failed_at = None
        if self._verify and (self._diverged or returned == 0):
            # It no longer has the batch we applied last: a restarted engine.
            self.counters.resets += 1
            return self._resync(now, "engine restarted")
        self.reason = "live"
        if self.last_seq is None and start == 0 and returned == 0:
            self.last_seq, self.complete = -1, True  # it has published nothing yet
        pending, self._pending = sorted(self._pending), []
        hole = False
        for seq, payload in pending:
            last = self.last_seq
            if last is not None and seq <= last:
                continue
            if last is None or seq != last + 1:
                hole = True
                break
            self._apply(seq, payload)
        if not hole and self.last_seq is not None:
            self._unproductive = 0
            return None
        # Still a hole: batches we know exist were not in the replay.
        self.counters.gaps += 1
        self._unproductive = self._unproductive + 1 if returned <= 1 else 0
        last = self.last_seq
        self._pending = [(s, p) for s, p in pending if last is None or s > last]
        if self._unproductive >= 3:
            # The publisher cannot give them back: start over from its retained history.
            self._unproductive = 0
            return self._resync(now, "replay could not fill the gap")
        return self._continue_from(last, now, probe=False)

    @_laned
    def on_replay_failed(self, now: float, why: str = "replay failed") -> None:
        """The replay in flight timed out or broke."""
        if self.replay_start is None:
            return
        probe = self._replay_probe
        self.replay_start = None
        self._pending = []
        self.counters.replays_failed += 1
        self._failed_at = now
        if probe:
            self.reason = "stale"  # the publisher does not answer; the view may be old
            return
        self._sink.clear(self.name)
        self.last_seq, self.complete = None, False
        self.reason = why

    # -- time -------------------------------------------------------------------------------

    def tick(self, now: float) -> int | None:
        """Timeouts, retries and probes; returns a replay start to request, if any."""
        lane = self._lane
        if lane is None:
            return self._tick(now)
        # Every tick of every stream (10/s each): the lane is reopened only if the tick moved
        # the stream (what changes the index, `on_replay_failed`, reopens it itself).
        self._take_in()
        before = self._last_seq, self.replay_start
        try:
            return self._tick(now)
        finally:
            if (self._last_seq, self.replay_start) != before:
                self.relane()

    def _tick(self, now: float) -> int | None:
        s = self.settings
        if self.replay_start is not None:
            if now - self._replay_sent > s.replay_timeout_s:
                self.on_replay_failed(now, "replay timed out")
            return None
        if not self.connected or not s.replay:
            return None
        if self._failed_at is not None and now - self._failed_at < s.replay_cooldown_s:
            return None
        if self.last_seq is None:
            return self._request(0, now, probe=False)
        if now - self._last_heard >= s.probe_interval_s:
            self.counters.probes += 1
            return self._continue_from(self.last_seq, now, probe=True)
        return None

    def mode(self) -> tuple[Mode, str]:
        """Whether the endpoint's entries can be trusted now, and why not."""
        if not self.connected:
            return "fallback", self.reason if self.reason != "live" else "disconnected"
        if self.last_seq is None:
            return "fallback", self.reason
        if self.replay_start is not None and not self._replay_probe:
            return "fallback", "replaying a gap"
        if self.reason == "stale":
            return "fallback", "stale"
        return ("precise" if self.complete else "partial"), "live"

    # -- internals -----------------------------------------------------------------------------

    def _resync(self, now: float, reason: str) -> int | None:
        """Clear the endpoint and rebuild it from the publisher's retained history (live
        batches already held wait for the replay)."""
        self._sink.clear(self.name)
        self.last_seq, self.complete = None, False
        self.replay_start = None
        self.reason = reason
        if not self.settings.replay:
            pending, self._pending = self._pending, []
            for seq, payload in pending:  # the batch that revealed a reset
                self.complete = seq == 0
                self._apply(seq, payload)
            return None
        return self._request(0, now, probe=False)

    def _continue_from(self, last: int | None, now: float, *, probe: bool) -> int:
        """A replay that resumes after ``last`` (None: the whole history), re-reading ``last``
        itself to check it is still the same publisher."""
        if last is None or last < 0:
            return self._request(0, now, probe=probe)
        return self._request(last, now, probe=probe, verify=True)

    def _request(self, start: int, now: float, *, probe: bool, verify: bool = False) -> int:
        self.replay_start = start
        self._replay_sent = now
        self._replay_probe = probe
        self._verify = verify
        self._expected_payload = self._last_payload
        self._diverged = False
        self._replayed = 0
        return start

    def _apply(self, seq: int, payload: bytes) -> None:
        try:
            batch = self._decoder.decode(payload)
        except DecodeError:
            # Skipped and counted: replaying it would only fail again. The view may now miss
            # what it held, so it is no longer complete.
            self.counters.malformed += 1
            self.complete = False
            events: Sequence[Event] = ()
        else:
            events = batch.events
        if events:
            if self._sink.apply(self.name, events):
                self.complete = True  # an empty cache: the history is complete from there on
            self.counters.events += len(events)
        self.counters.applied += 1
        self.last_seq = seq
        self._last_payload = payload
