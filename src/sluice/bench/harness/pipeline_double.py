"""A small, faithful `Pipeline` for tests: real request parsing and usage parsing from
`sluice.requests`, a least-in-flight pick over a fixed endpoint list, and knobs to make
admission wait (`hold`) or fail (`reject_with`). It records what the front end did to it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sluice.datalayer.endpoint import Endpoint
from sluice.director.contract import Outcome
from sluice.requests.errors import ErrorCode, SluiceError
from sluice.requests.model import InferenceRequest, Usage
from sluice.requests.parse import DEFAULT_PATH, parse_request
from sluice.requests.usage import UsageParser


@dataclass
class Finish:
    outcome: Outcome
    usage: Usage | None


@dataclass
class RecordingAdmission:
    request: InferenceRequest
    endpoints: tuple[Endpoint, ...]
    pipeline: DoublePipeline
    finishes: list[Finish] = field(default_factory=list)
    detached: int = 0
    chunks: list[bytes] = field(default_factory=list)
    retargeted: list[Endpoint] = field(default_factory=list)
    _usage: UsageParser | None = None

    def retarget(self, endpoint: Endpoint) -> None:
        self.retargeted.append(endpoint)

    def observe_response_chunk(self, chunk: bytes, *, streaming: bool) -> None:
        if self._usage is None:
            self._usage = UsageParser(streaming=streaming)
        self._usage.feed(chunk)
        self.chunks.append(chunk)

    def allow_eviction(self, hook: Callable[[SluiceError], None] | None) -> bool:
        return False  # the double never evicts

    def finish(self, outcome: Outcome, usage: Usage | None = None) -> None:
        reported = usage or (self._usage.finish() if self._usage else None)
        self.finishes.append(Finish(outcome, reported))  # every call recorded, to prove "once"
        if len(self.finishes) == 1:
            self.pipeline.in_flight[self.endpoints[0].hostport] -= 1
            self.pipeline.finished.put_nowait(self)

    def detach(self) -> None:
        self.detached += 1
        if self.detached == 1 and not self.finishes:
            self.pipeline.in_flight[self.endpoints[0].hostport] -= 1
            self.pipeline.finished.put_nowait(self)


class DoublePipeline:
    def __init__(self, endpoints: list[Endpoint], *, fallbacks: int = 0) -> None:
        self._endpoints = tuple(endpoints)
        self.fallbacks = fallbacks
        self.ready = True
        self.hold: asyncio.Event | None = None  # when set: admit waits for it
        self.reject_with: SluiceError | None = None
        self.parsed: list[InferenceRequest] = []
        self.admissions: list[RecordingAdmission] = []
        self.admits_started = 0
        self.admits_cancelled = 0
        self.in_flight = {e.hostport: 0 for e in endpoints}
        self.finished: asyncio.Queue[RecordingAdmission] = asyncio.Queue()

    def parse(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        path: str = DEFAULT_PATH,
        subset_hint: frozenset[str] | None = None,
    ) -> InferenceRequest:
        request = parse_request(headers, body, path=path, subset_hint=subset_hint)
        self.parsed.append(request)
        return request

    async def admit(self, request: InferenceRequest) -> RecordingAdmission:
        self.admits_started += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.admits_cancelled += 1
            raise
        if self.reject_with is not None:
            raise self.reject_with
        candidates = self._candidates(request.subset_hint)
        if not candidates:
            raise SluiceError(ErrorCode.SERVICE_UNAVAILABLE, "no candidate endpoints")
        ranked = sorted(candidates, key=lambda e: self.in_flight[e.hostport])
        chosen = tuple(ranked[: 1 + self.fallbacks])
        self.in_flight[chosen[0].hostport] += 1
        admission = RecordingAdmission(request, chosen, self)
        self.admissions.append(admission)
        return admission

    def pick_any(self) -> Endpoint:
        if not self._endpoints:
            raise SluiceError(ErrorCode.INTERNAL, "no pods available in datastore")
        return self._endpoints[0]

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def _candidates(self, hint: frozenset[str] | None) -> list[Endpoint]:
        if hint is None:
            return list(self._endpoints)
        # Upstream matches the hint by IP (port stripped); so do we.
        ips = {h.rsplit(":", 1)[0] for h in hint}
        return [e for e in self._endpoints if e.address in ips]
