"""KV-cache events from the engines (vLLM's ZMQ publisher): `wire` decodes batches, `stream` is
one endpoint's sans-I/O state machine (ordering, gaps and replay, resets, staleness), `streams`
the pool's table of them; `subscriber` and `manager` are the socket shell. Part of `datalayer`:
may import `sluice.api` and the rest of `sluice.datalayer`."""
