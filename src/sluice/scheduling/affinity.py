"""Affinity scorers: LoRA adapter residency (upstream) and session stickiness (Sluice)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated

from sluice.api.scalars import Text, integer
from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.requests.model import InferenceRequest
from sluice.scheduling.framework import CycleState, PluginContext, Scorer
from sluice.scheduling.parameters import PluginParameters, positive


class LoraAffinityScorer(Scorer):
    type_name = "lora-affinity-scorer"

    bounded = True

    """Upstream semantics, for the request's target model (the adapter when it is one):
    active on the endpoint → 1.0; a free adapter slot → 0.8; queued there → 0.6; else 0."""

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        adapter = cycle.request.target_model
        out: list[float] = []
        for s in candidates:
            m = s.metrics
            if adapter in m.active_adapters:
                out.append(1.0)
            elif len(m.active_adapters) + len(m.waiting_adapters) < m.max_adapters:
                out.append(0.8)
            elif adapter in m.waiting_adapters:
                out.append(0.6)
            else:
                out.append(0.0)
        return out


class SessionAffinityScorer(Scorer):
    type_name = "session-affinity-scorer"

    bounded = True

    """Sluice: 1.0 for the endpoint that last served the request's session header, else 0.
    Sessions are remembered on dispatch, least recently used first out."""

    class Parameters(PluginParameters):
        header_name: Text = "x-session-id"
        max_sessions: Annotated[int, positive(integer)] = 100_000

    def __init__(self, name: str, header: str, max_sessions: int) -> None:
        super().__init__(name)
        self._header = header.lower()
        self._max_sessions = max_sessions
        self._sessions: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def from_params(cls, name: str, params: Parameters, ctx: PluginContext) -> Scorer:
        return cls(name, params.header_name, params.max_sessions)

    def _session(self, request: InferenceRequest) -> str | None:
        headers = request.headers
        return headers.get(self._header) or headers.get(self._header.title())

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        session = self._session(cycle.request)
        last = self._sessions.get(session) if session else None
        if last is None:
            return [0.0] * len(candidates)
        return [1.0 if s.endpoint.name == last else 0.0 for s in candidates]

    def on_dispatch(
        self, cycle: CycleState | None, request: InferenceRequest, target: Endpoint
    ) -> None:
        session = self._session(request)
        if not session:
            return
        self._sessions[session] = target.name
        self._sessions.move_to_end(session)
        if len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
