"""What other Sluice replicas of the pool say, as flow control needs it (issue #20).

Active-active replicas each run their own `FlowController`; `sluice.replicas` merges the
others' queue summaries every sync interval and hands the controller a `Peers` view. With it
the controller keeps one pool-wide order:

- **one priority order**: a band is not released while a higher band waits on another replica
  (the room it would take could go to that replica instead: the room leases follow demand);
- **one fair share**: a flow's virtual token counter counts its service on every replica
  (`Flow.remote`), and a flow is held while another replica has a flow of the same band
  waiting whose pool-wide counter is lower by more than `slack` (the skew one sync interval
  of staleness allows).

Without peers (one replica, or the store unreachable) nothing changes: local-only.
"""

from __future__ import annotations

from typing import Protocol


class Peers(Protocol):
    def waiting_above(self, priority: int) -> bool:
        """Whether another replica has a request of a band above `priority` waiting."""
        ...

    def holds(self, priority: int, fairness_id: str, key: float) -> bool:
        """Whether flow `fairness_id` of band `priority`, whose pool-wide counter is `key`,
        must let a less-served flow of its band waiting on another replica go first."""
        ...
