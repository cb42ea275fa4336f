"""Prefixes still being computed: blocks an endpoint was sent but has not finished computing.

The prefix index learns at dispatch, so right after a request is sent its endpoint "holds" the
prompt's blocks — while the engine is still prefilling them. A second request with the same new
prefix sent there now does not find them cached: vLLM reuses a block only once a step computed
it, and llama.cpp keeps each slot's cache to itself until the slot is free, so a second request
on another slot computes the whole prefix again (measured: 7-10 cold prefills where 4 would do).
This table tells "cached" from "being computed": per block hash, the endpoint and the request
computing it, until that request's prefill ends (vLLM) or it completes (llama.cpp).

With llama.cpp a slot is busy until its request completes, so a cached prefix is as unusable
as one being computed while another request uses its slot: in `completion` mode every request
takes its whole matched prefix in line, and requests that share a prefix on one engine go one
after the other instead of all at once onto slots that do not have it (each a cold prefill that
also evicts another prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

_LIMIT = 8192  # requests tracked; the oldest is dropped beyond (its end was never reported)


@dataclass(frozen=True, slots=True)
class Blocked:
    """A match on one endpoint that runs through blocks still being computed there."""

    ready: int  # leading blocks already computed
    matched: int  # leading blocks matched, computed or not
    total: int  # blocks in the prompt
    blocker: str  # the request computing block `ready`


class ComputingPrefixes:
    """Per block hash and endpoint, the requests using it there in dispatch order; the first
    computes it (or, with llama.cpp, holds the slot that has it), the others wait their turn:
    when it ends, the block passes to the next."""

    def __init__(self, limit: int = _LIMIT) -> None:
        self._limit = limit
        self._owners: dict[int, dict[str, list[str]]] = {}  # hash -> endpoint -> requests
        self._requests: dict[str, tuple[str, list[int]]] = {}  # request -> (endpoint, hashes)

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._requests

    def start(self, request_id: str, endpoint: str, hashes: list[int]) -> None:
        """`request_id` was sent to `endpoint`, where it uses `hashes` until it ends. A block an
        earlier request still uses there stays that request's until it ends."""
        if not hashes:
            return
        self.end(request_id)
        for h in hashes:
            self._owners.setdefault(h, {}).setdefault(endpoint, []).append(request_id)
        self._requests[request_id] = (endpoint, hashes)
        if len(self._requests) > self._limit:
            self.end(next(iter(self._requests)))

    def end(self, request_id: str) -> None:
        """The request's blocks are computed (or it ended): they are plain cache now, or the
        next request's in line."""
        entry = self._requests.pop(request_id, None)
        if entry is None:
            return
        endpoint, hashes = entry
        owners = self._owners
        for h in hashes:
            by_endpoint = owners.get(h, {})
            line = by_endpoint.get(endpoint)
            if line is None:
                continue
            if request_id in line:
                line.remove(request_id)
            if not line:
                del by_endpoint[endpoint]
                if not by_endpoint:
                    del owners[h]

    def blocked(self, endpoint: str, hashes: list[int], matched: int) -> Blocked | None:
        """Where the first `matched` blocks of `hashes` on `endpoint` meet one still being
        computed there (None: all of them are computed)."""
        owners = self._owners
        if not owners:
            return None
        for i in range(min(matched, len(hashes))):
            by_endpoint = owners.get(hashes[i])
            if by_endpoint is not None:
                line = by_endpoint.get(endpoint)
                if line:
                    return Blocked(i, matched, len(hashes), line[0])
        return None

    def ahead_of(self, request_id: str) -> str | None:
        """An earlier request still using a block `request_id` is in line for (None: it is
        first in line for all of them, or untracked)."""
        entry = self._requests.get(request_id)
        if entry is None:
            return None
        endpoint, hashes = entry
        owners = self._owners
        for h in hashes:
            line = owners.get(h, {}).get(endpoint)
            if line and line[0] != request_id:
                return line[0]
        return None
