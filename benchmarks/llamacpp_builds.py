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
import json
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from sluice.bench.engines.build import find_install
from sluice.bench.harness.ports import free_port

PROMPT = " ".join(f"word{i} is a fine thing to say about the number {i}." for i in range(40))
OUTPUT_TOKENS = 64


def serve_round(binary: Path, model: Path, requests: int) -> tuple[float, float, float]:
    """(median request s, median prompt tokens/s, median generated tokens/s)."""
    port = free_port()
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--threads", "1", "--parallel", "1", "--ctx-size", "4096", "--no-webui"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{binary} did not become healthy") from None
                time.sleep(0.1)
        walls, prompts, generated = [], [], []
        for i in range(requests):
            body = {"prompt": f"{i} {PROMPT}", "n_predict": OUTPUT_TOKENS, "cache_prompt": False}
            body["temperature"] = 0
            headers = {"Content-Type": "application/json"}
            data = json.dumps(body).encode()
            request = urllib.request.Request(f"{base}/completion", data, headers)
            started = time.monotonic()
            answer = json.loads(urllib.request.urlopen(request, timeout=120).read())
            walls.append(time.monotonic() - started)
            prompts.append(answer["timings"]["prompt_per_second"])
            generated.append(answer["timings"]["predicted_per_second"])
        return statistics.median(walls), statistics.median(prompts), statistics.median(generated)
    finally:
        server.terminate()
        server.wait()


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
    ratios = []
    for r in range(args.rounds):
        order = list(builds) if r % 2 == 0 else list(reversed(builds))
        walls = {}
        for name in order:
            wall, prompt_tps, gen_tps = serve_round(builds[name], install.model, args.requests)
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
