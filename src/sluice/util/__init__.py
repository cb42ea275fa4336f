"""Small pure helpers shared across packages (durations, quantities). Imports nothing of ours."""
