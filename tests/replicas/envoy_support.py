"""Three `sluice serve` replicas sharing one real Redis, behind one real Envoy rendered from
`deploy/envoy/envoy-replicas.yaml`, in front of simulated engines — and what the tests read
from them: client outcomes, the engines' own request counts, every replica's receipts and
metrics.

An outcome (one per request sent, always):
* `complete` — 200 and the whole answer with its usage;
* `rejected` — 429 or 503 (Sluice or Envoy said no, in time);
* `error` — another status (Envoy's 500 when the replica holding the stream died);
* `cut` — 200 whose stream broke, or a connection closed without an answer;
* `lost` — no answer within the client's deadline: what must never happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from e2e.drain_support import SluiceProcess, start_engines
from e2e.support import write_pool
from sluice.bench.harness.child import stop_processes
from sluice.bench.harness.envoy import REPLICAS_CONFIG, Envoy, GatewayPorts, render_config
from sluice.bench.harness.ports import wait_listening
from sluice.bench.harness.store import StoreProcess

CAP = 2  # maxInFlightPerEndpoint: two engines, four requests in flight pool-wide
SYNC_INTERVAL_S = 0.05  # the default --replicas-sync-interval
LEASE_S = 1.0  # the default --replicas-lease
CLIENT_DEADLINE_S = 20.0

CONFIG = f"""
saturationDetector: {{maxInFlightPerEndpoint: {CAP}, maxPendingPrefillTokensPerEndpoint: 0}}
flowControl: {{maxRequests: 1000}}
"""
OBJECTIVES = """---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: interactive, namespace: default}
spec: {priority: 10, poolRef: {name: pool}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: standard, namespace: default}
spec: {priority: 0, poolRef: {name: pool}}
"""
PINNED = "pinned"  # the fairness id Envoy sends to the first replica only


@dataclass
class Outcome:
    kind: str
    status: int = 0
    tokens: int = 0  # prompt + completion tokens served (usage), complete answers only
    started: float = 0.0
    ended: float = 0.0
    detail: str = ""


def body(max_tokens: int) -> dict[str, Any]:
    return {
        "model": "sim-model",
        "prompt": "tell me a story about a river",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _usage_tokens(text: str) -> int | None:
    for line in reversed(text.splitlines()):
        if line.startswith("data: {") and '"usage"' in line:
            usage = orjson.loads(line[6:]).get("usage")
            if usage:
                return int(usage["prompt_tokens"]) + int(usage["completion_tokens"])
    return None


async def send(
    session: aiohttp.ClientSession, url: str, objective: str, tenant: str, max_tokens: int
) -> Outcome:
    started = time.monotonic()
    headers = {"x-llm-d-inference-objective": objective, "x-llm-d-inference-fairness-id": tenant}
    try:
        async with asyncio.timeout(CLIENT_DEADLINE_S):
            async with session.post(url, json=body(max_tokens), headers=headers) as response:
                text = await response.text()
                status = response.status
    except TimeoutError:
        return Outcome("lost", started=started, ended=time.monotonic())
    except (aiohttp.ClientError, ConnectionError) as exc:
        return Outcome("cut", started=started, ended=time.monotonic(), detail=repr(exc))
    ended = time.monotonic()
    if status in (429, 503):
        return Outcome("rejected", status, started=started, ended=ended, detail=text[:200])
    if status != 200:
        return Outcome("error", status, started=started, ended=ended, detail=text[:200])
    tokens = _usage_tokens(text)
    if tokens is None or not text.rstrip().endswith("data: [DONE]"):
        return Outcome("cut", status, started=started, ended=ended, detail=text[-200:])
    return Outcome("complete", status, tokens, started, ended)


class Clients:
    """Closed-loop clients: each sends its next request when its last one ended, and records
    exactly one outcome per request sent."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.sent: dict[str, int] = {}
        self.outcomes: dict[str, list[Outcome]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = False

    def start(self, tenant: str, objective: str, count: int, max_tokens: int) -> None:
        self.sent.setdefault(tenant, 0)
        self.outcomes.setdefault(tenant, [])
        for _ in range(count):
            self._tasks.append(asyncio.create_task(self._loop(tenant, objective, max_tokens)))

    def every(self, tenant: str, objective: str, period_s: float, max_tokens: int) -> None:
        """Open loop: one request every `period_s`, whatever the others do."""
        self.sent.setdefault(tenant, 0)
        self.outcomes.setdefault(tenant, [])

        async def arrivals() -> None:
            inflight: set[asyncio.Task[None]] = set()
            while not self._stop:
                task = asyncio.create_task(self._one(tenant, objective, max_tokens))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                await asyncio.sleep(period_s)
            await asyncio.gather(*inflight)

        self._tasks.append(asyncio.create_task(arrivals()))

    async def _one(self, tenant: str, objective: str, max_tokens: int) -> None:
        self.sent[tenant] += 1
        outcome = await send(self.session, self.url, objective, tenant, max_tokens)
        self.outcomes[tenant].append(outcome)

    async def _loop(self, tenant: str, objective: str, max_tokens: int) -> None:
        while not self._stop:
            await self._one(tenant, objective, max_tokens)

    async def stop(self) -> None:
        """No new requests; wait for every one sent to have its outcome."""
        self._stop = True
        await asyncio.gather(*self._tasks)

    def all(self) -> list[Outcome]:
        return [o for outcomes in self.outcomes.values() for o in outcomes]


class EngineWatch:
    """Polls every engine's own `vllm:num_requests_running + waiting`: what the engines really
    hold, whatever Sluice believes."""

    def __init__(self, session: aiohttp.ClientSession, ports: list[int], period_s: float) -> None:
        self.session = session
        self.ports = ports
        self.period_s = period_s
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _sample(self, port: int) -> int:
        async with self.session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        held = 0.0  # a plain scan: this runs often, beside the load
        for line in text.splitlines():
            if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")):
                held += float(line.rsplit(" ", 1)[1])
        return int(held)

    async def _run(self) -> None:
        while True:
            at = time.monotonic()
            counts = await asyncio.gather(*(self._sample(p) for p in self.ports))
            self.samples.append((at, dict(zip(self.ports, counts, strict=True))))
            await asyncio.sleep(self.period_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak(
        self,
        since: float = float("-inf"),
        until: float = float("inf"),
        exclude: Sequence[tuple[float, float]] = (),
    ) -> dict[int, int]:
        peak = dict.fromkeys(self.ports, 0)
        for at, counts in self.samples:
            if since <= at <= until and not any(a <= at <= b for a, b in exclude):
                for port, held in counts.items():
                    peak[port] = max(peak[port], held)
        return peak


@dataclass
class ReplicaPool:
    """Redis, engines, three replicas and one Envoy; `start()`/`stop()` own every process."""

    tmp: Path
    store: StoreProcess
    engine_count: int = 2
    replica_count: int = 3
    gateway: GatewayPorts = field(default_factory=GatewayPorts)
    engine_ports: list[int] = field(default_factory=list)
    replicas: list[SluiceProcess] = field(default_factory=list)
    envoy: Envoy | None = None
    _engines: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.listener}/v1/completions"

    async def start(self) -> None:
        self._engines, self.engine_ports = start_engines(self.tmp, self.engine_count)
        await wait_listening(self.engine_ports, process=self._engines)
        write_pool(self.tmp, self.engine_ports, OBJECTIVES)
        (self.tmp / "config.yaml").write_text(CONFIG)
        for i in range(self.replica_count):
            self.replicas.append(
                SluiceProcess(
                    self.tmp,
                    f"r{i}",
                    [
                        "--pool-name=pool",
                        f"--resources={self.tmp / 'pool.yaml'}",
                        f"--config-file={self.tmp / 'config.yaml'}",
                        "--health-checking",
                        "--decision-receipts=8192",
                        "--decision-receipts-max-bytes=33554432",
                        f"--replicas-store=redis://127.0.0.1:{self.store.port}/0",
                        f"--replica-id=r{i}",
                        f"--replicas-sync-interval={SYNC_INTERVAL_S * 1000:g}ms",
                        f"--replicas-lease={LEASE_S:g}s",
                    ],
                )
            )
        # three Python processes starting at once on a busy 2-core machine: give them time
        await asyncio.gather(*(r.start(timeout_s=60) for r in self.replicas))
        self.envoy = Envoy(self._envoy_config(), self.gateway.admin)
        await self.envoy.start()
        async with aiohttp.ClientSession() as session:
            await until(lambda: self._all_joined(session), timeout_s=15)

    def _envoy_config(self) -> dict[str, Any]:
        config = render_config(
            self.gateway,
            self.engine_ports,
            tls=False,
            example=REPLICAS_CONFIG,
            epp_ports=[r.grpc_port for r in self.replicas],
        )
        # Test only: one tenant's streams all go to the first replica (an ext_proc override on
        # its own route), so two tenants land unevenly on the replicas.
        clusters = config["static_resources"]["clusters"]
        [spread] = [c for c in clusters if c["name"] == "sluice_epp"]
        first = orjson.loads(orjson.dumps(spread))
        first["name"] = "sluice_epp_first"
        lb = first["load_assignment"]
        lb["cluster_name"] = "sluice_epp_first"
        lb["endpoints"][0]["lb_endpoints"] = lb["endpoints"][0]["lb_endpoints"][:1]
        clusters.append(first)
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        pinned = {
            "match": {
                "prefix": "/",
                "headers": [
                    {
                        "name": "x-llm-d-inference-fairness-id",
                        "string_match": {"exact": PINNED},
                    }
                ],
            },
            "route": {"cluster": "pool_fallback", "timeout": "300s"},
            "typed_per_filter_config": {
                "envoy.filters.http.ext_proc": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                    "overrides": {
                        "grpc_service": {
                            "envoy_grpc": {"cluster_name": "sluice_epp_first"},
                            "timeout": "10s",
                        }
                    },
                }
            },
        }
        routes.insert(1, pinned)  # after "Sluice chose an endpoint", before the fallback
        return config

    async def _all_joined(self, session: aiohttp.ClientSession) -> bool:
        for replica in self.replicas:
            metrics = await scrape(session, replica)
            if metrics.get(("sluice_replicas_peers", replica.name)) != self.replica_count - 1:
                return False
        return True

    async def stop(self) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
        processes = [r.process for r in self.replicas if r.process is not None]
        if self._engines is not None:
            processes.append(self._engines)
        stop_processes(*processes)


