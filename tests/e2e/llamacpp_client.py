"""What the real-engine tests send and read: one OpenAI request (streamed or not) with its
time to first token and the usage the engine reported, and sums of Sluice's own metrics."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

MODEL = "SmolLM2-135M-Instruct"


@dataclass
class Answer:
    status: int
    text: str  # the generated text (all chunks joined)
    usage: dict[str, Any]  # as the engine reported it ({} if none)
    ttft_s: float  # to the first chunk carrying text (streams), or to the whole answer
    raw: str


def chat(content: str, *, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return {"model": MODEL, "messages": messages, "max_tokens": 4, **extra}


def completion(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt, "max_tokens": 4, **extra}


def streamed(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


async def ask(
    session: aiohttp.ClientSession, base_url: str, body: dict[str, Any], **headers: str
) -> Answer:
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    started = time.monotonic()
    ttft = float("nan")
    async with session.post(base_url + path, json=body, headers=headers) as response:
        if not body.get("stream") or response.status != 200:
            raw = await response.text()
            ttft = time.monotonic() - started
            if response.status != 200:
                return Answer(response.status, "", {}, ttft, raw)
            document = json.loads(raw)
            choice = document["choices"][0]
            text = choice["message"]["content"] if "message" in choice else choice["text"]
            return Answer(response.status, text, document.get("usage") or {}, ttft, raw)
        lines: list[str] = []
        async for line in response.content:
            lines.append(line.decode())
            if ttft != ttft and _carries_text(line):  # NaN until the first text arrives
                ttft = time.monotonic() - started
    raw = "".join(lines)
    text, usage = "", {}
    for line in raw.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        usage = event.get("usage") or usage
        for choice in event.get("choices", []):
            text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    return Answer(response.status, text, usage, ttft, raw)


def _carries_text(line: bytes) -> bool:
    if not line.startswith(b"data: {"):
        return False
    for choice in json.loads(line[6:]).get("choices", []):
        if (choice.get("delta") or {}).get("content") or choice.get("text"):
            return True
    return False


def sluice_sum(registry: CollectorRegistry, name: str) -> float:
    """A metric's value summed over its label sets (`name` with its suffix, e.g. `_sum`)."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    )


def unique_words(count: int, seed: str) -> str:
    """Text no engine has seen (so no engine has it cached): `count` random words."""
    rng = random.Random(seed)
    syllables = ("ka", "lo", "mi", "ren", "tu", "sa", "vor", "el", "dai", "qu", "ob", "nix")
    return " ".join(
        "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(count)
    )
