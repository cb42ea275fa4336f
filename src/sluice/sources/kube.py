"""`KubeSource`: keep a `PoolState` current from the cluster with list+watch.

Four watches, all in the pool's namespace: the InferencePool itself, its Pods (the pool's label
selector; re-listed whenever the selector changes), and the InferenceObjectives and
InferenceModelRewrites. Each is a list followed by watches resumed from the last
resourceVersion seen (events and bookmarks move it); 410 Gone means the history we would resume
from is gone, so we relist, and a list replaces everything we knew of that kind. Errors back off
exponentially. The event handling itself is pure (`kube_events.ClusterView`); this is the shell.

Objectives and rewrites may be served by two API groups. Discovery decides, per kind, as upstream
does: `llm-d.ai` when its CRD is installed (objects of the legacy group are then ignored, logged
once), else `inference.networking.x-k8s.io` (with a deprecation warning, once). A kind no group
serves is read as empty, and discovery is asked again every `rediscover_seconds`; so is it when
the watched group's CRD disappears (the list answers 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.api.groups import deprecation_hint, is_deprecated
from sluice.logs import get_logger
from sluice.sources.kube_client import ApiError, Gone, list_objects, served_kinds, watch_events
from sluice.sources.kube_events import (
    OBJECTIVES,
    PODS,
    POOLS,
    REWRITES,
    ClusterView,
    Kind,
    Parser,
    default_parser,
    resource_version_of,
)
from sluice.sources.state import PoolKey, PoolState

log = get_logger("sluice.sources.kube")


@dataclass
class Backoff:
    """Exponential backoff with full jitter, reset by a success."""

    initial: float = 0.2
    maximum: float = 10.0
    _next: float = 0.0

    def delay(self) -> float:
        self._next = min(self.maximum, max(self.initial, self._next * 2))
        return random.uniform(self._next / 2, self._next)

    def reset(self) -> None:
        self._next = 0.0


class KubeSource:
    """Publishes a new `PoolState` through `on_state` on every change that matters.

    `synced` is set once the pool, objectives, rewrites and (if there is a pool) its Pods have
    been listed. `on_change` is called after every applied change (the status writer listens).
    """

    def __init__(
        self,
        pool_key: PoolKey,
        on_state: Callable[[PoolState], None],
        api_client: Any,
        *,
        parse: Parser = default_parser,
        watch_timeout_seconds: int = 300,
        backoff_initial: float = 0.2,
        backoff_maximum: float = 10.0,
        on_change: Callable[[], None] | None = None,
        static_pool: dict[str, Any] | None = None,
        rediscover_seconds: float = 10.0,
    ) -> None:
        self.key = pool_key
        # Standalone mode (`--endpoint-selector`): a pool made from flags, no CRDs watched.
        self._static_pool = static_pool
        self.view = ClusterView(pool_key, parse)
        self.synced = asyncio.Event()
        self.relists: Counter[str] = Counter()  # plural → how many lists (1 = never resynced)
        self._on_state = on_state
        self._on_change = on_change
        self._api = api_client
        self._watch_timeout = watch_timeout_seconds
        self._backoff = (backoff_initial, backoff_maximum)
        self._listed: set[str] = set()
        self._pods_selector: str | None = None
        self._selector_changed = asyncio.Event()
        self._state: PoolState | None = None
        self._rediscover = rediscover_seconds
        # snapshot field ("objectives" | "rewrites") → the group being read, or "" for none
        self.groups_used: dict[str, str] = {}

    @property
    def state(self) -> PoolState | None:
        return self._state

    async def run(self) -> None:
        """Watch until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            if self._static_pool is not None:
                self._listed.update({OBJECTIVES.plural, REWRITES.plural})
                self._changed(POOLS, self.view.replace_all(POOLS, [self._static_pool]), True)
            else:
                field = f"metadata.name={self.key.name}"
                tasks.create_task(self._list_and_watch(POOLS, field=field))
                tasks.create_task(self._watch_served_group(OBJECTIVES))
                tasks.create_task(self._watch_served_group(REWRITES))
            tasks.create_task(self._follow_pod_selector())

    # ---- which group to read ---------------------------------------------------------------

    async def _watch_served_group(self, kind: Kind) -> None:
        """Discover which group serves `kind`, then list and watch it there."""
        backoff = Backoff(*self._backoff)
        while True:
            try:
                served = [
                    group
                    for group in kind.groups
                    if kind.kind in await served_kinds(self._api, group, kind.version)
                ]
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = backoff.delay()
                log.warning("discovery failed, retrying", kind=kind.kind, error=repr(err))
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self._use_group(kind, served)
            if not served:
                self._changed(kind, self.view.replace_all(kind, []), listed=True)
                await asyncio.sleep(self._rediscover)
                continue
            await self._list_and_watch(kind.in_group(served[0]), until_not_found=True)

    def _use_group(self, kind: Kind, served: list[str]) -> None:
        """Log the choice once, and again only when it changes."""
        group = served[0] if served else ""
        if self.groups_used.get(kind.snapshot_field) == group:
            return
        self.groups_used[kind.snapshot_field] = group
        if not group:
            log.warning(
                f"no {kind.kind} CRD installed; the pool has none",
                kind=kind.kind,
                groups=",".join(kind.groups),
                fix="install the CRDs (`sluice crds --group llm-d.ai | kubectl apply -f -`)",
            )
        elif len(served) > 1:
            log.warning(
                f"{kind.kind} is served by {' and '.join(served)}; reading {group} only, as "
                "upstream does (objects of the other group are ignored)",
                kind=kind.kind,
                group=group,
            )
        elif is_deprecated(group):
            log.warning(deprecation_hint(kind.kind), kind=kind.kind, group=group)
        else:
            log.info(f"reading {kind.kind} from {group}", kind=kind.kind, group=group)

    # ---- the per-kind loop -----------------------------------------------------------------

    async def _list_and_watch(
        self,
        kind: Kind,
        labels: str | None = None,
        field: str | None = None,
        *,
        until_not_found: bool = False,
    ) -> None:
        """List and watch until cancelled; with `until_not_found`, return when the resource is
        no longer served (404), so the caller can ask discovery again."""
        backoff = Backoff(*self._backoff)
        ns = self.key.namespace
        resume_from: str | None = None
        while True:
            try:
                if resume_from is None:
                    items, resume_from = await list_objects(self._api, kind, ns, labels, field)
                    self.relists[kind.plural] += 1
                    self._changed(kind, self.view.replace_all(kind, items), listed=True)
                events = watch_events(
                    self._api, kind, ns, resume_from, self._watch_timeout, labels, field
                )
                async for event_type, obj in events:
                    resume_from = resource_version_of(obj) or resume_from
                    self._changed(kind, self.view.apply(kind, event_type, obj))
                    backoff.reset()
            except Gone:
                log.info("watch expired, relisting", resource=kind.plural)
                resume_from = None
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if until_not_found and err.status == 404:
                    log.warning("resource no longer served", resource=f"{kind.plural}.{kind.group}")
                    return
                delay = backoff.delay()
                log.warning(
                    "watch failed, retrying", resource=kind.plural, error=repr(err), delay=delay
                )
                await asyncio.sleep(delay)
            except Exception as err:
                delay = backoff.delay()
                log.warning(
                    "watch failed, retrying", resource=kind.plural, error=repr(err), delay=delay
                )
                await asyncio.sleep(delay)

    async def _follow_pod_selector(self) -> None:
        """One Pod watch for the pool's current selector; a new selector means a new list."""
        pods: asyncio.Task[None] | None = None
        try:
            while True:
                await self._selector_changed.wait()
                self._selector_changed.clear()
                selector = self.view.pod_selector()
                if pods is not None and selector == self._pods_selector:
                    continue
                if pods is not None:
                    pods.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pods
                    pods = None
                self._pods_selector = selector
                self._listed.discard(PODS.plural)
                if selector is None:  # no pool: no endpoints
                    self._changed(PODS, self.view.replace_all(PODS, []), listed=True)
                    continue
                log.info("watching pods", selector=selector, namespace=self.key.namespace)
                pods = asyncio.create_task(self._list_and_watch(PODS, labels=selector))
        finally:
            if pods is not None:
                pods.cancel()

    # ---- publishing ------------------------------------------------------------------------

    def _changed(self, kind: Kind, changed: bool, listed: bool = False) -> None:
        if listed:
            self._listed.add(kind.plural)
        if kind is POOLS and (changed or listed):
            self._selector_changed.set()
        was_synced = self.synced.is_set()
        if not was_synced and self._all_listed():
            self.synced.set()
        if changed or (self.synced.is_set() and not was_synced):
            self._state = self.view.state()
            self._on_state(self._state)
            if self._on_change is not None:
                self._on_change()

    def _all_listed(self) -> bool:
        needed = {POOLS.plural, OBJECTIVES.plural, REWRITES.plural}
        if self.view.pod_selector() is not None:
            needed.add(PODS.plural)
        return needed <= self._listed
