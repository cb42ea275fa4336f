"""Small pure helpers shared across packages: durations; metric labels clients choose
(`labels`), labelled metric families that render in slices within a byte budget (`series`),
which metric names are exported (`exported_names`). Imports nothing of ours, so every package
may import it."""
