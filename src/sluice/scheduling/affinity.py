"""Affinity scorers: LoRA adapter residency and session stickiness (upstream's), the latter with
both of upstream's strategies: `encoded_endpoint_header` (its default: the endpoint, base64, in a
response header the client echoes) and `session_id` (a server-side map from a session header to
the endpoint, also what Sluice's own `headerName` / `maxSessions` configure)."""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated, Any

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


ENCODED_ENDPOINT_HEADER = "encoded_endpoint_header"  # upstream's default strategy
SESSION_ID = "session_id"
SESSION_TOKEN_HEADER = "x-session-token"  # upstream's DefaultHeader


def _strategy(value: Any) -> str:
    strategy = text(value)
    if strategy not in (ENCODED_ENDPOINT_HEADER, SESSION_ID):
        raise ValueError(f"must be {ENCODED_ENDPOINT_HEADER} or {SESSION_ID}, got {strategy!r}")
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


class EncodedEndpointHeaderConfig(PluginParameters):
    """Upstream's `encodedEndpointHeaderConfig`: the request and response header."""

    header: Text = SESSION_TOKEN_HEADER


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
        encoded_endpoint_header_config: EncodedEndpointHeaderConfig | None = None

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
        """Upstream's strategy, by default `encoded_endpoint_header`; Sluice's own parameters
        (`headerName`, `maxSessions`) without a strategy mean Sluice's map (`session_id`)."""
        strategy = params.strategy
        if strategy is None:
            own = {"header_name", "max_sessions"} & params.model_fields_set
            strategy = SESSION_ID if own else ENCODED_ENDPOINT_HEADER
        if strategy == ENCODED_ENDPOINT_HEADER:
            encoded = params.encoded_endpoint_header_config or EncodedEndpointHeaderConfig()
            return SessionTokenScorer(name, encoded.header)
        config = params.session_id_config
        if config is None:
            if params.strategy == SESSION_ID:
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


def session_token(endpoint: Endpoint) -> str:
    """Upstream's token for an endpoint: its `namespace/name` (name `<pod>-rank-<i>`), base64."""
    return base64.b64encode(f"{endpoint.namespace}/{endpoint.name}".encode()).decode()


def _token_target(token: str) -> str | None:
    """The `namespace/name` a token names, or None when it is not base64 text."""
    try:
        return base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


class SessionTokenScorer(Scorer):
    """Upstream's `encoded_endpoint_header` strategy: 1.0 for the endpoint the request's session
    token names, else 0 (no token, or one that does not decode: no preference). Stateless: the
    token of the endpoint the request went to is written on the response, in the same header,
    for the client to send back."""

    type_name = SessionAffinityScorer.type_name
    bounded = True

    def __init__(self, name: str, header: str) -> None:
        super().__init__(name)
        self.header = header.strip().lower() or SESSION_TOKEN_HEADER  # upstream's NormalizeHeader

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        headers = cycle.request.headers
        token = headers.get(self.header) or headers.get(self.header.title())
        target = _token_target(token) if token else None
        if target is None:
            return [0.0] * len(candidates)
        return [
            1.0 if f"{s.endpoint.namespace}/{s.endpoint.name}" == target else 0.0
            for s in candidates
        ]

    def on_dispatch(
        self, cycle: CycleState | None, request: InferenceRequest, target: Endpoint
    ) -> None:
        request.response_headers[self.header] = session_token(target)
