"""Simulated vLLM engines: a sans-I/O engine model, a virtual-time runner and an HTTP front with
vLLM's API and metrics (docs/sim.md). Imports nothing of sluice: it stands in for a real vLLM."""
