"""The director: the one `Pipeline` both front ends drive — parse, flow control, the room,
late-binding placement, completion. `contract` (what front ends program against), `core` (the
sans-I/O DispatchCore), `shell` (the asyncio Director around it), `release` (one dispatch call's
view of the room), `dispatched` (an admitted request), `ports` (what they need of each other).
May import the core packages; the front ends import `contract` and the shell."""

from sluice.director.core import DirectorSettings, DispatchCore
from sluice.director.dispatched import DispatchedRequest
from sluice.director.release import Release
from sluice.director.shell import Admission, Director

__all__ = [
    "Admission",
    "Director",
    "DirectorSettings",
    "DispatchCore",
    "DispatchedRequest",
    "Release",
]
