"""Real Sluice processes for the shutdown tests: start one, SIGTERM it, classify what each
client saw.

An outcome is one of:
* `complete` — 200 and the whole stream, through `data: [DONE]`;
* `retryable` — 429 or 503 before any body byte (`Retry-After` when Sluice sent it);
* `refused` — the connection was refused: nothing was sent, safe to retry;
* `cut` — anything else: a stream that broke, a connection closed without an answer, a 500.
The tests allow the first three and no `cut`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sluice.bench.harness.ports import free_port_block, held_port, wait_listening

STREAM = {
    "model": "sim-model",
    "prompt": "tell me a story",
    "max_tokens": 50,  # ~0.6 s on the default profile (an 11 ms step per token)
    "ignore_eos": True,
    "stream": True,
    "stream_options": {"include_usage": True},
}


@dataclass
class Outcome:
    kind: str
    status: int = 0
    retry_after: str | None = None
    connection: str | None = None
    detail: str = ""


async def stream_once(session: aiohttp.ClientSession, url: str) -> Outcome:
    try:
        async with session.post(url, json=STREAM) as response:
            headers = response.headers
            if response.status != 200:
                await response.read()
                kind = "retryable" if response.status in (429, 503) else "cut"
                return Outcome(
                    kind,
                    response.status,
                    headers.get("Retry-After"),
                    headers.get("Connection"),
                    (await response.text())[:200],
                )
            text = await response.text()
            if text.rstrip().endswith("data: [DONE]") and '"error"' not in text:
                return Outcome("complete", 200)
            return Outcome("cut", 200, detail=text[-200:])
    except aiohttp.ClientConnectorError:
        return Outcome("refused")
    except (aiohttp.ClientError, ConnectionError) as exc:
        return Outcome("cut", detail=f"{type(exc).__name__}: {exc}")


def tally(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(o.kind for o in outcomes)


def start_engines(tmp: Path, count: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    first = free_port_block(count)
    process = subprocess.Popen(
        [sys.executable, "-m", "sluice", "sim", "--count", str(count), "--port", str(first)],
        stdout=(tmp / "engines.log").open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return process, list(range(first, first + count))


@dataclass
class SluiceProcess:
    """`sluice serve` in its own process, as a Deployment runs it."""

    tmp: Path
    name: str
    flags: list[str]
    # chosen when the test begins and bound later (a replacement starts seconds after):
    # below the ephemeral range, so no client connection takes one meanwhile
    grpc_port: int = field(default_factory=held_port)
    health_port: int = field(default_factory=held_port)
    metrics_port: int = field(default_factory=held_port)
    proxy_port: int = field(default_factory=held_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.tmp / f"{self.name}.log"

    async def start(self, timeout_s: float = 20.0) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "sluice", "serve",
                f"--grpc-port={self.grpc_port}",
                f"--grpc-health-port={self.health_port}",
                f"--metrics-port={self.metrics_port}",
                f"--proxy-port={self.proxy_port}",
                "--grpc-host=127.0.0.1",
                "--secure-serving=false",
                *self.flags,
            ],
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        await wait_listening(
            [self.grpc_port, self.proxy_port], timeout=timeout_s, process=self.process
        )

    def terminate(self) -> float:
        """SIGTERM; the moment it was sent (monotonic)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return time.monotonic()

    async def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running {timeout_s}s after SIGTERM")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


def log_field(log: str, message: str, key: str) -> str:
    """`key=value` from the first console log line carrying `message`."""
    for line in log.splitlines():
        if message in line:
            for token in line.split():
                if token.startswith(f"{key}="):
                    return token.split("=", 1)[1]
    raise AssertionError(f"no {message!r} line with {key}= in:\n{log[-2000:]}")
