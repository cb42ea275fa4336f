"""Which headers cross the proxy, in each direction.

Sluice is a hop: hop-by-hop headers (RFC 9110 §7.6.1) stop here, framing headers are recomputed,
and the client's Sluice control headers never reach a model server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from multidict import CIMultiDict

from sluice.requests.model import CONTROL_HEADERS, HEADER_REQUEST_ID

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Recomputed or owned by the next hop: the body may be rewritten (content-length), the upstream
# is a different host, and `expect` is answered by Sluice itself. `accept-encoding` is dropped so
# responses come back identity-encoded and usage can be read from them.
_NOT_FORWARDED_UPSTREAM = (
    HOP_BY_HOP
    | CONTROL_HEADERS
    | {"host", "content-length", "expect", "accept-encoding", HEADER_REQUEST_ID}
)
_NOT_FORWARDED_DOWNSTREAM = HOP_BY_HOP | {"content-length"}


def _connection_tokens(headers: Mapping[str, str]) -> frozenset[str]:
    """Headers named in `Connection:` are hop-by-hop too."""
    value = headers.get("connection")
    if not value:
        return frozenset()
    return frozenset(token.strip().lower() for token in value.split(","))


def lowered(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client's headers with lower-case names, as `Pipeline.parse` expects them."""
    return {name.lower(): value for name, value in headers}


def upstream_request_headers(
    client_headers: Mapping[str, str], request_id: str
) -> CIMultiDict[str]:
    """What the model server sees: the client's headers minus control and hop-by-hop headers."""
    dropped = _NOT_FORWARDED_UPSTREAM | _connection_tokens(client_headers)
    forwarded: CIMultiDict[str] = CIMultiDict(
        (name, value) for name, value in client_headers.items() if name not in dropped
    )
    forwarded[HEADER_REQUEST_ID] = request_id
    return forwarded


def downstream_response_headers(upstream_headers: Mapping[str, str]) -> CIMultiDict[str]:
    """What the client sees of the model server's response headers."""
    dropped = _NOT_FORWARDED_DOWNSTREAM | _connection_tokens(upstream_headers)
    return CIMultiDict(
        (name, value) for name, value in upstream_headers.items() if name.lower() not in dropped
    )
