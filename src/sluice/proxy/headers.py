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


def _connection_tokens(value: str) -> frozenset[str]:
    """Headers named in `Connection:` are hop-by-hop too."""
    return frozenset(token.strip().lower() for token in value.split(","))


# What Sluice's own answers and relayed ones show as `Server:`: no versions (aiohttp's default
# names Python's and its own), and not the engine's either.
SERVER = "sluice"


def lowered(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client's headers with lower-case names, as `Pipeline.parse` expects them.

    Repeated `Connection:` lines are one list (RFC 9110 §5.3): every header any of them names
    stays hop-by-hop. (Kept in a dict, other repeated names keep their last value.)"""
    out: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        if name == "connection" and name in out:
            value = f"{out[name]}, {value}"
        out[name] = value
    return out


def upstream_header_lines(client_headers: Mapping[str, str], request_id: str) -> bytes:
    """What the model server sees of the client's headers, rendered as HTTP/1.1 header lines:
    the client's headers minus control and hop-by-hop headers, plus `x-request-id`.

    Rendered once per request (not per attempt): the upstream client sends bytes, so building a
    header multidict only to serialise it again would be wasted work.
    """
    connection = client_headers.get("connection")
    dropped = _NOT_FORWARDED_UPSTREAM
    if connection:
        dropped = dropped | _connection_tokens(connection)
    lines = [
        f"{name}: {value}\r\n" for name, value in client_headers.items() if name not in dropped
    ]
    lines.append(f"{HEADER_REQUEST_ID}: {request_id}\r\n")
    # surrogateescape: header bytes that were not UTF-8 go out exactly as they came in.
    return "".join(lines).encode("utf-8", "surrogateescape")


def downstream_response_headers(upstream_headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """What the client sees of the model server's response headers."""
    pairs = list(upstream_headers)
    dropped = _NOT_FORWARDED_DOWNSTREAM
    for name, value in pairs:
        if name.lower() == "connection":
            dropped = dropped | _connection_tokens(value)
    dropped = dropped | {"server"}
    out = CIMultiDict((name, value) for name, value in pairs if name.lower() not in dropped)
    out["Server"] = SERVER
    return out
