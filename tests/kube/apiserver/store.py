"""The object store behind the test API server: resourceVersions, generations, the /status
split, optimistic concurrency and a bounded event history for watches. No HTTP here."""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .patches import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import ResourceType

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
}

Obj = dict[str, Any]


def _pending(condition_type: str) -> Obj:
    return {
        "type": condition_type,
        "status": "Unknown",
        "reason": "Pending",
        "message": "Waiting for controller",
        "lastTransitionTime": "1970-01-01T00:00:00Z",
    }


# The `default:` of each CRD's status schema (spec/crds/*.yaml), applied as the server applies it.
CRD_STATUS_DEFAULTS: dict[str, Obj] = {
    "InferenceObjective": {"conditions": [_pending("Ready")]},
    "InferenceModelRewrite": {"conditions": [_pending("Accepted")]},
}


class ApiError(Exception):
    """Becomes a `Status` object, the way every kube-apiserver error is reported."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "InternalError")

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Event:
    """One change. `previous` lets a filtered watch turn "stopped matching" into DELETED."""

    resource_version: int
    group: str
    plural: str
    type: str  # ADDED | MODIFIED | DELETED
    object: Obj
    previous: Obj | None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


def _strip_volatile(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    out.get("metadata", {}).pop("resourceVersion", None)
    return out


class Store:
    def __init__(self, history_limit: int = 500) -> None:
        self.resource_version = 1000  # "0" means "any version" in a request; never hand it out
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._history: deque[Event] = deque()
        self._history_limit = history_limit
        self._oldest_watchable = 1000  # watching from a resourceVersion below this → 410 Gone
        self._subscribers: set[asyncio.Queue[Event]] = set()

    # ---- reads -----------------------------------------------------------------------------

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault((rt.group, rt.plural), {})

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._bucket(rt).get((namespace, name))
        if obj is None:
            group = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            raise ApiError(404, f'{group} "{name}" not found')
        return copy.deepcopy(obj)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        matches: Callable[[Obj], bool] = lambda obj: True,
    ) -> list[Obj]:
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self._bucket(rt).items())
            if (namespace is None or ns == namespace) and matches(obj)
        ]
        return items

    # ---- writes ----------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        self._validate_name(rt, name)
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "the namespace of the provided object does not match")
            meta["namespace"] = namespace
        if (namespace, name) in self._bucket(rt):
            raise ApiError(409, f'{rt.plural} "{name}" already exists', "AlreadyExists")
        if meta.get("resourceVersion"):
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if rt.has_status:  # status is the controllers' to write, via /status: create drops it
            obj.pop("status", None)
        default = CRD_STATUS_DEFAULTS.get(rt.kind)
        if default is not None:
            obj["status"] = copy.deepcopy(default)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        return self._commit(rt, namespace, name, obj, "ADDED", None)

    def replace(
        self, rt: ResourceType, namespace: str, name: str, body: Obj, subresource: str = ""
    ) -> Obj:
        old = self.get(rt, namespace, name)
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise ApiError(400, "the name of the object does not match the name on the URL")
        return self._update(rt, old, copy.deepcopy(body), subresource)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str = "",
    ) -> Obj:
        old = self.get(rt, namespace, name)
        try:
            if content_type == "application/merge-patch+json":
                patched = merge_patch(old, patch)
            elif content_type == "application/json-patch+json":
                patched = json_patch(old, patch)
            elif content_type == "application/strategic-merge-patch+json":
                if rt.group != "" and rt.kind != "Lease":
                    raise ApiError(
                        415, "strategic merge patch is not supported for custom resources"
                    )
                patched = strategic_merge_patch(old, patch)
            else:
                raise ApiError(
                    415, f"the body of the request was in an unknown format: {content_type}"
                )
        except PatchError as err:
            raise ApiError(422, str(err)) from err
        return self._update(rt, old, patched, subresource)

    def delete(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        old = self.get(rt, namespace, name)
        del self._bucket(rt)[(namespace, name)]
        self.resource_version += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.resource_version)
        self._record(Event(self.resource_version, rt.group, rt.plural, "DELETED", gone, old))
        return gone

    def _update(self, rt: ResourceType, old: Obj, new: Obj, subresource: str) -> Obj:
        meta = new.setdefault("metadata", {})
        expected = meta.get("resourceVersion")
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {rt.plural} "{old["metadata"]["name"]}": the '
                "object has been modified; please apply your changes to the latest version and "
                "try again",
            )
        if subresource == "status":
            # A /status write changes status only; spec and metadata are ignored.
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            if rt.has_status:  # and a main-resource write ignores status
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            for system in ("uid", "creationTimestamp", "generation", "namespace", "name"):
                if system in old["metadata"]:
                    result["metadata"][system] = old["metadata"][system]
                else:
                    result["metadata"].pop(system, None)
            if _without(result, "metadata", "status") != _without(old, "metadata", "status"):
                result["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        result["apiVersion"], result["kind"] = rt.api_version, rt.kind
        self._validate(rt, result)
        if _strip_volatile(result) == _strip_volatile(old):
            return old  # a no-op write: no new resourceVersion, no watch event
        namespace, name = old["metadata"].get("namespace", ""), old["metadata"]["name"]
        return self._commit(rt, namespace, name, result, "MODIFIED", old)

    def _commit(
        self, rt: ResourceType, namespace: str, name: str, obj: Obj, kind: str, old: Obj | None
    ) -> Obj:
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        self._bucket(rt)[(namespace, name)] = obj
        self._record(
            Event(self.resource_version, rt.group, rt.plural, kind, copy.deepcopy(obj), old)
        )
        return copy.deepcopy(obj)

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        if not name:
            raise ApiError(422, f"{rt.kind}.metadata.name: Required value: name is required")
        if len(name) > 253 or not _NAME_RE.match(name):
            raise ApiError(
                422,
                f'{rt.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a '
                "lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.'",
            )

    def _validate(self, rt: ResourceType, obj: Obj) -> None:
        if rt.kind == "Lease":
            duration = (obj.get("spec") or {}).get("leaseDurationSeconds")
            if duration is not None and (not isinstance(duration, int) or duration <= 0):
                raise ApiError(
                    422,
                    f'Lease "{obj["metadata"]["name"]}" is invalid: spec.leaseDurationSeconds: '
                    "Invalid value: must be greater than 0",
                )
        if rt.kind == "InferenceObjective":
            conditions = (obj.get("status") or {}).get("conditions") or []
            if len(conditions) > 8:
                raise ApiError(
                    422,
                    f'InferenceObjective "{obj["metadata"]["name"]}" is invalid: '
                    "status.conditions: Too many: must have at most 8 items",
                )

    # ---- watch history ---------------------------------------------------------------------

    def _record(self, event: Event) -> None:
        self._history.append(event)
        while len(self._history) > self._history_limit:
            dropped = self._history.popleft()
            self._oldest_watchable = dropped.resource_version
        for queue in self._subscribers:
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)

    def events_after(self, rt: ResourceType, resource_version: int) -> list[Event]:
        """Events of this resource newer than `resource_version`; 410 Gone if history that old
        has been dropped."""
        if resource_version < self._oldest_watchable:
            raise ApiError(
                410,
                f"too old resource version: {resource_version} ({self._oldest_watchable})",
                "Expired",
            )
        return [
            e
            for e in self._history
            if e.resource_version > resource_version
            and (e.group, e.plural) == (rt.group, rt.plural)
        ]

    def compact(self) -> None:
        """Forget all history, like etcd compaction: every watch that resumes from an older
        resourceVersion gets 410 Gone and must relist."""
        self.resource_version += 1
        self._oldest_watchable = self.resource_version
        self._history.clear()


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}
