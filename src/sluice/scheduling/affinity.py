"""Affinity scorers: LoRA adapter residency (upstream) and session stickiness (Sluice's, which
is upstream's `strategy: session_id`; upstream's default `encoded_endpoint_header` strategy, an
endpoint token the client echoes, is not implemented)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import PlainValidator, ValidationInfo, field_validator

from sluice.api.rules import rule_error
from sluice.api.scalars import Positive, Text, field_type, integer, text
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


# Upstream reads only the block its strategy names: with session_id this one is unused.
_UNUSED: PlainValidator = field_type(lambda value: value)


def _strategy(value: Any) -> str:
    strategy = text(value)
    if strategy == "encoded_endpoint_header":
        raise ValueError(
            "the encoded_endpoint_header strategy (an endpoint token the client echoes) is not "
            "implemented; use strategy: session_id (a server-side map, Sluice's default)"
        )
    if strategy != "session_id":
        raise ValueError(f"must be session_id, got {strategy!r}")
    return strategy


def _profile_name(value: Any) -> str:
    name = text(value)
    if name:
        raise ValueError("Sluice schedules one profile's result per request; leave it empty")
    return name


def _attribute(value: Any) -> str:
    raise ValueError(
        f"request attribute {text(value)!r}: Sluice has no plugin that publishes request "
        "attributes (agent-identity, session-id-producer); use a header source"
    )


class SessionSource(PluginParameters):
    header: Text | None = None
    attribute: Annotated[str | None, field_type(_attribute)] = None


class SessionIdConfig(PluginParameters):
    """Upstream's `sessionIdConfig`. Expired bindings are dropped when next looked at, so the
    sweep interval is accepted and has nothing to do."""

    sources: list[SessionSource] | None = None
    eviction_ttl_seconds: Positive = 300.0
    eviction_sweep_seconds: Positive = 10.0


class SessionAffinityScorer(Scorer):
    type_name = "session-affinity-scorer"

    bounded = True

    """1.0 for the endpoint that last served the request's session, else 0. The session is
    the first of the headers present (`headerName`, or upstream's `sessionIdConfig.sources`);
    bindings are made on dispatch, least recently used first out past `maxSessions`, and (with
    `sessionIdConfig`) forgotten once unused for `evictionTtlSeconds`."""

    class Parameters(PluginParameters):
        header_name: Text = "x-session-id"
        max_sessions: Annotated[int, positive(integer)] = 100_000
        # upstream's
        strategy: Annotated[str | None, field_type(_strategy)] = None
        profile_name: Annotated[str | None, field_type(_profile_name)] = None
        session_id_config: SessionIdConfig | None = None
        encoded_endpoint_header_config: Annotated[Any, _UNUSED] = None

        @field_validator("encoded_endpoint_header_config")
        @classmethod
        def _encoded_needs_its_strategy(cls, value: Any, info: ValidationInfo) -> Any:
            if value is not None and info.data.get("strategy") is None:
                try:  # upstream's default strategy: refused
                    _strategy("encoded_endpoint_header")
                except ValueError as exc:
                    raise rule_error(str(exc)) from None
            return value

    def __init__(
        self,
        name: str,
        header: str | Sequence[str],
        max_sessions: int,
        ttl_s: float | None = None,
    ) -> None:
        super().__init__(name)
        headers = (header,) if isinstance(header, str) else tuple(header)
        self._headers = tuple(h.lower() for h in headers)
        self._max_sessions = max_sessions
        self._ttl_s = ttl_s
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()  # endpoint, when
        self._now = 0.0  # the last scheduling cycle's time (dispatch follows it)

    @classmethod
    def from_params(cls, name: str, params: Parameters, ctx: PluginContext) -> Scorer:
        config = params.session_id_config
        if config is None:
            if params.strategy == "session_id":
                return cls(name, "x-session-id", params.max_sessions, 300.0)
            return cls(name, params.header_name, params.max_sessions)
        headers = [s.header for s in config.sources or () if s.header] or ["x-session-id"]
        return cls(name, headers, params.max_sessions, config.eviction_ttl_seconds)

    def _session(self, request: InferenceRequest) -> str | None:
        headers = request.headers
        for header in self._headers:
            value = headers.get(header) or headers.get(header.title())
            if value:
                return value
        return None

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        self._now = cycle.now
        session = self._session(cycle.request)
        bound = self._sessions.get(session) if session else None
        if bound is None:
            return [0.0] * len(candidates)
        last, used = bound
        if self._ttl_s is not None and cycle.now - used > self._ttl_s:
            return [0.0] * len(candidates)  # expired: no preference; dispatch rebinds it
        return [1.0 if s.endpoint.name == last else 0.0 for s in candidates]

    def on_dispatch(
        self, cycle: CycleState | None, request: InferenceRequest, target: Endpoint
    ) -> None:
        session = self._session(request)
        if not session:
            return
        now = cycle.now if cycle is not None else self._now
        self._sessions[session] = (target.name, now)
        self._sessions.move_to_end(session)
        if len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
