"""Flow control: priority bands ▸ flows ▸ queues, fairness and ordering policies, capacity,
TTLs and the sans-I/O controller. May import `sluice.api` and `sluice.requests` (types only)."""
