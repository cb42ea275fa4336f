"""The parsed, classified request that flows through the core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

# Re-exported: the control headers live in `requests.headers`.
from sluice.requests.headers import CONTROL_HEADERS as CONTROL_HEADERS
from sluice.requests.headers import HEADER_REQUEST_TTL as HEADER_REQUEST_TTL

DEFAULT_FAIRNESS_ID = "default-flow"

HEADER_REQUEST_ID = "x-request-id"
HEADER_DESTINATION = "x-gateway-destination-endpoint"
HEADER_DESTINATION_SERVED = "x-gateway-destination-endpoint-served"
# `--emit-endpoint-scores`: the primary profile's score per endpoint (metadata key; proxy header)
HEADER_DESTINATION_SCORES = "x-gateway-destination-endpoint-scores"
SUBSET_HINT_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_HINT_KEY = "x-gateway-destination-endpoint-subset"
DESTINATION_METADATA_NAMESPACE = "envoy.lb"


class ApiKind(Enum):
    COMPLETIONS = "completions"
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(slots=True)
class InferenceRequest:
    """One LLM request, as the core sees it.

    `body` is what goes to the model server: the client's bytes unchanged, except the `model`
    field when a rewrite applied. `prompt_tokens` is an estimate (see `requests.tokens`).
    """

    request_id: str
    api: ApiKind
    model: str
    target_model: str
    body: bytes
    prompt_tokens: int
    prompt: str = ""
    messages: tuple[ChatMessage, ...] = ()
    max_tokens: int | None = None
    stream: bool = False
    cache_salt: str | None = None
    objective: str | None = None
    fairness_id: str = DEFAULT_FAIRNESS_ID
    priority: int = 0
    ttl_s: float | None = None
    # Latency objectives from `x-llm-d-slo-ttft-ms` / `x-llm-d-slo-tpot-ms`, in seconds.
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    subset_hint: frozenset[str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Token-id prompts (`prompt: [1, 2, 3]`, embeddings `input` ids), concatenated; `prompt` is
    # then empty. Exact ids give prefix affinity without a tokenizer.
    prompt_token_ids: tuple[int, ...] = ()
    path: str = ""
    # Whether the front end will show Sluice the response body as it comes (an Envoy with
    # response body mode NONE does not); with `stream`, its first byte marks the first token.
    response_seen: bool = True
    # Headers the scheduling plugins ask the front end to add to the response to the client
    # (upstream's ResponseHeaderProcessor), as of the endpoint the request went to last:
    # session-affinity-scorer's encoded session token.
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def first_byte_expected(self) -> bool:
        """Whether a first byte will mark the end of this request's prefill."""
        return self.stream and self.response_seen

    @property
    def byte_size(self) -> int:
        return len(self.body)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage reported by the model server for one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # True when the server reported no usage and completion_tokens was estimated from the
    # streamed content (see `requests.usage`).
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# What an engine's error answer (status >= 400) cost: it generated nothing. Front ends report
# it as the usage of such a response, so flow control refunds the estimate it charged — an
# estimate the engine refused (e.g. max_tokens past the context) must not stay on the books.
NO_WORK = Usage()


class Outcome(Enum):
    """How a dispatched request ended."""

    COMPLETED = "completed"
    UPSTREAM_ERROR = "upstream_error"  # the model server failed or reset
    CLIENT_GONE = "client_gone"  # the client disconnected mid-response
    EVICTED = "evicted"  # flow control ended it before its first token, for a higher band
