"""`sluice` entry point: one subcommand per job."""

from __future__ import annotations

import sys
from collections.abc import Callable

from sluice import __version__

USAGE = """usage: sluice <command> [flags]

commands:
  up       the embedded default: 4 simulated engines + Sluice (proxy :8080, ext_proc :9002,
           metrics :9090) from examples/quickstart
  serve    run the Endpoint Picker (ext_proc gRPC, health, metrics; --proxy-port for the proxy)
  sim      run simulated vLLM engines (`sluice sim --count 4 --port 8001`)
  bench    run benchmark scenarios (`sluice bench --all --quick`)
  top      the live view in a terminal (`sluice top --metrics-port 9090`)
  crds     print the CRD manifests generated from Sluice's models (`--group llm-d.ai`)
  version  print the version

`sluice <command> --help` describes each command's flags.
"""


def _top(argv: list[str]) -> int:
    from sluice.dashboard.top import top_main

    return top_main(argv)


def _serve(argv: list[str]) -> int:
    from sluice.cli.serve import serve_main

    return serve_main(argv)


def _up(argv: list[str]) -> int:
    from sluice.cli.up import up_main

    return up_main(argv)


def _sim(argv: list[str]) -> int:
    from sluice.sim.cli import main as sim_main

    return sim_main(argv)


def _bench(argv: list[str]) -> int:
    from sluice.bench.cli import main as bench_main

    return bench_main(argv)


def _crds(argv: list[str]) -> int:
    from sluice.api.crds import GROUPS, render_crds

    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: sluice crds [--group GROUP]\n\nPrints the CRDs (multi-document YAML) "
            "generated from Sluice's own resource models: InferencePool, and InferenceObjective\n"
            "and InferenceModelRewrite in both API groups. --group keeps the objective and "
            f"rewrite CRDs of one group ({' or '.join(GROUPS[1:])}).\n"
            "Where both groups are installed, Sluice reads only llm-d.ai."
        )
        return 0
    group: str | None = None
    if argv[:1] == ["--group"] and len(argv) == 2:
        group = argv[1]
    elif len(argv) == 1 and argv[0].startswith("--group="):
        group = argv[0].partition("=")[2]
    elif argv:
        print(
            f"sluice crds: unexpected arguments {argv}; see `sluice crds --help`", file=sys.stderr
        )
        return 2
    try:
        sys.stdout.write(render_crds(group))
    except ValueError as exc:
        print(f"sluice crds: {exc}", file=sys.stderr)
        return 2
    return 0


def _version(argv: list[str]) -> int:
    print(f"sluice {__version__}")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "up": _up,
    "serve": _serve,
    "sim": _sim,
    "top": _top,
    "bench": _bench,
    "crds": _crds,
    "version": _version,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"sluice: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    return command(args[1:])
