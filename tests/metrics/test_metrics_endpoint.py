"""`/metrics` of a real Sluice (the App: proxy, director, flow control, metrics server) in front
of a real HTTP engine, all on loopback. What clients send can neither break a scrape, nor grow
it without bound, nor make a request wait for it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from proxy.fake_engine import FakeEngine
from sluice.app import App
from sluice.bench.harness.ports import free_port
from sluice.cli.serve_options import parse_serve_options
from sluice.director.contract import Outcome
from sluice.requests.model import ApiKind, InferenceRequest, Usage
from sluice.util.labels import MAX_DISTINCT_VALUES, OVERFLOW


@dataclass
class Running:
    app: App
    proxy_port: int
    metrics_port: int

    async def scrape(self) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            async with session.get(url) as response:
                return response.status, await response.text()

    async def send(
        self, fairness_id: bytes = b"tenant", model: str = "test-model", max_tokens: int = 2
    ) -> bytes:
        """One completion through the proxy, with raw header bytes (as curl -H $'...' sends)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy_port)
        body = b'{"model":"%s","prompt":"hi","max_tokens":%d}' % (model.encode(), max_tokens)
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n"
            b"x-gateway-inference-fairness-id: " + fairness_id + b"\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        response = await reader.read()
        writer.close()
        return response.split(b"\r\n", 1)[0]


StartSluice = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_sluice(tmp_path: Path) -> AsyncIterator[StartSluice]:
    engine = FakeEngine(name="engine")
    await engine.start()
    apps: list[App] = []
    (tmp_path / "pool.yaml").write_text(
        f"""
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: pool, namespace: default}}
spec:
  selector: {{matchLabels: {{app: engine}}}}
  targetPorts: [{{number: {engine.port}}}]
  endpointPickerRef: {{name: sluice, port: {{number: 9002}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: engine, namespace: default, labels: {{app: engine}}}}
status: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: "True"}}]}}
"""
    )

    async def start(*flags: str, manifest: str = "") -> Running:
        if manifest:
            (tmp_path / "extra.yaml").write_text(manifest)
        proxy, metrics = free_port(), free_port()
        app = App(
            parse_serve_options(
                [
                    "--pool-name=pool",
                    f"--resources={tmp_path}",
                    f"--proxy-port={proxy}",
                    f"--metrics-port={metrics}",
                    f"--grpc-health-port={free_port()}",
                    "--grpc-host=127.0.0.1",
                    "--disable-extproc",
                    *flags,
                ]
            )
        )
        await app.start()
        apps.append(app)
        return Running(app, proxy, metrics)

    yield start
    for app in apps:
        await app.stop()
    await engine.stop()


def families(text: str) -> list[Metric]:
    return list(text_string_to_metric_families(text))


def label_values(text: str | list[Metric], family: str, label: str) -> set[str]:
    parsed = families(text) if isinstance(text, str) else text
    return {
        s.labels[label] for f in parsed if f.name == family for s in f.samples if label in s.labels
    }


def record(app: App, count: int, prefix: str = "") -> None:
    """`count` requests with distinct fairness ids and models, through the director's metrics
    (the calls the proxy makes), for volumes the proxy would take minutes to send."""
    metrics = app.director.core.metrics
    assert metrics is not None
    for i in range(count):
        request = InferenceRequest(
            request_id=f"r{i}",
            api=ApiKind.COMPLETIONS,
            model=f"{prefix}model-{i:06d}",
            target_model=f"{prefix}model-{i:06d}",
            body=b"{}",
            prompt_tokens=5,
            fairness_id=f"{prefix}tenant-{i:06d}",
        )
        metrics.received(request)
        metrics.dispatched(request, 0.0)
        metrics.completed(request, Outcome.COMPLETED, Usage(5, 2), duration_s=0.05, ttft_s=0.01)


async def test_a_non_utf8_fairness_id_is_served_and_every_later_scrape_succeeds(
    start_sluice: StartSluice,
) -> None:
    """Issue #15 item 1: one `\\xff` byte in the header made every later scrape answer 500."""
    sluice = await start_sluice()
    assert await sluice.send(b"alice") == b"HTTP/1.1 200 OK"
    assert await sluice.send(b"\xff") == b"HTTP/1.1 200 OK"
    for _ in range(3):
        status, text = await sluice.scrape()
        assert status == 200
        assert label_values(text, "llm_d_epp_request", "fairness_id") == {"alice", "\ufffd"}
        assert "\ufffd" in label_values(
            text, "llm_d_epp_flow_control_request_queue_duration_seconds", "fairness_id"
        )


