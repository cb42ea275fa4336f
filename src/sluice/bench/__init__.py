"""Benchmarks: workloads, arms, virtual-time and wall-clock runners, reports.
May import everything."""
