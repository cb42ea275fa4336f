"""An OTLP/HTTP traces receiver on loopback for the tracing benchmarks: answers each export
with 200 over kept-alive HTTP/1.1 connections (as a collector does), and with `count` decodes
each export (opentelemetry-proto) and counts its spans — off where the receiver shares the
measured process and its CPU would count.

`OtlpSinkProcess` runs one in a process of its own (`python -m sluice.bench.harness.otlp_sink`),
so that neither the measured Sluice nor the benchmark's load generator pays for receiving.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from types import TracebackType


class OtlpSink:
    def __init__(self, *, count: bool = True) -> None:
        self.spans = 0  # spans received (with `count`)
        self.exports = 0  # export requests received
        self.connections = 0  # connections accepted (kept alive: far fewer than exports)
        self._lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with sink._lock:
                    sink.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                spans = _span_count(body) if count else 0
                with sink._lock:
                    sink.exports += 1
                    sink.spans += spans
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def _span_count(body: bytes) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    message = ExportTraceServiceRequest.FromString(body)
    return sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)


class OtlpSinkProcess:
    """An `OtlpSink` (counting) in a child process: its URL once started, its counts once
    stopped (`spans`, `exports`, `connections`; read at exit)."""

    def __init__(self) -> None:
        self.spans = self.exports = self.connections = 0
        self.pid = 0
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> OtlpSinkProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", "sluice.bench.harness.otlp_sink"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        self._process, self.pid = process, process.pid
        self.url = process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            process.kill()
            raise RuntimeError(f"the OTLP sink did not start: {self.url!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None:
            return
        try:
            out, _ = process.communicate("stop\n", timeout=30)
            counts = json.loads(out.strip().splitlines()[-1])
            self.spans, self.exports = counts["spans"], counts["exports"]
            self.connections = counts["connections"]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _serve_until_stdin_closes() -> None:
    with OtlpSink() as sink:
        print(sink.url, flush=True)
        sys.stdin.readline()
    print(
        json.dumps({"spans": sink.spans, "exports": sink.exports, "connections": sink.connections}),
        flush=True,
    )


if __name__ == "__main__":
    _serve_until_stdin_closes()
