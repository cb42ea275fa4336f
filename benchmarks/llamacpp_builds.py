"""Two `llama-server` builds serving the same model, alternating rounds: is one slower? Each
round starts one build (one thread, one slot), sends the same uncached prompts one at a time and
reports the median request time and the server's own prompt and generation rates; the ratio per
round compares builds within one stretch of the machine's load. By default the cached install
(`make engines`) against the binary given.

    .venv/bin/python benchmarks/llamacpp_builds.py --against /path/to/other/llama-server
        [--rounds 9] [--requests 6]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

from sluice.bench.engines.build import LlamaCppInstall, find_install
from sluice.bench.engines.llamacpp import LlamaServerSettings, completion, start_llama_servers

PROMPT = " ".join(f"word{i} is a fine thing to say about the number {i}." for i in range(40))
OUTPUT_TOKENS = 64
ONE_SLOT = LlamaServerSettings(threads=1, slots=1, context_per_slot=4096)


def serve_round(install: LlamaCppInstall, requests: int) -> tuple[float, float, float]:
    """(median request s, median prompt tokens/s, median generated tokens/s) of `install`'s
    server, started for this round."""
    walls, prompts, generated = [], [], []
    with start_llama_servers(1, install, ONE_SLOT) as servers:
        for i in range(requests):
            body = {"prompt": f"{i} {PROMPT}", "n_predict": OUTPUT_TOKENS, "cache_prompt": False}
            body["temperature"] = 0
            started = time.monotonic()
            answer = completion(servers[0].url, body, path="/completion")
            walls.append(time.monotonic() - started)
            timings = answer["timings"]
            assert isinstance(timings, dict)
            prompts.append(float(timings["prompt_per_second"]))
            generated.append(float(timings["predicted_per_second"]))
    return statistics.median(walls), statistics.median(prompts), statistics.median(generated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="another llama-server")
    parser.add_argument("--binary", type=Path, help="default: the cached install's llama-server")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=6)
    args = parser.parse_args()
    install = find_install()
    if install is None:
        raise SystemExit("no llama.cpp install: run `make engines` first")
    builds = {"this": args.binary or install.server, "against": args.against}
    installs = {name: replace(install, server=binary) for name, binary in builds.items()}
    ratios = []
    for r in range(args.rounds):
        order = list(builds) if r % 2 == 0 else list(reversed(builds))
        walls = {}
        for name in order:
            wall, prompt_tps, gen_tps = serve_round(installs[name], args.requests)
            walls[name] = wall
            print(
                f"round {r + 1}/{args.rounds} {name:7} request {wall * 1000:6.0f} ms  "
                f"prompt {prompt_tps:6.0f} tok/s  generation {gen_tps:5.1f} tok/s",
                flush=True,
            )
        ratios.append(walls["this"] / walls["against"])
    print(
        f"this / against, request time: median round {statistics.median(ratios):.2f} "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f}); this = {builds['this']}"
    )


if __name__ == "__main__":
    main()