async def until(
    condition: Callable[[], Any], timeout_s: float, period_s: float = 0.05
) -> None:  # condition: sync or async, truthy when done
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s}s")
        await asyncio.sleep(period_s)


async def scrape(session: aiohttp.ClientSession, replica: SluiceProcess) -> dict[Any, float]:
    """A replica's `sluice_replicas_*` samples: (name, replica) or (name, replica, endpoint)."""
    url = f"http://127.0.0.1:{replica.metrics_port}/metrics"
    async with session.get(url) as response:
        text = await response.text()
    out: dict[Any, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("sluice_replicas_"):
                continue
            labels = sample.labels
            key = (sample.name, labels.get("replica"))
            if "endpoint" in labels:
                key = (*key, labels["endpoint"])
            out[key] = sample.value
    return out


async def mean_sync_s(session: aiohttp.ClientSession, replicas: list[SluiceProcess]) -> float:
    """The replicas' mean sync time so far (their `sluice_replicas_sync_duration_seconds`)."""
    total = count = 0.0
    for replica in replicas:
        seen = await scrape(session, replica)
        total += seen.get(("sluice_replicas_sync_duration_seconds_sum", replica.name), 0.0)
        count += seen.get(("sluice_replicas_sync_duration_seconds_count", replica.name), 0.0)
    return total / count if count else 0.0


async def receipts(session: aiohttp.ClientSession, replica: SluiceProcess) -> list[dict[str, Any]]:
    """Every decision receipt the replica keeps (finished requests), newest first."""
    url = f"http://127.0.0.1:{replica.metrics_port}/debug/decisions?limit=100000"
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        data: list[dict[str, Any]] = orjson.loads(await response.read())
        return data


@contextlib.asynccontextmanager
async def running_pool(tmp: Path, store: StoreProcess) -> AsyncIterator[ReplicaPool]:
    pool = ReplicaPool(tmp, store)
    try:
        await pool.start()
        yield pool
    finally:
        await pool.stop()


class Running(NamedTuple):
    """A started pool, a client session, the engines' own counts being polled, and clients
    yet to start: what each end-to-end test begins with."""

    pool: ReplicaPool
    session: aiohttp.ClientSession
    engines: EngineWatch
    clients: Clients


@contextlib.asynccontextmanager
async def running_setup(tmp: Path, store: StoreProcess, poll_s: float) -> AsyncIterator[Running]:
    async with running_pool(tmp, store) as pool, aiohttp.ClientSession() as session:
        engines = EngineWatch(session, pool.engine_ports, period_s=poll_s)
        engines.start()
        try:
            yield Running(pool, session, engines, Clients(session, pool.url))
        finally:
            await engines.stop()


FELL_BACK = "replicas: store unreachable"
REJOINED = "replicas: store reachable again"


def overfill_allowed(local_only: dict[str, list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """When a cap may be exceeded by design: a replica local-only for longer than its lease has
    the whole cap to itself (docs/replicas.md) from the lease's end until one lease after it
    rejoined (its local-only dispatches have ended and the leases are granted again)."""
    return [
        (start + LEASE_S - SYNC_INTERVAL_S, end + LEASE_S)
        for windows in local_only.values()
        for start, end in windows
        if end - start > LEASE_S - SYNC_INTERVAL_S
    ]


def local_only_windows(replica: SluiceProcess, until_s: float) -> list[tuple[float, float]]:
    """When the replica ran local-only (from its log: fall-back to rejoin, on this process's
    monotonic clock, which the replicas' receipts share; `until_s` if it had not rejoined)."""
    offset = time.time() - time.monotonic()
    windows: list[tuple[float, float]] = []
    start: float | None = None
    for line in replica.log().splitlines():
        if FELL_BACK not in line and REJOINED not in line:
            continue
        stamp = line.split(" ", 1)[0].removeprefix("ts=").replace("Z", "+00:00")
        at = datetime.fromisoformat(stamp).timestamp() - offset
        if FELL_BACK in line and start is None:
            start = at
        elif REJOINED in line and start is not None:
            windows.append((start, at))
            start = None
    if start is not None:
        windows.append((start, until_s))
    return windows
