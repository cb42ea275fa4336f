"""Start, stop and restart real `llama-server` processes on loopback, for tests and benchmarks.

    install = find_install()              # sluice.bench.engines.build; None if not built
    with start_llama_servers(2, install, LlamaServerSettings(threads=1, slots=2)) as engines:
        engines[0].url                    # http://127.0.0.1:<port>
        engines[0].kill(); engines[0].restart()

Each server runs `--metrics` (Sluice scrapes `/metrics`) and is ready when `GET /health` answers
200 (the model is loaded). Ports: consecutive free ports on 127.0.0.1 by default, or the caller's
(host, port) pairs — the wall-clock bench puts every engine on its own loopback address and one
port, as an InferencePool has one target port. A start whose port was taken meanwhile is retried
on another block. Synchronous on purpose: a benchmark driver and an asyncio test fixture can both
call it (startup takes about a second).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sluice.bench.engines.build import LlamaCppInstall
from sluice.bench.harness.cpu import rss_mb
from sluice.bench.harness.ports import free_port_block


@dataclass(frozen=True, slots=True)
class LlamaServerSettings:
    """How each server runs. `slots` requests run at once (`--parallel`), each with a context of
    `context_per_slot` tokens; more wait in llama.cpp's queue (`requests_deferred`)."""

    threads: int = 1
    slots: int = 2
    context_per_slot: int = 2048
    ready_timeout_s: float = 60.0
    extra_args: tuple[str, ...] = ()
    model: Path | None = None  # None: the install's Q4_0 conversion


class LlamaServerError(RuntimeError):
    """A server that exited or did not get ready; the message carries its log's tail."""


class LlamaServer:
    """One `llama-server` process bound to `host:port` (restartable on the same address)."""

    def __init__(
        self,
        install: LlamaCppInstall,
        settings: LlamaServerSettings,
        host: str,
        port: int,
        log_path: Path,
    ) -> None:
        self.install = install
        self.settings = settings
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_s = float("nan")  # seconds from spawn to a 200 from /health, last start

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        s = self.settings
        model = s.model or self.install.model
        command = [str(self.install.server), "--model", str(model)]
        command += ["--alias", self.install.model_name, "--host", self.host]
        command += ["--port", str(self.port), "--threads", str(s.threads)]
        command += ["--parallel", str(s.slots), "--ctx-size", str(s.slots * s.context_per_slot)]
        command += ["--metrics", "--no-webui", *s.extra_args]
        return command

    def start(self) -> None:
        """Spawn and wait until ready; raises `LlamaServerError` (process stopped) if it exits
        or is not ready within `ready_timeout_s`."""
        if self.running:
            return
        log = self.log_path.open("ab")
        started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()  # the child holds its own descriptor
        try:
            self._wait_ready(started + self.settings.ready_timeout_s)
        except LlamaServerError:
            self.kill()
            raise
        self.ready_s = time.monotonic() - started

    def _wait_ready(self, deadline: float) -> None:
        process = self.process
        assert process is not None
        while True:
            if process.poll() is not None:
                raise LlamaServerError(
                    f"llama-server on {self.hostport} exited ({process.returncode}):\n{self.log()}"
                )
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise LlamaServerError(f"llama-server on {self.hostport} not ready:\n{self.log()}")
            time.sleep(0.05)

    def healthy(self) -> bool:
        """`GET /health` answers 200 (503 while the model loads; refused before it listens)."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the engine dies mid-request, as a crashed or evicted pod does."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self) -> None:
        """Start again on the same address (after `kill` or `stop`)."""
        self.stop()
        self.start()

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            return str(response.read().decode())

    def counters(self) -> dict[str, float]:
        """Every `llamacpp:*` sample of `/metrics`, by name (they carry no labels)."""
        found = re.findall(r"^(llamacpp:\w+) (\S+)$", self.metrics_text(), re.MULTILINE)
        return {name: float(value) for name, value in found}

    def tokenize(self, text: str) -> list[int]:
        """The model's tokens for `text` (llama-server's `/tokenize`)."""
        answer = completion(self.url, {"content": text}, path="/tokenize", timeout_s=10)
        tokens = answer["tokens"]
        assert isinstance(tokens, list)
        return [int(t) for t in tokens]

    def rss_mb(self) -> float:
        """Resident memory now (MiB); NaN when not running."""
        process = self.process
        if process is None or process.poll() is not None:
            return float("nan")
        return rss_mb(process.pid)

    def log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LlamaServers(Sequence[LlamaServer]):
    """The servers one `start_llama_servers` call started; a context manager that stops them."""

    def __init__(self, servers: list[LlamaServer], log_dir: tempfile.TemporaryDirectory[str]):
        self._servers = servers
        self._log_dir = log_dir

    def __getitem__(self, index: int) -> LlamaServer:  # type: ignore[override]
        return self._servers[index]

    def __len__(self) -> int:
        return len(self._servers)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self._servers]

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self._servers]

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
        self._log_dir.cleanup()

    def __enter__(self) -> LlamaServers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_llama_servers(
    count: int,
    install: LlamaCppInstall,
    settings: LlamaServerSettings | None = None,
    *,
    addresses: Sequence[tuple[str, int]] | None = None,
    attempts: int = 3,
) -> LlamaServers:
    """Start `count` servers (one after another: each loads the model on its own) and wait until
    all are ready. Without `addresses`, on `count` consecutive free ports of 127.0.0.1, a fresh
    block for each attempt."""
    settings = settings or LlamaServerSettings()
    if addresses is not None and len(addresses) != count:
        raise ValueError(f"{count} servers need {count} addresses, got {len(addresses)}")
    log_dir = tempfile.TemporaryDirectory(prefix="sluice-llamacpp-")
    for attempt in range(attempts):
        if addresses is not None:
            chosen = list(addresses)
        else:
            first = free_port_block(count)
            chosen = [("127.0.0.1", first + i) for i in range(count)]
        servers = [
            LlamaServer(install, settings, host, port, Path(log_dir.name) / f"{host}-{port}.log")
            for host, port in chosen
        ]
        try:
            for server in servers:
                server.start()
        except LlamaServerError:
            for server in servers:
                server.stop()
            if addresses is not None or attempt == attempts - 1 or not _lost_port(servers):
                log_dir.cleanup()
                raise
            continue
        return LlamaServers(servers, log_dir)
    raise AssertionError("unreachable")


_BIND_FAILED = re.compile(r"couldn't bind|address already in use", re.IGNORECASE)


def _lost_port(servers: Sequence[LlamaServer]) -> bool:
    """Another process took a port between the check and the bind."""
    return any(_BIND_FAILED.search(s.log()) for s in servers)


def completion(
    url: str, body: dict[str, object], *, path: str = "/v1/completions", timeout_s: float = 120
) -> dict[str, object]:
    """One non-streamed request (blocking); the decoded answer."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url + path, data, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer = json.loads(response.read())
    assert isinstance(answer, dict)
    return answer
