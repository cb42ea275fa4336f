"""Simulated vLLM engines: a sans-I/O engine model, a virtual-time runner and an HTTP front with
vLLM's API and metrics. Stands in for a real vLLM, so it imports nothing of the EPP."""
