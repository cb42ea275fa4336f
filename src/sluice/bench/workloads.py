"""Seeded workload generators: what clients send, and when.

A workload is a list of `Arrival`s (time, tenant, objective, prompt, output length) that both
runners replay unchanged. Prompt text is deterministic and sized for the simulator's tokenizer
(4 characters per token), and requests that share a prefix share its *text*, so the simulated
engines' prefix caches and Sluice's prefix index both see the sharing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import orjson
import xxhash

from sluice.sim.tokenizer import CHARS_PER_TOKEN, render_chat

MODEL = "sim-model"
BLOCK_TOKENS = 16  # the engines' KV block; prefixes are sized in whole blocks so they align


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request a client sends at virtual time `at` (seconds from the start of the run)."""

    at: float
    request_id: str
    tenant: str
    objective: str | None
    prompt: str = ""  # a completion prompt, or empty when `messages` is set
    messages: tuple[tuple[str, str], ...] = ()  # (role, content) for chat requests
    max_tokens: int = 64
    model: str = MODEL  # a LoRA adapter name when the request targets one
    stream: bool = True  # False: the whole response comes back at once, at its end
    # Sent straight to an engine, not through the router (other gateways, direct clients).
    bypass: bool = False

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.messages else "/v1/completions"

    def body(self, *, stream: bool | None = None) -> bytes:
        """The OpenAI request body a client would send (streamed as `self.stream` says)."""
        stream = self.stream if stream is None else stream
        doc: dict[str, object] = {"model": self.model, "max_tokens": self.max_tokens}
        if self.messages:
            doc["messages"] = [{"role": r, "content": c} for r, c in self.messages]
        else:
            doc["prompt"] = self.prompt
        doc["ignore_eos"] = True  # the output length is part of the workload, not the model
        doc["stream"] = stream
        if stream:
            doc["stream_options"] = {"include_usage": True}
        return orjson.dumps(doc)

    def headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "x-gateway-inference-fairness-id": self.tenant,
        }
        if self.objective:
            headers["x-gateway-inference-objective"] = self.objective
        return headers

    def engine_text(self) -> str:
        """The text the engine tokenizes (the rendered chat for chat requests)."""
        if self.messages:
            return render_chat({"role": r, "content": c} for r, c in self.messages)
        return self.prompt

    @property
    def lora(self) -> str | None:
        return None if self.model == MODEL else self.model


@dataclass(frozen=True)
class Workload:
    name: str
    arrivals: tuple[Arrival, ...]
    # objective name -> priority, as the InferenceObjectives of the pool would say
    objectives: Mapping[str, int] = field(default_factory=dict)
    adapters: tuple[str, ...] = ()
    # A closed loop: this many clients, each sending its next request (in `arrivals` order,
    # whose `at` is then ignored) as soon as its previous one ended. None: open loop.
    concurrency: int | None = None
    # (virtual time, engine index): that engine's process restarts then (an empty cache)
    restarts: tuple[tuple[float, int], ...] = ()
    # The arrival window it was built for (s): a replay may cut it shorter, never longer.
    # None where they are not drawn over one window (closed loops, sessions whose steps follow).
    window_s: float | None = None

    @property
    def duration_s(self) -> float:
        return self.arrivals[-1].at if self.arrivals else 0.0

    def only(self, *tenants: str) -> Workload:
        """The same workload with only some tenants' requests (the "unloaded" baseline)."""
        kept = tuple(a for a in self.arrivals if a.tenant in tenants)
        return replace(self, arrivals=kept, restarts=())


# -- text ---------------------------------------------------------------------------------


def text(tag: str, tokens: int) -> str:
    """Deterministic text of exactly `tokens` tokens; the same tag gives the same text, and
    distinct tags diverge in their first block (so they never share cache by accident)."""
    chars = tokens * CHARS_PER_TOKEN
    seed = xxhash.xxh64_intdigest(tag.encode())
    pieces = []
    for i in range(-(-chars // 16)):
        pieces.append(f"{xxhash.xxh64_hexdigest(i.to_bytes(4, 'little'), seed=seed)}")
    return "".join(pieces)[:chars]


def whole_blocks(tokens: int) -> int:
    return max(BLOCK_TOKENS, round(tokens / BLOCK_TOKENS) * BLOCK_TOKENS)


# -- arrival processes --------------------------------------------------------------------


def poisson_times(rng: random.Random, qps: float, duration_s: float) -> Iterator[float]:
    t = rng.expovariate(qps)
    while t < duration_s:
        yield t
        t += rng.expovariate(qps)


def bursty_times(
    rng: random.Random, qps: float, duration_s: float, *, burst: int, cv: float = 3.0
) -> Iterator[float]:
    """Bursts of `burst` simultaneous requests with gamma-distributed gaps (coefficient of
    variation `cv`), averaging `qps` (BLIS/ServeGen-style arrivals)."""
    shape = 1.0 / (cv * cv)
    mean_gap = burst / qps
    t = rng.gammavariate(shape, mean_gap / shape)
    while t < duration_s:
        for _ in range(burst):
            yield t
        t += rng.gammavariate(shape, mean_gap / shape)


def lognormal_tokens(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(median * math.exp(rng.gauss(0.0, sigma))))))


