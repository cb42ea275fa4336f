"""How fast virtual time runs: simulated seconds and generated tokens per wall-clock second.

Replays two seeded workloads on a 4-engine llama-8b-h100 cluster, with and without the decode
fast-forward, and prints the speed of each; nothing is compared against a hard-coded number.

    .venv/bin/python benchmarks/sim_virtual_speed.py
"""

from __future__ import annotations

import random
import time

from sluice.bench.harness.child import exit_on_sigterm
from sluice.sim.engine import Engine
from sluice.sim.profiles import get_profile
from sluice.sim.request import SimRequest
from sluice.sim.virtual import VirtualCluster

WORKLOADS = {
    # name: (requests, mean arrival gap s, prompt tokens, output tokens)
    "chat (busy arrivals, 300-token answers)": (2000, 0.02, 800, 300),
    "long generations (2000-token answers)": (400, 0.2, 800, 2000),
}


def run(
    requests: int, gap: float, prompt: int, output: int, fast_forward: bool
) -> tuple[float, float, int]:
    profile = get_profile("llama-8b-h100")
    cluster = VirtualCluster(
        {f"e{i}": Engine(profile.engine, profile.cost) for i in range(4)}, fast_forward=fast_forward
    )
    rng = random.Random(0)
    t = 0.0
    for i in range(requests):
        t += rng.expovariate(1 / gap)
        system = f"system prompt {i % 10} ".ljust(4 * prompt // 2, ".")
        text = system + f"question {i} ".ljust(4 * prompt // 2, "?")
        cluster.submit(f"e{i % 4}", SimRequest.from_text(f"r{i}", text, max_tokens=output), at=t)
    started = time.perf_counter()
    cluster.run()
    return time.perf_counter() - started, cluster.now, requests * output


def main() -> int:
    for name, spec in WORKLOADS.items():
        for fast_forward in (False, True):
            wall, simulated, tokens = run(*spec, fast_forward=fast_forward)
            print(
                f"{name:42s} fast_forward={fast_forward!s:5s}  {simulated:7.1f} simulated s"
                f" in {wall:5.2f} s = {simulated / wall:6.1f}x real time,"
                f" {tokens / wall:9.0f} tokens/s"
            )
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
