"""The wall-clock suite on real engines (`sluice bench --mode wall --engines llamacpp`): two
`llama-server` processes (llama.cpp built by `make engines`, SmolLM2-135M Q4_0, `--threads 1`,
2 slots each) on their own loopback addresses, and the scenarios scaled to what they serve.

Sizes. Measured here with `--threads 1`: ~125 generated tokens/s and ~700 prompt tokens/s per
server (Q4_0), a repeated prefix's prefill gone (llama.cpp keeps each slot's last prompt and
picks the slot whose cache is most similar). So the shared-prefix scenario is the one the issue
measured prefix routing on — 4 system prompts of 600 tokens, 2 engines with 2 slots, a question
and 16 tokens out — at one load (each arm in turn, a short window), and two-bands is the
simulator's two-class overload with chat lengths cut to fit: interactive (priority 10) offering
30% of the pool's capacity, batch (priority 0) filling the load to 150%. The capacity is measured
first, in the same run (`pool_requests_per_s`): what a machine's two servers complete depends on
the machine, and an assumed figure made "150%" anything from 100% to 400%.
"""

from __future__ import annotations

import functools
from dataclasses import replace

from sluice.bench import workloads as w
from sluice.bench.engines.build import MODEL_NAME
from sluice.bench.scenarios import FIXED, INTERACTIVE_SHARE, ISOLATION, Scenario
from sluice.bench.wall.capacity import saturated_requests_per_s
from sluice.bench.wall.processes import start_llamacpp_engines

ENGINES = 2
SLOTS = 2  # requests each server runs at once (`--parallel`)
THREADS = 1
# The two-bands capacity probe: this many requests of the mix, one client per slot
# (`capacity.saturated_requests_per_s`).
PROBE_REQUESTS = 48

# The workloads' lengths are the simulator's tokens; SmolLM2's tokenizer splits that text into
# ~3.9x as many (a 600-token prefix is 2,313 llama tokens, past a 2,048-token slot). So the
# sizes below are a quarter of the llama.cpp tokens they stand for.
LLAMA_TOKENS_PER_SIM_TOKEN = 4
# shared prefix: the measurement (4 groups x ~600 llama tokens, 2 slots per engine)
PREFIX_GROUPS, PREFIX_TOKENS, QUESTION_TOKENS, PREFIX_OUTPUT = 4, 150, 10, 16
# two-bands: chat-like lengths, shorter (prompt median ~160 llama tokens, output median 32)
CHAT_PROMPT, CHAT_OUTPUT, CHAT_SIGMA = 40, 32, 0.6


def _shared_prefix(seed: int, load: float, quick: bool) -> w.Workload:
    workload = w.shared_prefix(
        seed=seed,
        qps=load,
        duration_s=40.0,
        groups=PREFIX_GROUPS,
        system_tokens=PREFIX_TOKENS,
        question_tokens=QUESTION_TOKENS,
        output_tokens=PREFIX_OUTPUT,
    )
    return _served(replace(workload, name="llamacpp-shared-prefix"))


def _served(workload: w.Workload) -> w.Workload:
    """The workload naming the model the servers serve (peers route by it)."""
    arrivals = tuple(replace(a, model=MODEL_NAME) for a in workload.arrivals)
    return replace(workload, arrivals=arrivals)


def _chat(name: str, qps: float) -> w.TenantSpec:
    return w.TenantSpec(
        name,
        name,
        qps,
        CHAT_PROMPT,
        CHAT_OUTPUT,
        sigma=CHAT_SIGMA,
        max_prompt_tokens=150,
        max_output_tokens=96,
    )


def _two_bands_mix(seed: int, requests_per_s: float, load: float) -> w.Workload:
    interactive = INTERACTIVE_SHARE * requests_per_s
    batch = max(0.0, load - INTERACTIVE_SHARE) * requests_per_s
    specs = (_chat("interactive", interactive), _chat("batch", batch))
    workload = w.tenants(
        "llamacpp-two-bands",
        seed=seed,
        duration_s=40.0,
        specs=specs,
        objectives={"interactive": 10, "batch": 0},
    )
    return _served(workload)


@functools.lru_cache(maxsize=8)
def pool_requests_per_s(seed: int) -> float:
    """What the two servers complete of the two-bands mix per second when saturated, measured
    on this machine (once per run and seed): the unit of the scenario's offered load."""
    # The same lengths at any rate: the rate only spaces arrivals, which a closed loop ignores.
    probe = _two_bands_mix(seed ^ 0xCA9, 1.0, 1.0)
    probe = replace(probe, arrivals=probe.arrivals[:PROBE_REQUESTS])
    return saturated_requests_per_s(
        lambda: start_llamacpp_engines(ENGINES, SLOTS, THREADS), probe, ENGINES * SLOTS
    )


def _two_bands(seed: int, load: float, quick: bool) -> w.Workload:
    return _two_bands_mix(seed, pool_requests_per_s(seed), load)


# the simulator scenario each one stands for -> its llama.cpp version
LLAMACPP_SCENARIOS: dict[str, Scenario] = {
    "shared-prefix": Scenario(
        "llamacpp-shared-prefix",
        f"{ENGINES} llama-server (SmolLM2-135M Q4_0, {THREADS} thread, {SLOTS} slots each); "
        f"{PREFIX_GROUPS} groups x (~{PREFIX_TOKENS * LLAMA_TOKENS_PER_SIM_TOKEN}-token system "
        f"prompt + ~{QUESTION_TOKENS * LLAMA_TOKENS_PER_SIM_TOKEN}-token question), "
        f"{PREFIX_OUTPUT} out",
        FIXED,
        _shared_prefix,
        loads=(2.0,),
        quick_loads=(2.0,),
        warmup_frac=0.0,
    ),
    "two-bands": Scenario(
        "llamacpp-two-bands",
        f"{ENGINES} llama-server ({THREADS} thread, {SLOTS} slots each); interactive (priority "
        f"10) offering {INTERACTIVE_SHARE:.0%} of what the pool completes when saturated "
        "(measured first, in the same run) + batch (priority 0) filling the offered load to "
        "150%; chat-like lengths (prompt median "
        f"~{CHAT_PROMPT * LLAMA_TOKENS_PER_SIM_TOKEN}, output median {CHAT_OUTPUT})",
        ISOLATION,
        _two_bands,
        loads=(1.5,),
        quick_loads=(1.5,),
        protected=("interactive",),
        load_unit="x capacity",
    ),
}
