"""The application shell: sources → state → director → servers, on one asyncio loop.

`App.build` turns options into wired components (and every start-up mistake into an
`AppError` that names the flag or file); `App.start`/`App.stop` own the sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from sluice.config import (
    SluiceConfig,
    SluiceConfigError,
    load_sluice_config,
    load_sluice_config_file,
)
from sluice.dashboard.wiring import Observability, ObservabilityError
from sluice.datalayer.engine_slots import SLOTS_PATHS, EngineSlotsWatcher
from sluice.datalayer.kvevents.manager import KVEventsSubscribers
from sluice.datalayer.metric_names import MetricNames, MetricSpecError
from sluice.datalayer.outlier import OutlierSettings
from sluice.datalayer.pool_metrics import PoolMetricsCollector
from sluice.datalayer.recorder import MissingMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.datalayer.scraper import MetricsScraper, ScrapeSettings
from sluice.director import Director, DirectorSettings
from sluice.director.contract import Limits
from sluice.flowcontrol.controller import FlowController
from sluice.flowcontrol.metrics import FlowControlMetrics
from sluice.logs import get_logger
from sluice.replicas.shell import ReplicaSync
from sluice.replicas.wiring import start_replicas
from sluice.request_metrics import RequestMetrics
from sluice.scheduling.metrics import PrometheusSchedulerObserver
from sluice.scheduling.precise_metrics import PrecisePrefixMetrics
from sluice.scheduling.precise_scorer import PrecisePrefixCacheScorer
from sluice.scheduling.scheduler import Scheduler
from sluice.settings import ServeSettings
from sluice.sources.state import POOL_GROUP, PoolKey, PoolState, standalone_pool_manifest
from sluice.util.exported_names import ExportedNames
from sluice.util.labels import ClientLabels
from sluice.util.series import SeriesBudget

log = get_logger("app")

ENGINE_ALIASES = {
    "vllm": "vllm",
    "sglang": "sglang",
    "trtllm": "triton-tensorrt-llm",
    "llamacpp": "llamacpp",
}


def log_missing_metrics(event: MissingMetrics) -> None:
    """Once per endpoint (and on every change): what its metrics page lacks, and what it has."""
    if not event.missing:
        log.info("endpoint metrics complete again", endpoint=event.endpoint)
        return
    found = ", ".join(event.found[:40]) + (" ..." if len(event.found) > 40 else "") or "-"
    if event.usable:
        log.info(
            "endpoint reports no KV-cache usage: the KV threshold and the KV-cache scorer step "
            "aside for it",
            endpoint=event.endpoint,
            missing=",".join(event.missing),
            found=found,
        )
    else:
        log.warning(
            "endpoint metrics lack the engine profile's queue metrics: it gets no traffic until "
            "they appear; set --engine (vllm, sglang, trtllm, llamacpp) or the metric flags",
            endpoint=event.endpoint,
            missing=",".join(event.missing),
            found=found,
        )


class AppError(Exception):
    """A configuration mistake found at start-up; the message names the flag or file."""


def load_config_from_options(options: ServeSettings) -> SluiceConfig:
    try:
        if options.config_file:
            return load_sluice_config_file(options.config_file)
        if options.config_text:
            return load_sluice_config(options.config_text, "--config-text")
        return load_sluice_config(None)
    except SluiceConfigError as exc:
        raise AppError(str(exc)) from None


def metric_names_from_options(options: ServeSettings) -> MetricNames:
    try:
        names = MetricNames.for_engine(ENGINE_ALIASES[options.engine])
        return names.with_overrides(**options.metric_specs)
    except MetricSpecError as exc:
        raise AppError(f"metric flags: {exc}") from None


def scrape_settings(options: ServeSettings) -> ScrapeSettings:
    ca_file = options.model_server_metrics_https_ca_file
    if ca_file and not Path(ca_file).is_file():
        raise AppError(
            f"--model-server-metrics-https-ca-file {ca_file}: no such file; pass the PEM bundle "
            "of the CA that signed the engines' metrics certificates"
        )
    return ScrapeSettings(
        interval_s=options.refresh_metrics_interval,
        scheme=options.model_server_metrics_scheme,
        path=options.model_server_metrics_path,
        verify_tls=not options.model_server_metrics_https_insecure_skip_verify,
        ca_file=ca_file,
    )


def configured_model_names(state: PoolState) -> set[str]:
    """Model names the operator configured (rewrite sources and targets): always exported as
    themselves in metric labels, never folded into `other` (upstream does the same)."""
    names: set[str] = set()
    for rewrite in state.rewrites.values():
        for rule in rewrite.spec.rules if rewrite.spec is not None else ():
            names.update(m.model.value for m in rule.matches or ())
            names.update(t.model_rewrite for t in rule.targets or ())
    return names


def _restarts_of(subscribers: KVEventsSubscribers) -> Callable[[], int]:
    return lambda: subscribers.restarts


@contextlib.contextmanager
def _listening(flag: str, host: str, port: int) -> Iterator[None]:
    """A port that cannot be bound is one line naming the flag, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise AppError(
            f"--{flag}={port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            f"stop what holds it or pass another --{flag}"
        ) from None


