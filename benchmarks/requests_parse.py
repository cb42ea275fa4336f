"""Request-layer micro-benchmarks: µs per operation on this machine.

    .venv/bin/python benchmarks/requests_parse.py

Measures parse + classify (16 KiB chat body, 200 B body), `rewrite_model` on 16 KiB, and
`UsageParser.feed` per SSE chunk (a token delta; the final usage chunk). Each figure is the best
of several repeats of a timed loop (the least-disturbed run on a shared machine).
"""

from __future__ import annotations

import json
import random
import timeit
from collections.abc import Callable

from sluice.bench.harness.child import exit_on_sigterm
from sluice.requests.parse import parse_request
from sluice.requests.rewrite import rewrite_model
from sluice.requests.usage import UsageParser

REPEATS = 5
HEADERS = {
    "x-request-id": "bench-1",
    "x-gateway-inference-objective": "premium",
    "x-gateway-inference-fairness-id": "tenant-a",
}


def chat_body(target_bytes: int) -> bytes:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "kv-cache", "token", "schedule", "prefix"]
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are a helpful assistant."}]
    payload = {"model": "llama-3-8b", "seed": 2**63 - 1, "stream": True, "messages": messages}
    while len(json.dumps(payload)) < target_bytes:
        text = " ".join(rng.choice(words) for _ in range(60))
        messages.append({"role": "user" if len(messages) % 2 else "assistant", "content": text})
    return json.dumps(payload).encode()


def small_body() -> bytes:
    body = json.dumps(
        {
            "model": "llama-3-8b",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Write a haiku about queues, please."}],
        }
    ).encode()
    return body + b" " * max(0, 200 - len(body))


def sse_chunk(text: str) -> bytes:
    event = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "llama-3-8b",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


USAGE_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],"usage":'
    b'{"prompt_tokens":4096,"completion_tokens":256,"total_tokens":4352,'
    b'"prompt_tokens_details":{"cached_tokens":2048}}}\n\ndata: [DONE]\n\n'
)


def microseconds(operation: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(operation, number=number, repeat=REPEATS))
    return best / number * 1e6


def main() -> None:
    big, small = chat_body(16 * 1024), small_body()
    chunk = sse_chunk(" token")
    parser = UsageParser(streaming=True)

    def parse(body: bytes) -> Callable[[], object]:
        return lambda: parse_request(HEADERS, body, path="/v1/chat/completions")

    def parse_with_rewrite() -> object:
        return parse_request(
            {**HEADERS, "x-gateway-model-name-rewrite": "llama-3-8b-lora"},
            big,
            path="/v1/chat/completions",
        )

    def usage_stream() -> object:
        fresh = UsageParser(streaming=True)
        fresh.feed(USAGE_CHUNK)
        return fresh.finish()

    rows = [
        (f"parse+classify chat {len(big) // 1024} KiB", microseconds(parse(big), 2000)),
        (f"parse+classify chat {len(small)} B", microseconds(parse(small), 20000)),
        (f"parse+rewrite chat {len(big) // 1024} KiB", microseconds(parse_with_rewrite, 2000)),
        (
            f"rewrite_model {len(big) // 1024} KiB",
            microseconds(lambda: rewrite_model(big, "llama-3-8b-lora"), 5000),
        ),
        (
            f"usage feed, delta chunk ({len(chunk)} B)",
            microseconds(lambda: parser.feed(chunk), 50000),
        ),
        (
            f"usage feed+finish, usage chunk ({len(USAGE_CHUNK)} B)",
            microseconds(usage_stream, 20000),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:8.2f} µs/op")


if __name__ == "__main__":
    exit_on_sigterm()
    main()
