"""The replicas' Prometheus metrics (docs/metrics.md): store reachability, fall-backs and
rejoins, peers, sync time and bytes, leases, shared prefix entries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ReplicaMetrics:
    def __init__(self, registry: CollectorRegistry, replica: str) -> None:
        labels = {"replica": replica}
        self.connected = Gauge(
            "sluice_replicas_store_connected",
            "1 while the last sync reached the shared store; 0: local-only flow control.",
            ["replica"],
            registry=registry,
        ).labels(**labels)
        self.fallbacks = Counter(
            "sluice_replicas_fallbacks",
            "Times this replica fell back to local-only flow control (store unreachable).",
            ["replica"],
            registry=registry,
        ).labels(**labels)
        self.rejoins = Counter(
            "sluice_replicas_rejoins",
            "Times this replica rejoined the pool-wide order after a fall-back.",
            ["replica"],
            registry=registry,
        ).labels(**labels)
        self.peers = Gauge(
            "sluice_replicas_peers",
            "Other live replicas seen in the last sync.",
            ["replica"],
            registry=registry,
        ).labels(**labels)
        self.sync_seconds = Histogram(
            "sluice_replicas_sync_duration_seconds",
            "Wall time of one sync with the store (summary, leases, peers, prefixes).",
            ["replica"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        ).labels(**labels)
        bytes_ = Counter(
            "sluice_replicas_sync_bytes",
            "Bytes of summaries and prefix entries sent to and read from the store.",
            ["replica", "direction"],
            registry=registry,
        )
        self.bytes_sent = bytes_.labels(replica=replica, direction="sent")
        self.bytes_received = bytes_.labels(replica=replica, direction="received")
        self.lease = Gauge(
            "sluice_replicas_lease",
            "This replica's lease on each endpoint's in-flight cap (-1: none, the whole cap).",
            ["replica", "endpoint"],
            registry=registry,
        )
        self.replica = replica
        self._leases: dict[str, Gauge] = {}  # set every sync: children kept

    def set_lease(self, endpoint: str, lease: int) -> None:
        child = self._leases.get(endpoint)
        if child is None:
            child = self._leases[endpoint] = self.lease.labels(
                replica=self.replica, endpoint=endpoint
            )
        child.set(lease)

    def clear_leases(self) -> None:
        self.lease.clear()
        self._leases.clear()