class App:
    def __init__(self, options: ServeSettings, *, rng: random.Random | None = None):
        self.options = options
        self.key = PoolKey(
            name=options.pool_name,
            namespace=options.namespace,
            group=options.pool_group,
        )
        resources = options.resources
        if resources and not Path(resources).exists():
            raise AppError(
                f"--resources {resources}: no such file or directory; pass a manifest file "
                "or a directory of manifests"
            )
        if self.key.group != POOL_GROUP:
            raise AppError(
                f"--pool-group {self.key.group}: Sluice reads InferencePool {POOL_GROUP}/v1 "
                f"only (the legacy v1alpha2 pool is not supported); use --pool-group {POOL_GROUP}"
            )
        self.static_pool = self._standalone_pool()
        self.config = load_config_from_options(options)
        self.metrics_registry = CollectorRegistry()
        # One guard and one budget for every label a client chooses (see util.labels/series).
        names = ExportedNames.parse(options.metric_names)
        self.client_labels, budget = ClientLabels(), SeriesBudget()
        self.registry = EndpointRegistry()
        scheduler_box: list[Scheduler] = []  # the observer reads the index the scheduler owns
        self.scheduler = Scheduler.from_config(
            self.config.picker,
            rng=rng,
            observer=PrometheusSchedulerObserver(
                self.metrics_registry,
                lambda: scheduler_box[0].prefix_index_size() if scheduler_box else 0,
                names=names,
            ),
            engine=options.engine,
        )
        scheduler_box.append(self.scheduler)
        self.kv_event_subscribers = self._kv_event_subscribers()
        self.metrics_registry.register(
            PoolMetricsCollector(
                self.registry,
                self.key.name,
                staleness_s=options.metrics_staleness_threshold,
                refresh_s=options.refresh_prometheus_metrics_interval,
                names=names,
            )
        )
        self.flow = FlowController(
            self.config.flow,
            observer=FlowControlMetrics(
                self.metrics_registry,
                inference_pool=self.key.name,
                names=names,
                labels=self.client_labels,
                budget=budget,
            ),
        )
        try:
            self.observability = Observability.from_options(options)
        except ObservabilityError as exc:
            raise AppError(str(exc)) from None
        self.director = Director(
            receipts=self.observability.recorder,
            scheduler=self.scheduler,
            flow=self.flow,
            registry=self.registry,
            room=self.config.room,
            settings=DirectorSettings(
                max_body_bytes=options.max_body_bytes,
                disable_subset_filter=options.disable_endpoint_subset_filter,
                max_model_len=options.max_model_len,
                outliers=OutlierSettings(
                    consecutive_failures=options.outlier_consecutive_failures,
                    base_ejection_s=options.outlier_base_ejection,
                ),
            ),
            metrics=RequestMetrics(
                self.metrics_registry, names=names, labels=self.client_labels, budget=budget
            ),
            rng=rng,
        )
        self.scraper = MetricsScraper(
            self.registry,
            metric_names_from_options(options),
            scrape_settings(options),
            on_missing=log_missing_metrics,
        )
        self.state: PoolState | None = None
        self.is_leader: Callable[[], bool] | None = None  # set when leader election runs
        self.authorize: Callable[[web.Request], Awaitable[bool]] | None = None
        self._servers: list[Any] = []
        self._extproc: list[Any] = []  # (also in _servers) what drains on SIGTERM
        self._proxy: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.replicas: ReplicaSync | None = None  # active-active (docs/replicas.md)
        self._stopping = asyncio.Event()
        self.draining = False  # SIGTERM seen: readiness is NOT_SERVING (sluice.shutdown)

    def _kv_event_subscribers(self) -> list[KVEventsSubscribers]:
        """One subscriber set per precise-prefix-cache-scorer, following the pool (their
        settings are the plugin's kvEventsConfig), with its metrics."""
        out: list[KVEventsSubscribers] = []
        seen: set[int] = set()
        for profile in self.scheduler.profiles.values():
            for scorer, _ in profile.scorers:
                if isinstance(scorer, PrecisePrefixCacheScorer) and id(scorer) not in seen:
                    seen.add(id(scorer))
                    subscribers = KVEventsSubscribers(
                        self.registry, scorer.streams, scorer.subscribers
                    )
                    PrecisePrefixMetrics(self.metrics_registry, scorer, _restarts_of(subscribers))
                    out.append(subscribers)
        return out

    def _standalone_pool(self) -> dict[str, Any] | None:
        """Upstream's standalone mode: endpoints by label, no InferencePool or objectives."""
        selector = self.options.endpoint_selector
        if not selector:
            return None
        if not self.options.pool_name:
            self.key = PoolKey("standalone", self.key.namespace, self.key.group)
        try:
            return standalone_pool_manifest(
                self.key.name,
                self.key.namespace,
                selector,
                self.options.endpoint_target_ports,
            )
        except ValueError as exc:
            raise AppError(str(exc)) from None

    # -- state -------------------------------------------------------------------------------

    def on_state(self, state: PoolState) -> None:
        state = self._with_metrics_port(state)
        previous = self.state
        self.state = state
        self.client_labels.pin_models(configured_model_names(state))
        self.director.set_state(state)
        if previous is None or previous.endpoints != state.endpoints or not previous.loaded:
            log.info(
                "pool state",
                pool=f"{state.key.namespace}/{state.key.name}",
                loaded=state.loaded,
                endpoints=",".join(e.hostport for e in state.endpoints) or "-",
                objectives=",".join(f"{n}={p}" for n, p in state.priorities.items()) or "-",
            )

    def _with_metrics_port(self, state: PoolState) -> PoolState:
        """Upstream's deprecated --model-server-metrics-port applies only to a pool with one
        target port; with several, each rank is scraped on its own port (as upstream)."""
        port = self.options.model_server_metrics_port
        if not port or state.pool is None or len(state.pool.spec.target_ports) != 1:
            return state
        endpoints = tuple(dataclasses.replace(e, metrics_port=port) for e in state.endpoints)
        return dataclasses.replace(state, endpoints=endpoints)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        from sluice.extproc.options import ServerOptions, StreamOptions
        from sluice.extproc.server import ExtProcServer
        from sluice.health.grpc_health import GrpcHealthService, HealthServer
        from sluice.health.metrics import MetricsServer

        options = self.options
        if options.resources:
            from sluice.sources.files import ManifestDirectorySource

            static = {}
            if self.static_pool is not None:
                from sluice.api import parse_resource

                static[f"{self.key.namespace}/{self.key.name}"] = parse_resource(self.static_pool)
            source = ManifestDirectorySource(
                options.resources, self.key, self.on_state, static_pools=static
            )
            source.refresh()
            self._tasks.append(asyncio.create_task(source.run(), name="sluice-resources"))
        else:
            await self._start_kube()
        await self.scraper.start()
        self._tasks.append(
            asyncio.create_task(self._watch_model_contexts(), name="sluice-model-contexts")
        )
        slots_path = SLOTS_PATHS.get(options.engine)
        if slots_path is not None:
            watcher = EngineSlotsWatcher(self.registry, slots_path)
            self._tasks.append(asyncio.create_task(watcher.run(), name="sluice-engine-slots"))
        for subscribers in self.kv_event_subscribers:
            await subscribers.start()

        self.replicas = start_replicas(
            options.replica_flags(),
            pool=f"{self.key.namespace}/{self.key.name}",
            director=self.director,
            scheduler=self.scheduler,
            metrics_registry=self.metrics_registry,
        )
        grpc_host = options.grpc_host
        health = HealthServer(
            lambda: self.director.ready and not self.draining,
            # active-active replicas all serve; the leader only writes status
            None if self.replicas is not None else self.is_leader,
            host=grpc_host,
            extra=self.replicas.health() if self.replicas is not None else None,
        )
        with _listening("grpc-health-port", grpc_host, options.grpc_health_port):
            await health.start(options.grpc_health_port)
        self._servers.append(health)
        dashboard = self.observability.routes(
            self.director,
            staleness_s=options.metrics_staleness_threshold,
            pool=f"{self.key.namespace}/{self.key.name}",
            authorize=self.authorize,
        )
        metrics = MetricsServer(
            self.metrics_registry, self.authorize, host=grpc_host, extra_routes=dashboard.add_to
        )
        with _listening("metrics-port", grpc_host, options.metrics_port):
            await metrics.start(options.metrics_port)
        self._servers.append(metrics)
        if not options.disable_extproc:
            cert = options.cert_path
            extproc = ExtProcServer(
                self.director,
                ServerOptions(
                    grpc_port=options.grpc_port,
                    host=grpc_host,
                    secure_serving=options.secure_serving,
                    cert_path=Path(cert) if cert else None,
                    cert_reload=options.enable_cert_reload,
                    transport=options.ext_proc_transport,
                ),
                StreamOptions(
                    max_body_bytes=options.max_body_bytes,
                    keep_control_headers=options.keep_control_headers,
                    disable_endpoint_subset_filter=options.disable_endpoint_subset_filter,
                    emit_endpoint_scores=self.observability.emit_endpoint_scores,
                ),
                # upstream's --health-checking: gRPC health on the ext_proc port too
                also_serve=[GrpcHealthService(health.servicer)] if options.health_checking else [],
            )
            with _listening("grpc-port", grpc_host, options.grpc_port):
                await extproc.start()
            self._servers.append(extproc)
            self._extproc.append(extproc)
        if options.proxy_port:
            from sluice.proxy.routes import parse_routes
            from sluice.proxy.server import ProxyOptions, ProxyServer

            proxy = ProxyServer(
                self.director,
                Limits(max_body_bytes=options.max_body_bytes),
                options=ProxyOptions(
                    keepalive_timeout_s=options.engine_keepalive_timeout,
                    emit_endpoint_scores=self.observability.emit_endpoint_scores,
                    extra_routes=parse_routes(options.proxy_allowed_routes),
                    header_timeout_s=options.request_header_timeout,
                    body_timeout_s=options.request_body_timeout,
                    first_byte_timeout_s=options.engine_first_byte_timeout,
                    freeze_gc=False,  # the process's owner freezes the heap (`sluice serve`)
                ),
            )
            with _listening("proxy-port", options.proxy_host, options.proxy_port):
                await proxy.start(options.proxy_host, options.proxy_port)
            self._servers.append(proxy)
            self._proxy.append(proxy)
        log.info(
            "sluice serving",
            pool=f"{self.key.namespace}/{self.key.name}",
            config=self.config.source,
            ext_proc=("off" if options.disable_extproc else options.grpc_port),
            health=options.grpc_health_port,
            metrics=options.metrics_port,
            proxy=options.proxy_port or "off",
        )

    async def _watch_model_contexts(self) -> None:
        """Contexts from the engines' /v1/models clamp cost estimates (`--max-model-len` else)."""
        from sluice.datalayer.model_context import ModelContextWatcher

        def update(contexts: dict[str, int]) -> None:
            self.director.core.model_context = contexts
            log.info("model contexts", models=",".join(f"{m}={n}" for m, n in contexts.items()))

        await ModelContextWatcher(self.registry, update).run()

    async def _start_kube(self) -> None:
        """Watch the cluster; the leader (or the only replica) also keeps status true."""
        from sluice.sources.auth import MetricsAuthorizer, bearer_token
        from sluice.sources.kube import KubeSource
        from sluice.sources.kube_client import connect
        from sluice.sources.leader import LeaderElector, lease_name
        from sluice.sources.status import StatusWriter

        try:
            api_client = await connect()
        except Exception as exc:
            raise AppError(
                f"no Kubernetes cluster reachable ({exc}); run in a cluster, set KUBECONFIG, "
                "or pass --resources with a manifest directory"
            ) from None
        writer_box: list[StatusWriter] = []  # the writer needs the source's view, built below

        def status_changed() -> None:
            if writer_box:
                writer_box[0].notify()

        elector: LeaderElector | None = None
        if self.options.ha_enable_leader_election:
            elector = LeaderElector(
                api_client,
                self.key.namespace,
                lease_name(self.key.namespace, self.key.name),
                on_started_leading=status_changed,
            )
            self.is_leader = elector.is_leader
        source = KubeSource(
            self.key,
            self.on_state,
            api_client,
            on_change=status_changed,
            static_pool=self.static_pool,
        )
        writer = StatusWriter(api_client, source.view, is_leader=self.is_leader or (lambda: True))
        writer_box.append(writer)
        if elector is not None:
            self._tasks.append(asyncio.create_task(elector.run(), name="sluice-leader"))
        self._tasks.append(asyncio.create_task(source.run(), name="sluice-kube"))
        self._tasks.append(asyncio.create_task(writer.run(), name="sluice-status"))
        if self.options.metrics_endpoint_auth:
            authorizer = MetricsAuthorizer(api_client)

            async def authorize(request: web.Request) -> bool:
                token = bearer_token(request.headers.get("Authorization"))
                return token is not None and await authorizer(token)

            self.authorize = authorize

    async def stop(self) -> None:
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):
                await server.stop()
        if self.replicas is not None:
            await self.replicas.stop()
        await self.scraper.stop()
        for subscribers in self.kv_event_subscribers:
            await subscribers.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.observability.shutdown()  # flushes the spans still batched

    async def run_forever(self, on_started: Callable[[], None] | None = None) -> None:
        """Serve until SIGINT/SIGTERM; `on_started` runs once every server listens."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self.start()  # a server that fails to listen: those already up are stopped
            if on_started is not None:
                on_started()
            await self._stopping.wait()
            await self.drain()
        finally:
            log.info("sluice stopping")
            await self.stop()

    async def drain(self) -> None:
        """Finish the work in progress and refuse new work cleanly (`sluice.shutdown`)."""
        from sluice.shutdown import drain

        self.draining = True
        await drain(
            self.director,
            timeout_s=self.options.drain_timeout,
            refuse_new=[p.begin_drain for p in self._proxy],
            graceful_stops=[e.stop for e in self._extproc],
        )

    def request_stop(self) -> None:
        self._stopping.set()
