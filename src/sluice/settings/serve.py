"""`ServeSettings`: what `sluice serve` was told, as typed fields (durations in seconds).

Field names are the flag names with `-` as `_` (`--grpc-port` → `grpc_port`); the flag table
(`sluice.cli.serve_options.SERVE_FLAGS`) declares defaults, help and the valid values, and
`tests/cli/test_flag_table.py` keeps the two in step (names, types, choices) and every flag
wired."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

_VERBOSITY = {"trace": 5, "debug": 4}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSettings:
    # Pool and discovery
    pool_name: str
    pool_namespace: str
    pool_group: str
    endpoint_selector: str
    endpoint_target_ports: str
    # Servers
    grpc_port: int
    grpc_health_port: int
    metrics_port: int
    secure_serving: bool
    cert_path: str
    enable_cert_reload: bool
    health_checking: bool
    metrics_endpoint_auth: bool
    enable_pprof: bool
    tracing: bool
    # Configuration
    config_file: str
    config_text: str
    # Model-server metrics
    refresh_metrics_interval: float
    refresh_prometheus_metrics_interval: float
    metrics_staleness_threshold: float
    total_queued_requests_metric: str
    total_running_requests_metric: str
    kv_cache_usage_percentage_metric: str
    lora_info_metric: str
    cache_info_metric: str
    model_server_metrics_path: str
    model_server_metrics_scheme: Literal["http", "https"]
    model_server_metrics_port: int
    model_server_metrics_https_insecure_skip_verify: bool
    model_server_metrics_https_ca_file: str
    # Routing, shutdown and HA
    disable_endpoint_subset_filter: bool
    emit_endpoint_scores: bool
    drain_timeout: float
    replicas_store: str
    replica_id: str
    replicas_sync_interval: float
    replicas_lease: float
    replicas_store_timeout: float
    ha_enable_leader_election: bool
    # Logging
    v: int
    log_level: str
    zap_encoder: Literal["", "json", "console"]
    zap_log_level: str
    zap_devel: bool
    zap_stacktrace_level: str
    zap_time_encoding: str
    # Sluice's own
    resources: str
    proxy_port: int
    proxy_host: str
    proxy_allowed_routes: str
    engine_keepalive_timeout: float
    request_header_timeout: float
    request_body_timeout: float
    engine_first_byte_timeout: float
    outlier_consecutive_failures: int
    outlier_base_ejection: float
    grpc_host: str
    ext_proc_transport: Literal["h2", "hyper", "grpc"]
    disable_extproc: bool
    log_format: Literal["console", "json", "text"]
    max_body_bytes: int
    max_model_len: int
    keep_control_headers: bool
    engine: Literal["vllm", "sglang", "trtllm", "llamacpp"]
    metric_names: Literal["both", "llm-d", "gie"]
    decision_receipts: int
    decision_receipts_max_bytes: int
    # flag names given on the command line (a default and an explicit value can differ in
    # meaning: an explicit empty metric spec overrides the engine profile's)
    explicitly_set: frozenset[str] = field(default=frozenset())

    @classmethod
    def from_flags(
        cls, values: Mapping[str, Any], explicitly_set: frozenset[str] = frozenset()
    ) -> ServeSettings:
        """From parsed flag values keyed by flag name (`grpc-port`)."""
        return cls(
            **{name.replace("-", "_"): value for name, value in values.items()},
            explicitly_set=explicitly_set,
        )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "explicitly_set")

    @property
    def namespace(self) -> str:
        """The pool's namespace: the flag, else $NAMESPACE, else 'default' (as upstream)."""
        return self.pool_namespace or os.environ.get("NAMESPACE") or "default"

    @property
    def verbosity(self) -> int:
        """klog's -v, raised by --log-level or --zap-log-level debug/trace."""
        for level in (self.log_level, self.zap_log_level):
            if level.lower() in _VERBOSITY:
                return _VERBOSITY[level.lower()]
        return self.v

    @property
    def log_output(self) -> str:
        """console or json: --zap-encoder (upstream's charts) wins over --log-format."""
        if "zap-encoder" in self.explicitly_set and self.zap_encoder:
            return "json" if self.zap_encoder == "json" else "console"
        return self.log_format

    @property
    def metric_specs(self) -> dict[str, str | None]:
        """The five metric-spec flags given explicitly (None: the engine profile's)."""
        given = {
            "total_queued_requests_metric": self.total_queued_requests_metric,
            "total_running_requests_metric": self.total_running_requests_metric,
            "kv_cache_usage_percentage_metric": self.kv_cache_usage_percentage_metric,
            "lora_info_metric": self.lora_info_metric,
            "cache_info_metric": self.cache_info_metric,
        }
        return {
            name: value if name.replace("_", "-") in self.explicitly_set else None
            for name, value in given.items()
        }

    def replica_flags(self) -> dict[str, object]:
        """The active-active replica flags by name, as `sluice.replicas.settings` reads them."""
        return {
            "replicas-store": self.replicas_store,
            "replica-id": self.replica_id,
            "replicas-sync-interval": self.replicas_sync_interval,
            "replicas-lease": self.replicas_lease,
            "replicas-store-timeout": self.replicas_store_timeout,
        }
