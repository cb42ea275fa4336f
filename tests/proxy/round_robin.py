"""A small, faithful stand-in for the real pipeline: it implements the `Pipeline` protocol with
round-robin placement and no flow control, plus two knobs to make `admit` queue or reject.

Only `conftest.make_pipeline` constructs it; swapping in the real pipeline happens there.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence

import orjson

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Outcome
from sluice.requests.errors import ErrorCode, SluiceError, bad_request
from sluice.requests.headers import FAIRNESS_ID_HEADERS, OBJECTIVE_HEADERS, header_value
from sluice.requests.model import (
    HEADER_REQUEST_ID,
    ApiKind,
    InferenceRequest,
    Usage,
)

_API_BY_PATH = {
    "/v1/completions": ApiKind.COMPLETIONS,
    "/v1/chat/completions": ApiKind.CHAT,
    "/v1/embeddings": ApiKind.EMBEDDINGS,
    "/v1/responses": ApiKind.RESPONSES,
}


class RoundRobinAdmission:
    def __init__(self, request: InferenceRequest, endpoints: tuple[Endpoint, ...]) -> None:
        self.request = request
        self.endpoints = endpoints
        self.served_by = endpoints[0]
        self.outcome: Outcome | None = None

    def retarget(self, endpoint: Endpoint) -> None:
        self.served_by = endpoint

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
        pass  # the recording wrapper parses usage; the real pipeline does it itself

    def finish(self, outcome: Outcome, usage: Usage | None = None) -> None:
        if self.outcome is None:  # exactly-once: later calls are ignored, as the protocol says
            self.outcome = outcome

    def allow_eviction(self, hook: Callable[[SluiceError], None] | None) -> bool:
        return False  # the double never evicts


class RoundRobinPipeline:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        fallbacks: int = 0,
        priorities: Mapping[str, int] | None = None,
    ) -> None:
        self.pool = list(endpoints)
        self.fallbacks = fallbacks
        self.priorities = dict(priorities or {})
        self.reject_with: SluiceError | None = None  # admit raises this (e.g. a 429)
        self.gate: asyncio.Event | None = None  # admit waits on it: "queued"
        self._turn = itertools.count()

    @property
    def ready(self) -> bool:
        return True

    def parse(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        path: str = "/v1/chat/completions",
        subset_hint: frozenset[str] | None = None,
    ) -> InferenceRequest:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise bad_request("body is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("model"), str):
            raise bad_request("model not found in request body")
        objective = header_value(headers, OBJECTIVE_HEADERS)
        return InferenceRequest(
            request_id=headers.get(HEADER_REQUEST_ID) or uuid.uuid4().hex,
            api=_API_BY_PATH.get(path, ApiKind.OTHER),
            model=document["model"],
            target_model=document["model"],
            body=body,
            prompt_tokens=1,
            stream=bool(document.get("stream")),
            objective=objective,
            fairness_id=header_value(headers, FAIRNESS_ID_HEADERS) or "default-flow",
            priority=self.priorities.get(objective or "", 0),
            subset_hint=subset_hint,
            headers=headers,
        )

    async def admit(self, request: InferenceRequest) -> RoundRobinAdmission:
        if self.gate is not None:
            await self.gate.wait()
        if self.reject_with is not None:
            raise self.reject_with
        if not self.pool:
            raise SluiceError(ErrorCode.SERVICE_UNAVAILABLE, "no endpoints")
        start = next(self._turn)
        count = min(len(self.pool), 1 + self.fallbacks)
        chosen = tuple(self.pool[(start + i) % len(self.pool)] for i in range(count))
        return RoundRobinAdmission(request, chosen)

    def pick_any(self) -> Endpoint:
        if not self.pool:
            raise SluiceError(ErrorCode.INTERNAL, "no endpoints")
        return self.pool[next(self._turn) % len(self.pool)]

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(self.pool)
