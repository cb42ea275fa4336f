"""The request headers a client or gateway uses to talk to the Endpoint Picker, and their names.

llm-d-router renamed them `x-llm-d-*` (v0.9) and still reads the names before it: GIE v1.3's
`x-gateway-*` and the SLO headers' `x-slo-*`. Each is a tuple, today's name first; the first name
present wins, even when its value is empty (as upstream's `GetLowerCaseHeaderValue`), so a
request carrying both forms is read by the new one.

Every name here is Sluice's to read and none is the model server's: `CONTROL_HEADERS` are removed
before a request is forwarded (ext_proc: `remove_headers`; proxy: not copied), as upstream strips
its `InputControlHeaders` and `OutputInjectionHeaders`.
"""

from __future__ import annotations

from collections.abc import Mapping

OBJECTIVE_HEADERS = ("x-llm-d-inference-objective", "x-gateway-inference-objective")
FAIRNESS_ID_HEADERS = ("x-llm-d-inference-fairness-id", "x-gateway-inference-fairness-id")
MODEL_REWRITE_HEADERS = ("x-llm-d-model-name-rewrite", "x-gateway-model-name-rewrite")
# Latency objectives in milliseconds: time to first token (the slo-deadline ordering policy's
# deadline) and time per output token (carried; no Sluice rule reads it).
SLO_TTFT_HEADERS = ("x-llm-d-slo-ttft-ms", "x-slo-ttft-ms")
SLO_TPOT_HEADERS = ("x-llm-d-slo-tpot-ms", "x-slo-tpot-ms")
# Sluice's own per-request TTL override, in seconds or a duration ("2s", "500ms").
HEADER_REQUEST_TTL = "x-sluice-request-ttl"
# On every rejection Sluice answers: why the request was dropped (`requests.errors.DroppedReason`).
HEADER_DROPPED_REASON = "x-llm-d-request-dropped-reason"

# Upstream reads these for its multimodal token estimate; Sluice does not, but strips them too.
_VIDEO_HEADERS = ("x-llm-d-video-fps", "x-llm-d-video-duration-seconds", "x-llm-d-video-resolution")
# Headers only the gateway or Sluice may set on the way to the model server.
_INJECTED_HEADERS = (
    "x-gateway-destination-endpoint-subset",
    "x-gateway-destination-endpoint-served",
    HEADER_DROPPED_REASON,
)

CONTROL_HEADERS = frozenset(
    (
        *OBJECTIVE_HEADERS,
        *FAIRNESS_ID_HEADERS,
        *MODEL_REWRITE_HEADERS,
        *SLO_TTFT_HEADERS,
        *SLO_TPOT_HEADERS,
        HEADER_REQUEST_TTL,
        *_VIDEO_HEADERS,
        *_INJECTED_HEADERS,
    )
)


def first_header(headers: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """`(name, value)` of the first of `names` present in `headers` (lower-case keys), or None."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            return name, value
    return None


def header_value(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The value of the first of `names` present (possibly empty), or None."""
    found = first_header(headers, names)
    return None if found is None else found[1]