# -- generators ---------------------------------------------------------------------------


def shared_prefix(
    *,
    seed: int,
    qps: float,
    duration_s: float,
    groups: int,
    system_tokens: int,
    question_tokens: int,
    output_tokens: int,
) -> Workload:
    """inference-perf's `shared_prefix`: each request is one group's system prompt plus a
    fresh question; groups are drawn uniformly."""
    rng = random.Random(seed)
    system = [text(f"sys-{seed}-{g}", whole_blocks(system_tokens)) for g in range(groups)]
    arrivals = []
    for i, t in enumerate(poisson_times(rng, qps, duration_s)):
        g = rng.randrange(groups)
        prompt = system[g] + text(f"q-{seed}-{i}", question_tokens)
        arrivals.append(Arrival(t, f"sp-{i}", f"group-{g}", None, prompt, max_tokens=output_tokens))
    return Workload("shared-prefix", tuple(arrivals), window_s=duration_s)


def bypassing(workload: Workload, *, share: float, seed: int) -> Workload:
    """The same traffic with `share` of the requests sent to a random engine directly, as a
    second gateway or a direct client would (tenant "bypass"); the router never sees them."""
    rng = random.Random(seed ^ 0xB1)
    arrivals = tuple(
        replace(a, tenant="bypass", bypass=True) if rng.random() < share else a
        for a in workload.arrivals
    )
    return replace(workload, name=f"{workload.name}-bypass", arrivals=arrivals)


def restarting(workload: Workload, *, engines: int, first_s: float, every_s: float) -> Workload:
    """The same traffic with engine i's process restarted at `first_s + i * every_s`."""
    restarts = tuple((first_s + i * every_s, i) for i in range(engines))
    return replace(workload, name=f"{workload.name}-restarts", restarts=restarts)


def hot_prefix(
    *, seed: int, qps: float, duration_s: float, system_tokens: int, output_tokens: int
) -> Workload:
    """Every request shares one long prefix: a router that follows the cache alone piles
    everything onto one endpoint (llm-d #1029)."""
    return shared_prefix(
        seed=seed,
        qps=qps,
        duration_s=duration_s,
        groups=1,
        system_tokens=system_tokens,
        question_tokens=64,
        output_tokens=output_tokens,
    )


def sharegpt_like(
    *,
    seed: int,
    qps: float,
    duration_s: float,
    tenant: str = "default",
    objective: str | None = None,
    prefix: str = "sg",
) -> Workload:
    """No sharing; prompt and output lengths lognormal around ShareGPT's medians."""
    rng = random.Random(seed)
    arrivals = []
    for i, t in enumerate(poisson_times(rng, qps, duration_s)):
        prompt_tokens = lognormal_tokens(rng, 250, 0.9, 8, 4000)
        output_tokens = lognormal_tokens(rng, 180, 0.8, 4, 1000)
        arrivals.append(
            Arrival(
                t,
                f"{prefix}-{i}",
                tenant,
                objective,
                text(f"{prefix}-{seed}-{i}", prompt_tokens),
                max_tokens=output_tokens,
            )
        )
    return Workload("sharegpt", tuple(arrivals), window_s=duration_s)


def closed_loop(
    *,
    seed: int,
    clients: int,
    requests: int,
    prompt_tokens: int,
    output_tokens: int,
    streamed_share: float,
    name: str = "closed-loop",
) -> Workload:
    """`clients` clients, each sending its next request as soon as its last one ended, until
    `requests` were sent: unique prompts (no cache sharing), `streamed_share` of them streamed
    (the rest answered in one piece at their end, as most batch and SDK clients ask)."""
    rng = random.Random(seed)
    arrivals = tuple(
        Arrival(
            0.0,
            f"cl-{i}",
            "default",
            None,
            text(f"cl-{seed}-{i}", prompt_tokens),
            max_tokens=output_tokens,
            stream=rng.random() < streamed_share,
        )
        for i in range(requests)
    )
    return Workload(name, arrivals, concurrency=clients)


def bursty(*, seed: int, qps: float, duration_s: float, burst: int = 16) -> Workload:
    """Fixed 1k-in / 128-out requests arriving in bursts far above the pool's instant room."""
    rng = random.Random(seed)
    arrivals = [
        Arrival(t, f"b-{i}", "default", None, text(f"b-{seed}-{i}", 1024), max_tokens=128)
        for i, t in enumerate(bursty_times(rng, qps, duration_s, burst=burst))
    ]
    return Workload("bursty", tuple(arrivals), window_s=duration_s)


