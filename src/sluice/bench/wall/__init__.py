"""Wall-clock mode, one job per module: `processes` (engines and routers, started and
stopped), `load` (the load generator), `sampling` (the engines' own counters), `run` (one run and
one scenario), `render` (the report). `sluice.bench.runner_wall` is the entry point."""
