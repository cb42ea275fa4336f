"""Sluice's own /metrics: names, client-chosen labels, exposition."""
