"""`/metrics` protection as upstream's `--metrics-endpoint-auth`: the caller's bearer token must
authenticate (TokenReview) and the user must be allowed `get` on the non-resource URL `/metrics`
(SubjectAccessReview). Fails closed: any error means "no". Answers are cached briefly, as
Kubernetes' own delegating authenticator does, so a scraper costs two API calls per TTL."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client

from sluice.logs import get_logger

log = get_logger("sluice.sources.auth")

Authorize = Callable[[str | None], Awaitable[bool]]


class MetricsAuthorizer:
    """`await authorizer(token)` → may this bearer token read `path`?"""

    def __init__(
        self,
        api_client: Any,
        path: str = "/metrics",
        verb: str = "get",
        cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authn: Any = client.AuthenticationV1Api(api_client)
        self._authz: Any = client.AuthorizationV1Api(api_client)
        self.path, self.verb = path, verb
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[bool, float]] = {}

    async def __call__(self, bearer_token: str | None) -> bool:
        if not bearer_token:
            return False
        cached = self._cache.get(bearer_token)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        try:
            allowed = await self._review(bearer_token)
        except Exception as err:
            log.warning("metrics auth: review failed", error=repr(err))
            return False  # not cached: the next scrape asks again
        self._cache[bearer_token] = (allowed, self._clock() + self._cache_seconds)
        return allowed

    async def _review(self, token: str) -> bool:
        review = await self._authn.create_token_review(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return False
        user = status.user
        access = await self._authz.create_subject_access_review(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user.username,
                    "uid": user.uid,
                    "groups": user.groups,
                    "extra": user.extra,
                    "nonResourceAttributes": {"path": self.path, "verb": self.verb},
                },
            }
        )
        return bool(access.status and access.status.allowed)


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