def multi_turn(
    *,
    seed: int,
    users: int,
    rounds: int,
    think_s: float,
    system_tokens: int,
    turn_tokens: int,
    answer_tokens: int,
) -> Workload:
    """Chat sessions: a shared system prompt, then each user's history grows by a question and
    an answer per round (production-stack's multi-round QA). The answer text stands in for what
    the model said, so the next round's prompt extends the previous one."""
    rng = random.Random(seed)
    system = text(f"mt-sys-{seed}", whole_blocks(system_tokens))
    arrivals = []
    for u in range(users):
        history: list[tuple[str, str]] = [("system", system)]
        t = rng.uniform(0.0, think_s)
        for r in range(rounds):
            history.append(("user", text(f"mt-{seed}-{u}-{r}-q", turn_tokens)))
            arrivals.append(
                Arrival(
                    t,
                    f"mt-{u}-{r}",
                    f"user-{u}",
                    None,
                    messages=tuple(history),
                    max_tokens=answer_tokens,
                )
            )
            history.append(("assistant", text(f"mt-{seed}-{u}-{r}-a", answer_tokens)))
            t += rng.expovariate(1.0 / think_s)
    arrivals.sort(key=lambda a: a.at)
    return Workload("multi-turn", tuple(arrivals))


def lora_mix(
    *,
    seed: int,
    qps: float,
    duration_s: float,
    adapters: int,
    prompt_tokens: int,
    output_tokens: int,
) -> Workload:
    """Requests spread over LoRA adapters with a Zipf-like popularity (adapter 0 hottest)."""
    rng = random.Random(seed)
    names = tuple(f"adapter-{k}" for k in range(adapters))
    weights = [1.0 / (k + 1) for k in range(adapters)]
    arrivals = []
    for i, t in enumerate(poisson_times(rng, qps, duration_s)):
        name = rng.choices(names, weights)[0]
        arrivals.append(
            Arrival(
                t,
                f"lo-{i}",
                name,
                None,
                text(f"lo-{seed}-{i}", prompt_tokens),
                max_tokens=output_tokens,
                model=name,
            )
        )
    return Workload("lora-mix", tuple(arrivals), adapters=names, window_s=duration_s)


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """One tenant of a multi-tenant scenario: its class (objective) and its traffic."""

    name: str
    objective: str | None
    qps: float
    prompt_tokens: int  # fixed, or the median when `sigma` > 0
    output_tokens: int
    sigma: float = 0.0  # lognormal spread of both lengths (ShareGPT-like: ~0.9 / 0.8)
    max_prompt_tokens: int = 4000
    max_output_tokens: int = 1000
    # (seconds on, seconds off): the tenant sends only while on, at `qps`; None: always on.
    on_off: tuple[float, float] | None = None

    def active(self, t: float) -> bool:
        if self.on_off is None:
            return True
        on, off = self.on_off
        return t % (on + off) < on

    def lengths(self, rng: random.Random) -> tuple[int, int]:
        if self.sigma <= 0:
            return self.prompt_tokens, self.output_tokens
        prompt = lognormal_tokens(rng, self.prompt_tokens, self.sigma, 8, self.max_prompt_tokens)
        out = lognormal_tokens(rng, self.output_tokens, self.sigma * 0.9, 4, self.max_output_tokens)
        return prompt, out

    def mean_tokens(self) -> float:
        """Expected prompt + output tokens per request (for sizing loads)."""
        if self.sigma <= 0:
            return float(self.prompt_tokens + self.output_tokens)
        rng = random.Random(0)
        draws = [self.lengths(rng) for _ in range(4000)]
        return sum(p + o for p, o in draws) / len(draws)


def tenants(
    name: str,
    *,
    seed: int,
    duration_s: float,
    specs: tuple[TenantSpec, ...],
    objectives: Mapping[str, int],
) -> Workload:
    """Independent Poisson streams, one per tenant (fixed or lognormal lengths)."""
    arrivals = []
    for k, spec in enumerate(specs):
        rng = random.Random(seed * 1000 + k)
        lengths = random.Random(seed * 1000 + k + 500)
        times = (t for t in poisson_times(rng, spec.qps, duration_s) if spec.active(t))
        for i, t in enumerate(times):
            prompt_tokens, output_tokens = spec.lengths(lengths)
            arrivals.append(
                Arrival(
                    t,
                    f"{spec.name}-{i}",
                    spec.name,
                    spec.objective,
                    text(f"{name}-{seed}-{spec.name}-{i}", prompt_tokens),
                    max_tokens=output_tokens,
                )
            )
    arrivals.sort(key=lambda a: (a.at, a.request_id))
    return Workload(name, tuple(arrivals), objectives=dict(objectives), window_s=duration_s)
