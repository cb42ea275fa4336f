"""The HTTP face of the test API server: kube-apiserver paths, verbs, watch streams, discovery,
and the two review APIs that guard /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import resources
from .resources import ResourceType
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import ApiError, Event, Obj, Store, labels_of


@dataclass
class User:
    """An identity a bearer token authenticates as, and the non-resource URLs it may GET."""

    username: str
    groups: list[str] = field(default_factory=lambda: ["system:authenticated"])
    allowed: set[tuple[str, str]] = field(default_factory=set)  # (verb, path)


@dataclass
class _Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _error(err: ApiError) -> web.Response:
    return _json(err.status(), err.code)


class ApiServer:
    """Serve the store on http://127.0.0.1:<port>. Test hooks: `compact()` (history gone → the
    next resumed watch gets 410), `drop_watches()`, `pause_watches()` / `resume_watches()`,
    `install(group)` / `uninstall(group)` for the objective and rewrite CRDs of a group.

    `objective_groups`: whose InferenceObjective / InferenceModelRewrite CRDs are installed
    (default both, `llm-d.ai` and the legacy group). Like a real API server, discovery lists
    only what is installed and every path of a missing CRD answers 404."""

    def __init__(
        self,
        history_limit: int = 500,
        bookmark_interval: float = 1.0,
        objective_groups: tuple[str, ...] = resources.OBJECTIVE_GROUPS,
    ) -> None:
        self.store = Store(history_limit)
        self.objective_groups = set(objective_groups)
        self.tokens: dict[str, User] = {}
        self.bookmark_interval = bookmark_interval
        self.requests: list[tuple[str, str]] = []  # (method, path+query): what clients did
        self._watch_closers: set[asyncio.Event] = set()
        self._watch_gate = asyncio.Event()
        self._watch_gate.set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._watch_gate.set()
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- test hooks ------------------------------------------------------------------------

    def drop_watches(self) -> None:
        for closer in list(self._watch_closers):
            closer.set()

    def compact(self) -> None:
        self.store.compact()

    def pause_watches(self) -> None:
        """End every watch and hold new ones until `resume_watches()`: a network partition."""
        self._watch_gate.clear()
        self.drop_watches()

    def resume_watches(self) -> None:
        self._watch_gate.set()

    def watch_count(self, plural: str) -> int:
        return sum(1 for m, p in self.requests if m == "WATCH" and f"/{plural}" in p)

    def install(self, group: str) -> None:
        """Install the objective and rewrite CRDs of `group`."""
        self.objective_groups.add(group)

    def uninstall(self, group: str) -> None:
        """Delete the CRDs of `group`: their objects go with them, their watches end."""
        self.objective_groups.discard(group)
        for rt in resources.RESOURCE_TYPES:
            if rt.group == group and rt not in self.served:
                for obj in self.store.list(rt, None):
                    meta = obj["metadata"]
                    self.store.delete(rt, meta.get("namespace", ""), meta["name"])
        self.drop_watches()

    @property
    def served(self) -> tuple[ResourceType, ...]:
        return resources.served_types(self.objective_groups)

    # ---- routing ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        try:
            discovery = self._discovery(parts)
            if discovery is not None:
                return _json(discovery)
            target = self._target(parts)
            return await self._dispatch(request, target)
        except ApiError as err:
            return _error(err)

    def _discovery(self, parts: list[str]) -> Obj | None:
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        served = self.served
        if parts == ["apis"]:
            groups = [
                resources.api_group(group, versions)
                for group, versions in resources.group_versions(served).items()
            ]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if len(parts) == 2 and parts[0] == "apis":
            versions = resources.group_versions(served).get(parts[1])
            if versions is None:
                raise ApiError(404, "the server could not find the requested resource")
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                **resources.api_group(parts[1], versions),
            }
        if len(parts) == 2 and parts[0] == "api":
            found = resources.resource_list("", parts[1], served)
        elif len(parts) == 3 and parts[0] == "apis":
            found = resources.resource_list(parts[1], parts[2], served)
        else:
            return None
        if found is None:
            raise ApiError(404, "the server could not find the requested resource")
        return found

    def _target(self, parts: list[str]) -> _Target:
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        rt = resources.find(group, version, rest[0], self.served)
        if rt is None or len(rest) > 3 or (len(rest) == 3 and rest[2] != "status"):
            raise ApiError(404, "the server could not find the requested resource")
        if len(rest) == 3 and not rt.has_status:
            raise ApiError(404, "the server could not find the requested resource")
        return _Target(
            rt, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else ""
        )

    async def _dispatch(self, request: web.Request, t: _Target) -> web.StreamResponse:
        method = request.method
        query = request.query
        is_watch = query.get("watch", "").lower() in ("1", "true")
        self.requests.append(("WATCH" if is_watch else method, request.path_qs))
        if t.rt.plural in ("tokenreviews", "subjectaccessreviews"):
            if method != "POST":
                raise ApiError(405, "method not allowed", "MethodNotAllowed")
            return await self._review(request, t.rt)
        if t.rt.namespaced and t.namespace is None and (t.name is not None or method != "GET"):
            raise ApiError(404, "the server could not find the requested resource")
        namespace = t.namespace or ""
        store = self.store
        if t.name is None:
            if method == "GET":
                matches = self._matcher(query)
                if is_watch:
                    return await self._watch(request, t.rt, t.namespace, matches)
                return _json(self._list(t.rt, t.namespace, matches))
            if method == "POST":
                return _json(store.create(t.rt, namespace, await self._body(request)), 201)
            raise ApiError(405, "method not allowed", "MethodNotAllowed")
        if method == "GET":
            return _json(store.get(t.rt, namespace, t.name))
        if method == "PUT":
            body = await self._body(request)
            return _json(store.replace(t.rt, namespace, t.name, body, t.subresource))
        if method == "PATCH":
            content_type = request.content_type
            body = await self._body(request)
            return _json(store.patch(t.rt, namespace, t.name, content_type, body, t.subresource))
        if method == "DELETE" and not t.subresource:
            return _json(store.delete(t.rt, namespace, t.name))
        raise ApiError(405, "method not allowed", "MethodNotAllowed")

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as err:
            raise ApiError(400, f"invalid JSON body: {err}") from err

    @staticmethod
    def _matcher(query: Any) -> Callable[[Obj], bool]:
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"))
        except SelectorError as err:
            raise ApiError(400, str(err)) from err
        return lambda obj: labels(labels_of(obj)) and fields(obj)

    def _list(self, rt: ResourceType, namespace: str | None, matches: Callable[[Obj], bool]) -> Obj:
        return {
            "apiVersion": rt.api_version,
            "kind": f"{rt.kind}List",
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": self.store.list(rt, namespace, matches),
        }

    # ---- watch -----------------------------------------------------------------------------

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        matches: Callable[[Obj], bool],
    ) -> web.StreamResponse:
        await self._watch_gate.wait()
        query = request.query
        timeout = float(query.get("timeoutSeconds", "1800"))
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        since = query.get("resourceVersion", "")
        queue = self.store.subscribe()  # before reading history, so nothing falls in between
        closer = asyncio.Event()
        self._watch_closers.add(closer)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        def in_scope(obj: Obj) -> bool:
            ns = (obj.get("metadata") or {}).get("namespace", "")
            return (namespace is None or ns == namespace) and matches(obj)

        async def send(kind: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        try:
            if since in ("", "0"):
                # "Get state and start at most recent": synthetic ADDED for what exists now.
                for obj in self.store.list(rt, namespace, matches):
                    await send("ADDED", obj)
                backlog: list[Event] = []
            else:
                try:
                    backlog = self.store.events_after(rt, int(since))
                except ApiError as err:
                    await send("ERROR", err.status())
                    return response
            sent = self.store.resource_version if since in ("", "0") else int(since)
            deadline = asyncio.get_running_loop().time() + timeout
            pending = list(backlog)
            while not closer.is_set():
                while pending:
                    event = pending.pop(0)
                    if event.resource_version <= sent or (event.group, event.plural) != (
                        rt.group,
                        rt.plural,
                    ):
                        continue
                    sent = event.resource_version
                    kind = self._filtered_type(event, in_scope)
                    if kind is not None:
                        await send(kind, event.object)
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                wait = min(remaining, self.bookmark_interval if bookmarks else remaining)
                getter = asyncio.ensure_future(queue.get())
                closing = asyncio.ensure_future(closer.wait())
                done, _ = await asyncio.wait(
                    {getter, closing}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in (getter, closing):
                    if fut not in done:
                        fut.cancel()
                if getter in done:
                    pending.append(getter.result())
                    while not queue.empty():
                        pending.append(queue.get_nowait())
                elif not done and bookmarks:
                    sent = max(sent, self.store.resource_version)
                    await send(
                        "BOOKMARK",
                        {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(sent)},
                        },
                    )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(queue)
            self._watch_closers.discard(closer)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    @staticmethod
    def _filtered_type(event: Event, in_scope: Callable[[Obj], bool]) -> str | None:
        """A watch with a selector sees an object enter (ADDED) or leave (DELETED) its scope."""
        now = event.type != "DELETED" and in_scope(event.object)
        before = event.previous is not None and in_scope(event.previous)
        if event.type == "DELETED":
            return "DELETED" if before else None
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        if before:
            return "DELETED"
        return None

    # ---- reviews ---------------------------------------------------------------------------

    async def _review(self, request: web.Request, rt: ResourceType) -> web.Response:
        body = await self._body(request)
        spec = body.get("spec") or {}
        if rt.plural == "tokenreviews":
            user = self.tokens.get(spec.get("token", ""))
            if user is None:
                status: Obj = {"authenticated": False, "error": "invalid bearer token"}
            else:
                status = {
                    "authenticated": True,
                    "user": {"username": user.username, "groups": user.groups},
                }
        else:
            attrs = spec.get("nonResourceAttributes") or {}
            user = next((u for u in self.tokens.values() if u.username == spec.get("user")), None)
            allowed = user is not None and (attrs.get("verb"), attrs.get("path")) in user.allowed
            status = {"allowed": allowed}
            if not allowed:
                status["reason"] = "no RBAC policy matched"
        return _json(
            {
                "apiVersion": rt.api_version,
                "kind": rt.kind,
                "metadata": {},
                "spec": spec,
                "status": status,
            },
            201,
        )
