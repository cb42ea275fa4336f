"""The status writer: Sluice's own conditions on the InferenceObjectives and
InferenceModelRewrites of its pool. Leader only.

Objective: `Accepted` True/`Accepted`, and `Ready` (replacing the CRD default
`Ready/Unknown/Pending`) True/`Ready` while the pool has serving endpoints, else False with
`NoReadyEndpoints` (or `PoolNotFound`). Rewrite: `Accepted` True/`Accepted`.

How it writes, and why: `status.conditions` is a list-map keyed by `type`, but a JSON merge patch
replaces a list whole. So this is read-modify-write: start from the object as last seen, replace
only our condition types (other controllers' entries are copied through untouched), and send a
merge patch to `/status` that carries `metadata.resourceVersion`. The API server treats that as a
precondition: if anyone wrote the object since we read it, the patch fails with 409 and we
re-read and retry, so a foreign condition written in between is never lost. (Server-side apply
would also work but needs managedFields bookkeeping; a JSON patch on list indexes races.)
`lastTransitionTime` moves only when a condition's status changes; nothing is written when
nothing would change, so our own write's watch event settles instead of looping.

Conditions go to the API group each object was read from (its `apiVersion`): the group the
source reconciles, `llm-d.ai` or the legacy one, never the other.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.logs import get_logger
from sluice.sources.kube_events import OBJECTIVES, REWRITES, ClusterView, Kind
from sluice.sources.state import PoolState

log = get_logger("sluice.sources.status")

MAX_CONDITIONS = 8
MERGE_PATCH = "application/merge-patch+json"
Obj = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, status: bool, reason: str, message: str, generation: int, now: str) -> Obj:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    }


def objective_conditions(state: PoolState, generation: int, now: str) -> list[Obj]:
    pool = f"{state.key.namespace}/{state.key.name}"
    if not state.loaded:
        ready = condition(
            "Ready", False, "PoolNotFound", f"InferencePool {pool} not found", generation, now
        )
    elif state.endpoints:
        ready = condition(
            "Ready", True, "Ready", f"InferencePool {pool} has serving endpoints", generation, now
        )
    else:
        ready = condition(
            "Ready",
            False,
            "NoReadyEndpoints",
            f"InferencePool {pool} has no ready endpoints",
            generation,
            now,
        )
    accepted = condition(
        "Accepted", True, "Accepted", f"Accepted by the endpoint picker of {pool}", generation, now
    )
    return [accepted, ready]


def rewrite_conditions(state: PoolState, generation: int, now: str) -> list[Obj]:
    pool = f"{state.key.namespace}/{state.key.name}"
    message = f"Accepted by the endpoint picker of {pool}"
    return [condition("Accepted", True, "Accepted", message, generation, now)]


def merge_own_conditions(existing: Sequence[Mapping[str, Any]], own: Sequence[Obj]) -> list[Obj]:
    """`existing` with our condition types set. Foreign entries stay as they are, in place; an
    unchanged status keeps its `lastTransitionTime`; a new type is appended only while the list
    has fewer than eight entries (never dropping another controller's condition to make room)."""
    merged = [dict(c) for c in existing]
    for update in own:
        index = next((i for i, c in enumerate(merged) if c.get("type") == update["type"]), None)
        if index is None:
            if len(merged) < MAX_CONDITIONS:
                merged.append(dict(update))
            else:
                log.warning("status.conditions is full; not adding", type=update["type"])
            continue
        current = merged[index]
        new = dict(update)
        if current.get("status") == update["status"] and current.get("lastTransitionTime"):
            new["lastTransitionTime"] = current["lastTransitionTime"]
        merged[index] = new
    return merged


def status_patch(obj: Mapping[str, Any], own: Sequence[Obj]) -> Obj | None:
    """The merge patch for `obj`'s /status, or None when it already says all this."""
    existing = (obj.get("status") or {}).get("conditions") or []
    merged = merge_own_conditions(existing, own)
    if merged == existing:
        return None
    return {
        "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
        "status": {"conditions": merged},
    }


ConditionsFor = Callable[[PoolState, int, str], list[Obj]]
_RULES: tuple[tuple[Kind, ConditionsFor], ...] = (
    (OBJECTIVES, objective_conditions),
    (REWRITES, rewrite_conditions),
)


def served_as(kind: Kind, obj: Mapping[str, Any]) -> Kind:
    """`kind` in the group and version `obj` was read from."""
    group, _, version = str(obj.get("apiVersion") or "").rpartition("/")
    return replace(kind, group=group or kind.group, version=version or kind.version)


class StatusWriter:
    """Keeps the conditions true. `notify()` after any change (the source's `on_change`, and on
    becoming leader); `run()` writes while `is_leader()`."""

    def __init__(
        self,
        api_client: Any,
        view: ClusterView,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retries: int = 5,
    ) -> None:
        self._custom: Any = client.CustomObjectsApi(api_client)
        self._view = view
        self._is_leader = is_leader
        self._clock = clock
        self._retries = retries
        self._dirty = asyncio.Event()
        self.writes = 0

    def notify(self) -> None:
        self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not self._is_leader():
                continue
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("status write failed; will retry", error=repr(err))
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def reconcile(self) -> int:
        """Write every object of the pool whose conditions are not yet right; return how many."""
        state = self._view.state()
        written = 0
        for kind, rule in _RULES:
            table = state.objectives if kind is OBJECTIVES else state.rewrites
            for key in list(table):
                raw = self._view.raw[kind.snapshot_field].get(key)
                if raw is not None and await self._write(served_as(kind, raw), raw, state, rule):
                    written += 1
        self.writes += written
        return written

    async def _write(self, kind: Kind, obj: Obj, state: PoolState, rule: ConditionsFor) -> bool:
        meta = obj["metadata"]
        args = (kind.group, kind.version, meta["namespace"], kind.plural, meta["name"])
        for _ in range(self._retries):
            own = rule(state, int(meta.get("generation") or 0), rfc3339(self._clock()))
            patch = status_patch(obj, own)
            if patch is None:
                return False
            try:
                await self._custom.patch_namespaced_custom_object_status(
                    *args, patch, _content_type=MERGE_PATCH
                )
                return True
            except ApiException as err:
                if err.status == 404:
                    return False  # deleted meanwhile; the watch will tell the view
                if err.status != 409:
                    raise
            # Someone wrote it since we read it: read again and redo our part.
            obj = await self._custom.get_namespaced_custom_object(*args)
            meta = obj["metadata"]
        raise RuntimeError(
            f"status of {kind.plural} {meta['name']} kept conflicting: {json.dumps(args)}"
        )
