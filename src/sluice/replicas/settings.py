"""`--replicas-*` flags, checked: what one replica needs to join the others."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The bound: a higher band waiting on another replica is seen within this.
MAX_SYNC_INTERVAL_DEFAULT_S = 0.05
# How long a sync may go unanswered before the replica falls back to local-only: five default
# intervals. Two intervals (100 ms, the earlier rule) fell back several times a minute on a
# machine at load average 15-20 whose store was reachable all along (docs/replicas.md).
STORE_TIMEOUT_DEFAULT_S = 0.25


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    store: str  # "" = this replica alone
    replica_id: str
    sync_interval_s: float = MAX_SYNC_INTERVAL_DEFAULT_S
    lease_s: float = 1.0
    store_timeout_s: float = STORE_TIMEOUT_DEFAULT_S

    @property
    def enabled(self) -> bool:
        return bool(self.store)


def default_replica_id() -> str:
    """$POD_NAME in Kubernetes (the Downward API), else host and process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def replica_settings(values: Mapping[str, Any]) -> ReplicaSettings:
    """From `sluice serve` flag values; raises ValueError naming the flag and the fix."""
    store = str(values["replicas-store"])
    interval = float(values["replicas-sync-interval"])
    lease = float(values["replicas-lease"])
    timeout = float(values["replicas-store-timeout"])
    if timeout == 0:
        timeout = min(max(STORE_TIMEOUT_DEFAULT_S, interval), lease / 2)
    if store:
        problem = check_store_url(store)
        if problem is not None:
            raise ValueError(problem)
    if not 0 < interval <= 10:
        raise ValueError(
            f"--replicas-sync-interval={interval:g}s: must be above 0 and at most 10s "
            "(e.g. 50ms; it bounds how late one replica sees another's waiting requests)"
        )
    if lease < 3 * interval:
        raise ValueError(
            f"--replicas-lease={lease:g}s: must be at least 3 sync intervals "
            f"({3 * interval:g}s), or leases lapse between two renewals; e.g. 1s"
        )
    if not interval <= timeout < lease:
        raise ValueError(
            f"--replicas-store-timeout={timeout:g}s: must be at least the sync interval "
            f"({interval:g}s) and below the lease ({lease:g}s): a shorter one gives up on syncs "
            "a busy store answers in time, a longer one cannot renew leases; e.g. 250ms"
        )
    replica_id = str(values["replica-id"]) or default_replica_id()
    if any(c in replica_id for c in " \t\n"):
        raise ValueError(f"--replica-id={replica_id!r}: no whitespace (e.g. the Pod name)")
    return ReplicaSettings(store, replica_id, interval, lease, timeout)


def check_store_url(url: str) -> str | None:
    """What is wrong with a `--replicas-store` value (None: nothing)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return (
            f"--replicas-store={url}: scheme {parts.scheme or '(none)'!r} is not a store Sluice "
            "speaks; use redis://host:6379/0 (Redis or Valkey), rediss:// or unix://"
        )
    if parts.scheme != "unix" and not parts.hostname:
        return f"--replicas-store={url}: no host; e.g. redis://sluice-store:6379/0"
    return None
