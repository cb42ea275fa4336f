"""A pool of engines in one process: each its own engine, loop task and listening socket."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from aiohttp import web

from sluice.sim.engine import Engine
from sluice.sim.faults import FaultMode, Faults
from sluice.sim.kv_events import KVEventsConfig, offset_endpoint_port
from sluice.sim.kv_publisher import ZmqEventPublisher
from sluice.sim.openai import Options, ServedModels
from sluice.sim.profiles import CostProfile, EngineConfig
from sluice.sim.runner import EngineRunner
from sluice.sim.server import EngineFront


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to serve one simulated engine."""

    config: EngineConfig
    cost: CostProfile
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (tests)
    model: str = "sim-model"
    loras: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    mean_output_tokens: float = 128.0
    fault: FaultMode = FaultMode.NONE
    fault_rate: float = 1.0
    # vLLM's --kv-events-config; this engine is data-parallel rank `rank` of it (its ports are
    # the configured ones plus `rank`, vLLM's offset_endpoint_port).
    kv_events: KVEventsConfig | None = None
    rank: int = 0


@dataclass
class ServedEngine:
    spec: EngineSpec
    front: EngineFront
    site_runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def engine(self) -> Engine:
        return self.front.runner.engine

    @property
    def publisher(self) -> ZmqEventPublisher | None:
        return self.front.runner.publisher


@dataclass
class SimPool:
    engines: list[ServedEngine]

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.engines]

    async def close(self) -> None:
        for served in self.engines:
            await _stop(served)

    async def restart(self, index: int) -> ServedEngine:
        """Stop engine `index` and start a fresh one on the same ports: an empty cache, and
        KV-event sequence numbers from 0 again (what a restarted vLLM pod looks like)."""
        old = self.engines[index]
        await _stop(old)
        served = await serve_engine(replace(old.spec, port=old.port))
        self.engines[index] = served
        return served


async def _stop(served: ServedEngine) -> None:
    await served.site_runner.cleanup()
    await served.front.runner.stop()


async def serve_engine(spec: EngineSpec) -> ServedEngine:
    config = spec.config
    publisher = None
    kv = spec.kv_events
    if kv is not None and kv.publishes:
        config = replace(config, enable_kv_cache_events=True)
        endpoint = offset_endpoint_port(kv.endpoint, spec.rank)
        assert endpoint is not None
        publisher = ZmqEventPublisher(
            kv,
            endpoint=endpoint,
            replay_endpoint=offset_endpoint_port(kv.replay_endpoint, spec.rank),
            host=spec.host,
            data_parallel_rank=0,  # each sim engine is its own engine core
        )
    engine = Engine(config, spec.cost, model_name=spec.model)
    runner = EngineRunner(engine, publisher)
    front = EngineFront(
        runner=runner,
        models=ServedModels(spec.model, dict(spec.loras)),
        options=Options(
            spec.config.block_size, spec.config.max_model_len, spec.seed, spec.mean_output_tokens
        ),
        faults=Faults(spec.fault, spec.fault_rate, seed=spec.seed),
    )
    # A short shutdown: hung (fault-injected) handlers must not hold a stop for a minute.
    site_runner = web.AppRunner(
        front.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await site_runner.setup()
    site = web.TCPSite(site_runner, spec.host, spec.port, reuse_address=True)
    await site.start()
    if publisher is not None:
        try:
            await publisher.start()
        except BaseException:
            await publisher.close()
            await site_runner.cleanup()
            raise
    runner.start()
    host, port = site_runner.addresses[0][:2]
    return ServedEngine(spec, front, site_runner, host, port)


async def start_pool(specs: list[EngineSpec]) -> SimPool:
    pool = SimPool([])
    try:
        for spec in specs:
            pool.engines.append(await serve_engine(spec))
    except BaseException:
        await pool.close()
        raise
    return pool


def expand_hosts(hosts: str, count: int) -> list[str]:
    """One host per engine from ``127.0.0.1`` (all share it), ``127.0.0.2,127.0.0.3`` (one
    each), or ``127.0.0.10+`` (consecutive addresses from there)."""
    if hosts.endswith("+"):
        first = ipaddress.ip_address(hosts[:-1])
        return [str(first + i) for i in range(count)]
    listed = [h.strip() for h in hosts.split(",") if h.strip()]
    if len(listed) == 1:
        return listed * count
    if len(listed) != count:
        raise ValueError(f"{len(listed)} hosts given for {count} engines")
    return listed
