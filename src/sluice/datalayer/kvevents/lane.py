"""The native fast lane (`_lane.c`): where the KV-event subscribers spend their CPU at 100
engines, it reads each in-order stream's SUB socket, decodes vLLM's batches and applies them
to the precise index's dict in one C call per drain for all endpoints, instead of a Python call
per message (`benchmarks/kv_event_ingestion.py`; docs/scheduling.md has the numbers).

It takes only the common case, and exactly as the Python path would: the next batch in
sequence, of BlockStored / BlockRemoved events in either of vLLM's layouts, for an endpoint
whose block size and first-block hash were already checked and whose KV-cache group is known.
Anything else closes the lane before any of it is applied and goes to the Python path with the
rest of the socket; that path stays the reference (`tests/datalayer/test_kv_lane.py` feeds both
the same streams and compares them). The lane is a cache of the stream's position and of the
endpoint's index entry: `EndpointStream` refreshes it after every change it makes itself and
takes in what the lane did before it reads or changes anything (`stream.LaneEntry` is what it
holds of the index).

The lane applies to the index's `KeyTable` (`owners_map`), the extension's other part.

`NATIVE` is the extension bound to pyzmq's libzmq (the very library whose sockets pyzmq made,
found among the process's mapped files), or None where it was not built (no C compiler at
install time) or cannot bind: the subscribers then run the Python path alone.
"""

from __future__ import annotations

import os
from types import ModuleType


def _libzmq_path() -> str | None:
    """The libzmq file this process mapped for pyzmq."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and os.path.basename(fields[5]).startswith("libzmq"):
                    return fields[5].strip()
    except OSError:
        return None
    return None


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


def _load() -> ModuleType | None:
    _lane = _EXTENSION
    if _lane is None:
        return None
    import zmq  # (here: the index imports this module for `owners_map` alone)

    _ = zmq.zmq_version()  # pyzmq's libzmq is loaded
    path = _libzmq_path()
    if path is None:
        return None
    try:
        _lane.bind(path)
    except ImportError:
        return None
    return _lane  # type: ignore[no-any-return]


NATIVE: ModuleType | None = _load()
