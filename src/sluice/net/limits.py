"""The limits an HTTP/2 connection enforces, and the two small counters behind the flood rules.

Plain values and plain objects taking `now` as an argument (no clock, no I/O), so the rules are
unit-testable; `sluice.net.connection` applies them to live connections.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What one peer may make a server hold or do. Defaults fit a gateway (Envoy) multiplexing
    every ext_proc stream of a worker thread onto one connection.

    - `max_concurrent_streams`: advertised as SETTINGS_MAX_CONCURRENT_STREAMS; a conformant
      client opens another connection instead, a peer that exceeds it gets GOAWAY.
    - `max_header_list_bytes`: SETTINGS_MAX_HEADER_LIST_SIZE (decoded size, RFC 9113 §6.5.2);
      more is a connection error ENHANCE_YOUR_CALM.
    - `max_frame_bytes`: SETTINGS_MAX_FRAME_SIZE we accept; a larger frame is FRAME_SIZE_ERROR.
    - `max_message_bytes`: the largest gRPC message; a larger one ends the call with
      RESOURCE_EXHAUSTED before it is buffered.
    - `max_connection_buffer_bytes`: bytes held at once for all calls of a connection (partial
      messages plus what handlers report holding, e.g. request bodies not yet complete); the
      call whose data would pass it ends with RESOURCE_EXHAUSTED.
    - `stream_window_bytes` / `connection_window_bytes`: the receive windows granted. Memory is
      bounded by the explicit limits above, not by the windows: windows are returned as soon as
      bytes arrive, so a stream waiting in a queue can never stall the others.
    - `control_frame_burst` / `control_frames_per_s`: frames that cost work but carry no
      request (PING, SETTINGS, PRIORITY, WINDOW_UPDATE, unknown types, empty DATA) beyond this
      budget are a flood: GOAWAY ENHANCE_YOUR_CALM. Every request-carrying frame earns one back.
    - `rapid_reset_min_streams` / `rapid_reset_ratio`: streams the peer resets before they
      delivered a single message (CVE-2023-44487, "rapid reset"): once at least this many, and
      more than this share of all streams opened, GOAWAY ENHANCE_YOUR_CALM.
    - `write_buffer_bytes`: output queued for a peer that does not read; above it the
      connection stops reading (so an unread PING flood cannot grow memory).
    """

    max_concurrent_streams: int = 1000
    max_header_list_bytes: int = 16 * 1024
    max_frame_bytes: int = 1 * MiB
    max_message_bytes: int = 20 * MiB
    max_connection_buffer_bytes: int = 64 * MiB
    stream_window_bytes: int = 32 * MiB
    connection_window_bytes: int = 64 * MiB
    control_frame_burst: int = 1000
    control_frames_per_s: float = 100.0
    rapid_reset_min_streams: int = 100
    rapid_reset_ratio: float = 0.5
    write_buffer_bytes: int = 1 * MiB

    def __post_init__(self) -> None:
        if not 16_384 <= self.max_frame_bytes <= (1 << 24) - 1:
            raise ValueError("max_frame_bytes must be within 16,384 .. 2^24-1 (RFC 9113 §6.5.2)")
        for name in ("stream_window_bytes", "connection_window_bytes"):
            if not 65_535 <= getattr(self, name) <= (1 << 31) - 1:
                raise ValueError(f"{name} must be within 65,535 .. 2^31-1")
        for name in (
            "max_concurrent_streams",
            "max_header_list_bytes",
            "max_message_bytes",
            "max_connection_buffer_bytes",
            "control_frame_burst",
            "rapid_reset_min_streams",
            "write_buffer_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; `spend` says whether one was left."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._stamp = now

    def spend(self, now: float) -> bool:
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def earn(self) -> None:
        """A frame that carried real work pays for one control frame."""
        if self._tokens < self._burst:
            self._tokens += 1.0


class RapidResets:
    """Counts streams opened and streams the peer reset before they delivered anything."""

    __slots__ = ("_min", "_ratio", "opened", "premature")

    def __init__(self, min_streams: int, ratio: float) -> None:
        self._min = min_streams
        self._ratio = ratio
        self.opened = 0
        self.premature = 0

    def stream_opened(self) -> None:
        self.opened += 1

    def premature_reset(self) -> bool:
        """Count one; True when the peer is now resetting streams as an attack would."""
        self.premature += 1
        return self.premature >= self._min and self.premature > self._ratio * self.opened
