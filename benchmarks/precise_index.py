"""Memory and lookup speed of the precise prefix index for 64 endpoints x 31,250 blocks (2 M
blocks; the memory goal of today's approximate index: RSS < 300 MB, benchmarks/
scheduling_latency.py), beside today's index in the same run.

Each index runs in its own process (so RSS is its own): it is filled through its real entry
point — KV-event batches (BlockStored chains of 256 blocks, as 16 KiB prompts) for the precise
index, dispatches for the approximate one — then churned (as many blocks again stored and
evicted), then asked for the longest cached prefix of 256-block prompts. Reported: RSS after the
fill and after the churn, match() latency per prompt, and what it costs to make a prompt's keys
(tokenize + hash 256 blocks, the first half a system prompt seen before: vLLM's sha256 chain in
the engine key space, memoized per block; xxh3 in Sluice's own).

Run: .venv/bin/python benchmarks/precise_index.py [--endpoints 64] [--blocks 31250]
     [--index all|precise-engine|precise-own|approximate] [--lookups 3000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import subprocess
import sys
import time
from collections import deque

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.cpu import rss_mb

PROMPT_BLOCKS = 256  # a 16 KiB prompt: 4,096 tokens of 4 characters, blocks of 16 tokens


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def run_precise(space: str, endpoints: int, blocks: int, lookups: int) -> dict[str, float]:
    from sluice.datalayer.kvevents.wire import BlockRemoved, BlockStored, raw_token_ids
    from sluice.scheduling.precise_hashing import BlockKeys
    from sluice.scheduling.precise_index import KEY_MASK, PreciseIndex
    from sluice.util.sim_tokens import token_ids as text_token_ids

    start = rss_mb()
    keys = BlockKeys(16, hash_seed="0" if space == "engine" else "")
    index = PreciseIndex(keys)
    base_tokens = list(range(16 * PROMPT_BLOCKS))
    # What the engines sent is not kept (RSS is the index's own): prompt p's hashes are drawn
    # again from a generator seeded with p when its blocks are evicted.
    prompts: dict[str, deque[int]] = {}
    stores = [0]

    def hashes_of(prompt: int) -> list[int]:
        rng = random.Random(prompt)
        return [rng.getrandbits(64) for _ in range(PROMPT_BLOCKS + 1)]

    def store(endpoint: str) -> None:
        stores[0] += 1
        prompt = stores[0]
        *hashes, parent_hash = hashes_of(prompt)
        # A parent outside the index: no first block to check the seed on (synthetic hashes).
        # In the own key space that parent is unknown, so chains start at the prompt start.
        parent = None if space == "own" else parent_hash
        base_tokens[0] = prompt  # a new first token: every block of the prompt is new
        tokens = raw_token_ids(base_tokens)
        index.apply(endpoint, [BlockStored(hashes, parent, tokens, 16)])
        prompts[endpoint].append(prompt)

    t0 = time.perf_counter()
    names = [f"pod-{i}" for i in range(endpoints)]
    for name in names:
        prompts[name] = deque()
        for _ in range(-(-blocks // PROMPT_BLOCKS)):
            store(name)
    fill_s = time.perf_counter() - t0
    gc.collect()
    filled = rss_mb()
    held = len(index)
    # Churn: every endpoint stores as many blocks again, evicting its oldest prompt each time.
    for name in names:
        for _ in range(len(prompts[name])):
            index.apply(name, [BlockRemoved(hashes_of(prompts[name].popleft())[:-1])])
            store(name)
    gc.collect()
    churned = rss_mb()
    # Lookups of each endpoint's last prompt: the engine's hashes in the engine key space, the
    # keys recomputed from its token ids in the own key space.
    samples = []
    for n in names[:8]:
        if space == "own":
            base_tokens[0] = prompts[n][-1]
            samples.append(keys.request_keys(base_tokens, max_blocks=PROMPT_BLOCKS))
        else:
            samples.append([h & KEY_MASK for h in hashes_of(prompts[n][-1])[:-1]])
    times = []
    for k in range(lookups):
        prompt = samples[k % len(samples)]
        t = time.perf_counter()
        index.match(prompt)
        times.append(time.perf_counter() - t)
    # A prompt's keys: a 16 KiB prompt whose first half (a system prompt) was seen before.
    system = "You are a helpful assistant. " * 282
    key_times = []
    for k in range(200):
        text = system + f"question {k}: " + "x" * (16384 - len(system) - 20)
        t = time.perf_counter()
        keys.request_keys(text_token_ids(text), max_blocks=PROMPT_BLOCKS)
        key_times.append(time.perf_counter() - t)
    return {
        "blocks": held,
        "fill_s": fill_s,
        "rss_start": start,
        "rss_filled": filled,
        "rss_churned": churned,
        "match_p50_us": pct(times, 0.5) * 1e6,
        "match_p99_us": pct(times, 0.99) * 1e6,
        "keys_p50_us": statistics.median(key_times) * 1e6,
    }


def run_approximate(endpoints: int, blocks: int, lookups: int) -> dict[str, float]:
    from sluice.scheduling.prefix_index import PrefixIndex

    rng = random.Random(1)
    start = rss_mb()
    index = PrefixIndex()
    t0 = time.perf_counter()
    names = [f"pod-{i}" for i in range(endpoints)]
    recent: dict[str, list[int]] = {}  # only the last prompt of each: the index owns the rest
    for name in names:
        for _ in range(-(-blocks // PROMPT_BLOCKS)):
            hashes = [rng.getrandbits(60) for _ in range(PROMPT_BLOCKS)]
            index.add(name, hashes, blocks)
            recent[name] = hashes
    fill_s = time.perf_counter() - t0
    gc.collect()
    filled = rss_mb()
    held = len(index)
    for name in names:
        for _ in range(-(-blocks // PROMPT_BLOCKS)):
            hashes = [rng.getrandbits(60) for _ in range(PROMPT_BLOCKS)]
            index.add(name, hashes, blocks)
            recent[name] = hashes
    gc.collect()
    churned = rss_mb()
    samples = [recent[n] for n in names[:8]]
    times = []
    for k in range(lookups):
        t = time.perf_counter()
        index.match(samples[k % len(samples)])
        times.append(time.perf_counter() - t)
    return {
        "blocks": held,
        "fill_s": fill_s,
        "rss_start": start,
        "rss_filled": filled,
        "rss_churned": churned,
        "match_p50_us": pct(times, 0.5) * 1e6,
        "match_p99_us": pct(times, 0.99) * 1e6,
        "keys_p50_us": float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=31_250, help="blocks per endpoint")
    parser.add_argument("--lookups", type=int, default=3000)
    parser.add_argument(
        "--index", default="all", choices=("all", "precise-engine", "precise-own", "approximate")
    )
    args = parser.parse_args()
    if args.index == "all":
        print(
            f"{args.endpoints} endpoints x {args.blocks:,} blocks; prompts of {PROMPT_BLOCKS} "
            "blocks; each index in its own process"
        )
        print(
            f"{'index':<16}{'blocks':>11}{'fill s':>8}{'RSS fill':>10}{'RSS churn':>11}"
            f"{'match p50':>11}{'p99':>8}{'keys p50':>10}"
        )
        for which in ("approximate", "precise-engine", "precise-own"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    *("--index", which, "--endpoints", str(args.endpoints)),
                    *("--blocks", str(args.blocks), "--lookups", str(args.lookups)),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = {k: float(v) for k, v in (kv.split("=") for kv in out.split())}
            print(
                f"{which:<16}{int(r['blocks']):>11,}{r['fill_s']:>8.1f}"
                f"{r['rss_filled']:>8.0f}MB{r['rss_churned']:>9.0f}MB"
                f"{r['match_p50_us']:>9.0f}us{r['match_p99_us']:>6.0f}us"
                f"{r['keys_p50_us']:>8.0f}us"
            )
        return
    if args.index == "approximate":
        result = run_approximate(args.endpoints, args.blocks, args.lookups)
    else:
        space = args.index.split("-")[1]
        result = run_precise(space, args.endpoints, args.blocks, args.lookups)
    print(" ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
