"""The director: the one `Pipeline` both front ends drive — parse, flow control, late-binding
placement, completion. `core` (the sans-I/O DispatchCore and the asyncio Director), `room`
(one dispatch call's view of `sluice.room`, binding the endpoint at release), `dispatched` (an
admitted request). May import the core packages; the front ends import it."""

from sluice.director.core import Director, DirectorSettings, DispatchCore
from sluice.director.dispatched import DispatchedRequest
from sluice.director.room import Release

__all__ = [
    "Director",
    "DirectorSettings",
    "DispatchCore",
    "DispatchedRequest",
    "Release",
]
