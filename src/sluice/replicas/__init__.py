"""Active-active Sluice replicas that behave as one picker (issue #20, docs/replicas.md).

`summary` is what one replica publishes each sync; `view` merges the others' into what flow
control and the room ask (`flowcontrol.peers.Peers`, `room.peers.PeerDemand`); `leases`
splits each endpoint's in-flight cap by demand; `core` is the sans-I/O replica (what to
publish, what to apply, with `now` passed in); `store` talks to Redis/Valkey; `shell` is the
asyncio sync loop, with fall-back to local-only while the store is unreachable.
"""
