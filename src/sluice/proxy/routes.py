"""Which requests the proxy forwards: an allow-list of (method, path), origin-form targets only.

Engines serve far more than inference on their port — vLLM's `/sleep`, `/reset_prefix_cache`,
`/v1/load_lora_adapter`, the simulator's `/admin/faults` — and a proxy that forwarded anything
handed those to every client, outside flow control. So only OpenAI's inference APIs and
`/v1/models` pass by default; an operator adds others with `--proxy-allowed-routes`. Targets are
matched byte for byte against the list, so `..`, `%2e`, `//` or an absolute-form URI can never
name an allowed route by another spelling; those are refused as 400 with the reason.
"""

from __future__ import annotations

from urllib.parse import unquote

from sluice.requests.errors import ErrorCode, SluiceError

INFERENCE_PATHS = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/responses"}
)
MODELS_PATH = "/v1/models"
DEFAULT_ROUTES = frozenset({("POST", p) for p in INFERENCE_PATHS} | {("GET", MODELS_PATH)})

Route = tuple[str, str]


class RouteSpecError(ValueError):
    pass


def parse_routes(text: str) -> frozenset[Route]:
    """`"POST /v1/rerank, GET /health"` → {("POST", "/v1/rerank"), ("GET", "/health")}."""
    routes: set[Route] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        method, _, path = item.partition(" ")
        path = path.strip()
        if not method.isalpha() or not method.isupper() or not path:
            raise RouteSpecError(f"{item!r}: expected 'METHOD /path', e.g. 'POST /v1/rerank'")
        problem = path_problem(path)
        if problem is not None:
            raise RouteSpecError(f"{item!r}: {problem}")
        routes.add((method, path))
    return frozenset(routes)


def path_problem(path: str) -> str | None:
    """Why `path` is not a plain origin-form path (None: it is one)."""
    if not path.startswith("/"):
        return "only origin-form targets (/path?query) are accepted"
    for segment in path[1:].split("/"):
        decoded = unquote(segment)
        if decoded in (".", ".."):
            return "dot segments ('.', '..') are refused"
        if "/" in decoded or "\\" in decoded:
            return "an encoded slash in a path segment is refused"
    if "//" in path:
        return "empty path segments ('//') are refused"
    return None


def split_target(raw_target: str) -> str:
    """The path of a request target, or `SluiceError` 400 if it is not origin-form and clean."""
    path = raw_target.partition("?")[0]
    problem = path_problem(path)
    if problem is not None:
        raise SluiceError(ErrorCode.BAD_REQUEST, f"request target refused: {problem}")
    return path


def route_error(method: str, path: str, routes: frozenset[Route]) -> SluiceError:
    """404 for a path that is not forwarded, 405 for a forwarded path with another method."""
    methods = sorted(m for m, p in routes if p == path)
    if methods:
        return SluiceError(
            ErrorCode.METHOD_NOT_ALLOWED,
            f"{method} {path}: allowed methods are {', '.join(methods)}",
        )
    return SluiceError(
        ErrorCode.NOT_FOUND,
        f"{method} {path} is not forwarded (allowed: OpenAI inference APIs and /v1/models; "
        "add routes with --proxy-allowed-routes)",
    )
