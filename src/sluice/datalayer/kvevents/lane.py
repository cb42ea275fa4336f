"""The native fast lane (`_lane.c`): where the KV-event subscribers spend their CPU at 100
engines, it reads every engine's PUB socket straight from its TCP connection (ZMTP 3.0 frames,
after the handshake `zmtp.py` makes) in one C call per drain for all endpoints, and for a stream
that is live and in order decodes vLLM's batches and applies them to the precise index's key
table — instead of libzmq's I/O thread waking for every message and a Python call per message
(`benchmarks/kv_event_ingestion.py`; docs/scheduling.md has the numbers).

It takes only the common case, and exactly as the Python path would: the next batch in
sequence, of BlockStored / BlockRemoved events in either of vLLM's layouts, for an endpoint
whose block size and first-block hash were already checked and whose KV-cache group is known.
Anything else closes the lane before any of it is applied and goes, with every message after
it, to the Python path (`EndpointStream.on_live`), which stays the reference
(`tests/datalayer/test_kv_lane.py` feeds both the same streams and compares them). The lane is
a cache of the stream's position and of the endpoint's index entry: `EndpointStream` refreshes
it after every change it makes itself and takes in what the lane did before it reads or changes
anything (`stream.LaneEntry` is what it holds of the index).

The lane applies to the index's `KeyTable` (`owners_map`), the extension's other part.

`NATIVE` is the extension, or None where it was not built (no C compiler at install time) or
`SLUICE_KV_LANE=0`: the subscribers then read pyzmq SUB sockets with the Python path alone.
"""

from __future__ import annotations

import os
from types import ModuleType


def _extension() -> ModuleType | None:
    if os.environ.get("SLUICE_KV_LANE", "1") == "0":  # the Python path alone (comparisons)
        return None
    try:
        from sluice.datalayer.kvevents import _lane  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _lane  # type: ignore[no-any-return]


_EXTENSION = _extension()


def owners_map() -> dict[int, int]:
    """The precise index's key -> holders map (engine key space): the extension's `KeyTable`
    where it is built — uint64 keys inline, one cache miss a lookup against a dict's three, a
    third of the memory — else a dict. A `KeyTable` has every dict operation the index uses
    (get, pop, setdefault, [], del, len, iteration, items)."""
    if _EXTENSION is None:
        return {}
    return _EXTENSION.KeyTable()  # type: ignore[no-any-return]


NATIVE: ModuleType | None = _EXTENSION