async def test_client_chosen_labels_are_capped_at_a_thousand_values_then_other(
    start_sluice: StartSluice,
) -> None:
    """Issue #15 item 2: model names and fairness ids became labels without limit."""
    sluice = await start_sluice()
    record(sluice.app, MAX_DISTINCT_VALUES + 500)
    for tenant in (b"late-1", b"late-2"):  # and through the real proxy, past the cap
        assert await sluice.send(tenant, model="late-model") == b"HTTP/1.1 200 OK"
    status, text = await sluice.scrape()
    assert status == 200
    assert len(text.encode()) < 5 * 1024 * 1024
    parsed = families(text)
    for family, label in (
        ("llm_d_epp_request", "fairness_id"),
        ("llm_d_epp_request", "model_name"),
        ("inference_objective_request", "model_name"),
        ("llm_d_epp_flow_control_request_queue_duration_seconds", "fairness_id"),
    ):
        values = label_values(parsed, family, label)
        assert OVERFLOW in values
        assert len(values - {OVERFLOW}) <= MAX_DISTINCT_VALUES
    assert "late-1" not in label_values(parsed, "llm_d_epp_request", "fairness_id")
    guard = sluice.app.client_labels
    assert guard.fairness_ids.admitted == guard.models.admitted == MAX_DISTINCT_VALUES
    # Nothing was lost: every request is counted, under its own labels or `other`.
    counted = sum(s.value for f in parsed if f.name == "llm_d_epp_request" for s in f.samples)
    assert counted == MAX_DISTINCT_VALUES + 500 + 2


async def test_model_names_an_operator_configured_are_never_folded(
    start_sluice: StartSluice,
) -> None:
    rewrite = """
apiVersion: llm-d.ai/v1alpha2
kind: InferenceModelRewrite
metadata: {name: canary, namespace: default}
spec:
  poolRef: {name: pool}
  rules: [{matches: [{model: {value: test-model}}], targets: [{modelRewrite: test-model-v2}]}]
"""
    sluice = await start_sluice(manifest=rewrite)
    for i in range(MAX_DISTINCT_VALUES):  # clients already took every model-name slot
        sluice.app.client_labels.model(f"client-model-{i}")
    assert await sluice.send(b"t", model="test-model") == b"HTTP/1.1 200 OK"
    assert await sluice.send(b"t", model="unconfigured") == b"HTTP/1.1 200 OK"
    _, text = await sluice.scrape()
    assert label_values(text, "llm_d_epp_request", "model_name") == {"test-model", OVERFLOW}
    assert "test-model-v2" in label_values(text, "llm_d_epp_request", "target_model_name")


async def test_a_request_sent_during_a_scrape_does_not_wait_for_it(
    start_sluice: StartSluice,
) -> None:
    """Issue #15 item 2: a proxy request sent during a scrape waited for the whole scrape."""
    sluice = await start_sluice()
    record(sluice.app, 3000)  # fills the series budget: a scrape of several MB
    finished: list[str] = []

    async def scrape() -> None:
        status, _ = await sluice.scrape()
        assert status == 200
        finished.append("scrape")

    async def request() -> None:
        await asyncio.sleep(0.005)  # the scrape has started rendering
        assert await sluice.send(b"during") == b"HTTP/1.1 200 OK"
        finished.append("request")

    await asyncio.gather(scrape(), request())
    assert finished == ["request", "scrape"]


@pytest.mark.parametrize(
    ("choice", "present", "absent"),
    [
        ("both", ("llm_d_epp_", "inference_objective_", "inference_extension_"), ()),
        ("llm-d", ("llm_d_epp_",), ("inference_objective_", "inference_pool_", "inference_ext")),
        ("gie", ("inference_objective_", "inference_pool_", "inference_extension_"), ("llm_d",)),
    ],
)
async def test_the_flag_picks_which_names_are_exported(
    start_sluice: StartSluice, choice: str, present: tuple[str, ...], absent: tuple[str, ...]
) -> None:
    sluice = await start_sluice(f"--metric-names={choice}")
    assert await sluice.send(b"tenant") == b"HTTP/1.1 200 OK"
    _, text = await sluice.scrape()
    names = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    for prefix in present:
        assert any(n.startswith(prefix) for n in names), prefix
    for prefix in absent:
        assert not any(n.startswith(prefix) for n in names), prefix
    assert "sluice_request_outcomes_total" in names  # Sluice's own names are always there


async def test_an_unknown_metric_names_choice_is_refused_with_the_accepted_ones() -> None:
    from sluice.cli.flags import FlagError

    with pytest.raises(FlagError, match="--metric-names must be both, llm-d or gie"):
        parse_serve_options(["--pool-name=p", "--metric-names=prometheus"])


async def test_the_metrics_server_header_shows_no_versions(start_sluice: StartSluice) -> None:
    """Issue #15 item 10: `Server:` named the Python and aiohttp versions."""
    sluice = await start_sluice()
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{sluice.metrics_port}/metrics"
        async with session.get(url) as response:
            assert response.headers.getall("Server") == ["sluice"]
