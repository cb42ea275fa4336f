"""Wiring a replica into `sluice serve` from its flags: the one call the app makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from sluice.director import Director
from sluice.logs import get_logger
from sluice.replicas.core import ReplicaCore
from sluice.replicas.metrics import ReplicaMetrics
from sluice.replicas.prefix_share import PrefixShare
from sluice.replicas.settings import replica_settings
from sluice.replicas.shell import EnqueueTee, ReplicaSync
from sluice.replicas.store import RedisStore
from sluice.scheduling.precise_scorer import PrecisePrefixCacheScorer
from sluice.scheduling.prefix_scorer import PrefixCacheScorer
from sluice.scheduling.scheduler import Scheduler

log = get_logger("replicas")


def start_replicas(
    values: Mapping[str, Any],
    *,
    pool: str,
    director: Director,
    scheduler: Scheduler,
    metrics_registry: CollectorRegistry,
) -> ReplicaSync | None:
    """Start syncing with the other replicas if `--replicas-store` is set (else None)."""
    settings = replica_settings(values)
    if not settings.enabled:
        return None
    core = ReplicaCore(
        settings.replica_id,
        flow=director.flow,
        registry=director.registry,
        room=director.room,
        lease_s=settings.lease_s,
    )
    scorers = {
        id(scorer): scorer
        for profile in scheduler.profiles.values()
        for scorer, _ in profile.scorers
        # precise routing reads the engines' own KV events: nothing to share
        if isinstance(scorer, PrefixCacheScorer)
        and not isinstance(scorer, PrecisePrefixCacheScorer)
    }
    sync = ReplicaSync(
        core,
        # A sync unanswered within the timeout counts as the store being unreachable.
        RedisStore(
            settings.store,
            pool,
            timeout_s=settings.store_timeout_s,
            share_prefixes=bool(scorers),
        ),
        interval_s=settings.sync_interval_s,
        registry=director.registry,
        pump=director.pump,
        metrics=ReplicaMetrics(metrics_registry, settings.replica_id),
        prefix=PrefixShare(scorers.values()) if scorers else None,
    )
    director.flow.observer = EnqueueTee(director.flow.observer, sync)
    sync.start()
    log.info(
        "replicas: active-active",
        replica=settings.replica_id,
        store=settings.store,
        sync_interval=f"{settings.sync_interval_s:g}s",
        lease=f"{settings.lease_s:g}s",
        store_timeout=f"{settings.store_timeout_s:g}s",
        shared_prefix_index=bool(scorers),
    )
    return sync
