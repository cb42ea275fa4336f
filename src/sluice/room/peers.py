"""Who waits on the pool's other Sluice replicas, as the room needs it (issue #20).

The room's reserves (headroom for a higher band, endpoints kept for the rest of a band, one
prefill at a time while prefills compete) are kept for whoever is expected to want room soon;
with active-active replicas that includes requests waiting on the others. `sluice.replicas`
sets `Room.peers` from its last sync; None means this replica alone (or the store is down).
"""

from __future__ import annotations

from typing import Protocol


class PeerDemand(Protocol):
    def waiting_above(self, priority: int) -> bool:
        """Whether another replica has a request of a band above `priority` waiting."""
        ...

    def others_waiting(self, priority: int, fairness_id: str) -> bool:
        """Whether another replica has a request of band `priority` from a flow other than
        `fairness_id` waiting."""
        ...

    def any_waiting(self) -> bool:
        """Whether another replica has any request waiting."""
        ...
