"""`make run` = `sluice up`: four simulated engines and Sluice, serving a streamed chat
completion through the proxy within seconds of starting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from sluice.bench.harness.child import stop_processes
from sluice.bench.harness.ports import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def sluice_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, int], float]]:
    ports = {name: free_port() for name in ("proxy", "grpc", "health", "metrics")}
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice",
            "up",
            "--proxy-port",
            str(ports["proxy"]),
            "--grpc-port",
            str(ports["grpc"]),
            "--grpc-health-port",
            str(ports["health"]),
            "--metrics-port",
            str(ports["metrics"]),
        ],
        stdout=(tmp_path / "sluice-up.log").open("w"),  # a file: a pipe could fill and block
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield process, ports, started
    finally:
        stop_processes(process, timeout=10)


async def stream_chat(port: int, objective: str) -> tuple[list[dict], int]:
    body = {
        "model": "sim-model",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hello from the quickstart!"}],
    }
    headers = {"x-gateway-inference-objective": objective}
    events: list[dict] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        status = response.status
        async for line in response.content:
            text = line.decode().strip()
            if text.startswith("data: ") and text != "data: [DONE]":
                events.append(json.loads(text[6:]))
    return events, status


async def test_make_run_serves_a_streamed_chat_within_60_seconds(sluice_up) -> None:  # type: ignore[no-untyped-def]
    process, ports, started = sluice_up
    deadline = started + 60
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        assert process.poll() is None, "sluice up exited early; see sluice-up.log"
        try:
            events, status = await stream_chat(ports["proxy"], "interactive")
            break
        except aiohttp.ClientError as exc:
            last_error = exc
            time.sleep(0.25)
    else:
        pytest.fail(f"no answer within 60 s: {last_error!r}")
    assert status == 200
    assert time.monotonic() - started < 60
    text = "".join(
        choice.get("delta", {}).get("content") or ""
        for e in events
        for choice in e.get("choices", [])
    )
    assert text, "the stream carried no content"
    usage = events[-1]["usage"]
    assert usage["completion_tokens"] == 16

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{ports['metrics']}/metrics") as response,
    ):
        exposition = await response.text()
    assert 'inference_objective_request_total{model_name="sim-model"' in exposition
    for family in (
        "inference_extension_flow_control_request_queue_duration_seconds",
        "inference_extension_scheduler_e2e_duration_seconds",
        "inference_pool_ready_pods",
        "inference_objective_request_ttft_seconds",
    ):
        assert family in exposition, family
