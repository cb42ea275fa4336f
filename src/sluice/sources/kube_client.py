"""Talking to the API server: connecting (in-cluster, else kubeconfig) and the raw JSON calls the
watcher needs — lists and watch streams as plain dicts, without kubernetes_asyncio's models."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

from sluice.sources.kube_events import Kind

Obj = dict[str, Any]


class Gone(Exception):
    """410: the resourceVersion we resume from is older than the server's history. Relist."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


async def connect(kubeconfig: str | None = None) -> Any:
    """An `ApiClient` for the cluster this process runs in, else the one the kubeconfig names."""
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


def _list_call(api_client: Any, kind: Kind, namespace: str) -> Any:
    if kind.group == "":
        return lambda **kw: client.CoreV1Api(api_client).list_namespaced_pod(namespace, **kw)
    custom = client.CustomObjectsApi(api_client)
    return lambda **kw: custom.list_namespaced_custom_object(
        kind.group, kind.version, namespace, kind.plural, **kw
    )


async def _raise_for_status(response: Any) -> None:
    if 200 <= response.status < 300:
        return
    try:
        body = json.loads(await response.read())
        message = str(body.get("message", ""))
    except ValueError:
        message = ""
    response.release()
    if response.status == 410:
        raise Gone(message)
    raise ApiError(response.status, message)


async def served_kinds(api_client: Any, group: str, version: str) -> set[str]:
    """The kinds the API server serves in `group/version` (discovery), empty when none: the
    group's CRDs are not installed."""
    custom = client.CustomObjectsApi(api_client)
    response: Any = await custom.get_api_resources(group, version, _preload_content=False)
    try:
        await _raise_for_status(response)
    except ApiError as err:
        if err.status == 404:
            return set()
        raise
    body = json.loads(await response.read())
    response.release()
    return {
        str(r.get("kind"))
        for r in body.get("resources") or []
        if "/" not in str(r.get("name", ""))  # subresources (x/status) are not kinds
    }


async def list_objects(
    api_client: Any,
    kind: Kind,
    namespace: str,
    label_selector: str | None = None,
    field_selector: str | None = None,
) -> tuple[list[Obj], str]:
    """All matching objects and the list's resourceVersion (where a watch should start)."""
    kwargs: dict[str, Any] = {"_preload_content": False}
    if label_selector:
        kwargs["label_selector"] = label_selector
    if field_selector:
        kwargs["field_selector"] = field_selector
    response = await _list_call(api_client, kind, namespace)(**kwargs)
    await _raise_for_status(response)
    body = json.loads(await response.read())
    return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])


async def watch_events(
    api_client: Any,
    kind: Kind,
    namespace: str,
    resource_version: str,
    timeout_seconds: int,
    label_selector: str | None = None,
    field_selector: str | None = None,
) -> AsyncIterator[tuple[str, Obj]]:
    """(type, object) pairs of one watch request, until the server ends it. BOOKMARKs are
    yielded too: they carry the resourceVersion to resume from."""
    kwargs: dict[str, Any] = {
        "watch": True,
        "resource_version": resource_version,
        "allow_watch_bookmarks": True,
        "timeout_seconds": timeout_seconds,
        "_preload_content": False,
        # The server ends the watch after timeout_seconds; a little more guards a dead peer.
        "_request_timeout": aiohttp.ClientTimeout(total=timeout_seconds + 15, sock_connect=10),
    }
    if label_selector:
        kwargs["label_selector"] = label_selector
    if field_selector:
        kwargs["field_selector"] = field_selector
    response = await _list_call(api_client, kind, namespace)(**kwargs)
    try:
        await _raise_for_status(response)
        while True:
            line = await response.content.readline()
            if not line:
                return
            if not line.strip():
                continue
            event = json.loads(line)
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(str(obj.get("message", "")))
                raise ApiError(int(obj.get("code") or 500), str(obj.get("message", "")))
            yield str(event.get("type")), obj
    finally:
        response.release()
