"""Wraps any `Pipeline` (the round-robin double or the real one) and records what the proxy did
with it: every admission, every `finish`, `retarget` and response byte it was shown.

These are the proxy's duties, so tests assert on the recording, never on pipeline internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Admission, Outcome, Pipeline
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest, Usage


@dataclass
class RecordedAdmission:
    inner: Admission
    finishes: list[Outcome] = field(default_factory=list)
    retargets: list[Endpoint] = field(default_factory=list)
    observed: bytearray = field(default_factory=bytearray)
    observed_as_stream: set[bool] = field(default_factory=set)

    @property
    def request(self) -> InferenceRequest:
        return self.inner.request

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.inner.endpoints

    def retarget(self, endpoint: Endpoint) -> None:
        self.retargets.append(endpoint)
        self.inner.retarget(endpoint)

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
        self.observed += chunk
        self.observed_as_stream.add(streaming)
        self.inner.observe_response_chunk(chunk, streaming=streaming)

    def finish(self, outcome: Outcome, usage: Usage | None = None) -> None:
        self.finishes.append(outcome)
        self.inner.finish(outcome, usage)

    def allow_eviction(self, hook: Callable[[SluiceError], None] | None) -> bool:
        return self.inner.allow_eviction(hook)

    def usage_seen(self) -> Usage | None:
        """The usage the model server reported, from the bytes the proxy passed on."""
        documents: list[Any] = []
        if True in self.observed_as_stream:
            for line in bytes(self.observed).splitlines():
                if line.startswith(b"data: {"):
                    documents.append(orjson.loads(line[6:]))
        elif self.observed:
            documents.append(orjson.loads(bytes(self.observed)))
        for document in reversed(documents):
            usage = document.get("usage")
            if usage:
                return Usage(usage["prompt_tokens"], usage.get("completion_tokens", 0))
        return None


class RecordingPipeline:
    def __init__(self, inner: Pipeline) -> None:
        self.inner = inner
        self.admissions: list[RecordedAdmission] = []
        self.parses = 0
        self.admits_cancelled = 0  # admit() calls abandoned because the client left

    @property
    def ready(self) -> bool:
        return self.inner.ready

    def parse(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        path: str = "/v1/chat/completions",
        subset_hint: frozenset[str] | None = None,
    ) -> InferenceRequest:
        self.parses += 1
        return self.inner.parse(headers, body, path=path, subset_hint=subset_hint)

    async def admit(self, request: InferenceRequest) -> RecordedAdmission:
        try:
            admission = await self.inner.admit(request)
        except asyncio.CancelledError:
            self.admits_cancelled += 1
            raise
        recorded = RecordedAdmission(admission)
        self.admissions.append(recorded)
        return recorded

    def pick_any(self) -> Endpoint:
        return self.inner.pick_any()

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.inner.endpoints()

    def only_admission(self) -> RecordedAdmission:
        assert len(self.admissions) == 1, f"expected one admission, got {len(self.admissions)}"
        return self.admissions[0]
