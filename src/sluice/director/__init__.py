"""The director: the one `Pipeline` both front ends drive — parse, flow control, late-binding
placement, completion. `core` (the sans-I/O DispatchCore and the asyncio Director), `room`
(when a request may go, and where), `dispatched` (an admitted request). May import the core
packages; the front ends import it."""

from sluice.director.core import Director, DirectorSettings, DispatchCore
from sluice.director.dispatched import DispatchedRequest
from sluice.director.room import Room, steer_prefills

__all__ = [
    "Director",
    "DirectorSettings",
    "DispatchCore",
    "DispatchedRequest",
    "Room",
    "steer_prefills",
]
