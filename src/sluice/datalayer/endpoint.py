"""Endpoints and the metrics Sluice knows about them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One model-server endpoint: a Pod's IP and one of the pool's target ports.

    `name` follows upstream (`<pod>-rank-<index of the target port>`); `metrics_port` is where its
    Prometheus `/metrics` is scraped.
    """

    name: str
    address: str
    port: int
    pod_name: str = ""
    namespace: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    metrics_port: int | None = None
    # `ip:port` (`[ip]:port` for IPv6), made once: the scheduler's records, receipts, headers and
    # metrics name endpoints by it on every request
    hostport: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        address = f"[{self.address}]" if ":" in self.address else self.address
        object.__setattr__(self, "hostport", f"{address}:{self.port}")

    @property
    def metrics_hostport(self) -> str:
        port = self.metrics_port if self.metrics_port is not None else self.port
        if ":" in self.address:
            return f"[{self.address}]:{port}"
        return f"{self.address}:{port}"


@dataclass(slots=True)
class EngineMetrics:
    """What one scrape of an engine's `/metrics` told us. `updated_at` is the scrape time.

    `kv_cache_known` is False when the page had no KV-usage series (llama.cpp builds without
    `llamacpp:kv_cache_usage_ratio`, or a metric renamed by an upgrade): `kv_cache_usage` is then
    0.0 and means nothing, and rules that need it step aside. `missing_metrics` lists the specs
    of the engine profile's load metrics (waiting, running, KV usage) the page lacked.
    """

    waiting: int = 0
    running: int = 0
    kv_cache_usage: float = 0.0
    active_adapters: frozenset[str] = frozenset()
    waiting_adapters: frozenset[str] = frozenset()
    max_adapters: int = 0
    cache_block_size: int = 0
    cache_num_blocks: int = 0
    updated_at: float = float("-inf")
    extra: dict[str, float] = field(default_factory=dict)
    # The engine's own cumulative prefill counters, where its profile names them (None: the
    # engine does not say): requests that produced a first token, the seconds those waited for
    # it, prompt tokens of those requests and how many of them came from the prefix cache.
    # The room learns each endpoint's prefill rate from their differences between scrapes and
    # ends a pending prefill when the engine reports its first token (`sluice.room`).
    first_tokens: float | None = None
    first_token_seconds: float | None = None
    prompt_tokens: float | None = None
    cached_prompt_tokens: float | None = None
    kv_cache_known: bool = True
    missing_metrics: tuple[str, ...] = ()

    def restamped(self, updated_at: float) -> EngineMetrics:
        """A copy stamped `updated_at`. Hot path (every scrape): `dataclasses.replace` costs
        several times more. `test_restamped_copies_every_field` guards new fields."""
        return EngineMetrics(
            self.waiting,
            self.running,
            self.kv_cache_usage,
            self.active_adapters,
            self.waiting_adapters,
            self.max_adapters,
            self.cache_block_size,
            self.cache_num_blocks,
            updated_at,
            self.extra,
            self.first_tokens,
            self.first_token_seconds,
            self.prompt_tokens,
            self.cached_prompt_tokens,
            self.kv_cache_known,
            self.missing_metrics,
        )
