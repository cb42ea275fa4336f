"""The `sluice` command line: upstream-compatible flags and the subcommands. The outermost shell;
may import anything."""
