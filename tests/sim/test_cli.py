"""`sluice sim` flags, and a pool of engines on their own loopback addresses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from dataclasses import replace

import aiohttp
import pytest

from sluice.sim.cli import build_parser, main, specs_from_args
from sluice.sim.pool import expand_hosts, start_pool


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--scheduling-policy" in capsys.readouterr().out


def test_flags_become_one_spec_per_engine() -> None:
    flags = (
        "--count 3 --port 9000 --host 127.0.0.10+ --profile llama-70b-h100-tp4 --max-num-seqs 8 "
        "--scheduling-policy priority --lora-modules a=/x b=/y --max-loras 2 --model m --seed 7"
    )
    args = build_parser().parse_args(flags.split(" "))
    specs = specs_from_args(args)
    assert [(s.host, s.port) for s in specs] == [
        ("127.0.0.10", 9000),
        ("127.0.0.11", 9001),
        ("127.0.0.12", 9002),
    ]
    assert {
        (s.config.max_num_seqs, s.config.scheduling_policy, s.config.max_loras) for s in specs
    } == {(8, "priority", 2)}
    assert specs[0].loras == {"a": "/x", "b": "/y"} and specs[0].model == "m"
    assert specs[0].cost.step_overhead_s > 0.02  # the 70B profile


def test_hosts_can_be_shared_listed_or_consecutive() -> None:
    assert expand_hosts("127.0.0.1", 2) == ["127.0.0.1", "127.0.0.1"]
    assert expand_hosts("127.0.0.2,127.0.0.3", 2) == ["127.0.0.2", "127.0.0.3"]
    with pytest.raises(ValueError):
        expand_hosts("127.0.0.2,127.0.0.3", 3)


def test_bad_lora_modules_are_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        main(["--lora-modules", "no-equals-sign"])


async def test_a_pool_serves_each_engine_on_its_own_address() -> None:
    args = build_parser().parse_args(
        ["--count", "2", "--port", "0", "--host", "127.0.0.21,127.0.0.22"]
    )
    specs = specs_from_args(args)
    specs = [replace(s, port=0) for s in specs]  # any free port
    pool = await start_pool(specs)
    try:
        assert [u.split(":")[1] for u in pool.urls] == ["//127.0.0.21", "//127.0.0.22"]
        async with aiohttp.ClientSession() as http:
            for url in pool.urls:
                async with http.get(url + "/health") as r:
                    assert r.status == 200
        assert pool.engines[0].engine is not pool.engines[1].engine
    finally:
        await pool.close()


def start_sim(count: int) -> tuple[subprocess.Popen[str], int, list[str]]:
    """`sluice sim` on consecutive free ports (retrying if another process takes one first)."""
    for _ in range(5):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "sluice.sim.cli",
            "--count",
            str(count),
            "--port",
            str(port),
        ]
        proc = subprocess.Popen(
            [*command, "--profile", "zero-latency"], stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        listening = []
        for line in proc.stderr:
            if "listening on" in line:
                listening.append(line)
                if len(listening) == count:
                    return proc, port, listening
        proc.wait(10)  # it died (port taken): try elsewhere
    raise AssertionError("could not start sluice sim")


def test_sluice_sim_serves_and_logs_one_line_per_engine() -> None:
    proc, port, lines = start_sim(2)
    try:
        assert [
            f"listening on http://127.0.0.1:{port + i}" in line for i, line in enumerate(lines)
        ] == [True, True]
        body = json.dumps({"prompt": "hi", "max_tokens": 2}).encode()
        for p in (port, port + 1):
            request = urllib.request.Request(f"http://127.0.0.1:{p}/v1/completions", data=body)
            with urllib.request.urlopen(request, timeout=10) as r:
                assert json.load(r)["usage"]["completion_tokens"] == 2
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_kv_events_config_is_vllms_json_and_engine_i_is_rank_i(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "42")
    config = (
        '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:5557", '
        '"replay_endpoint": "tcp://*:6557", "topic": "kv"}'
    )
    args = build_parser().parse_args(
        ["--count", "2", "--kv-events-config", config, "--prefix-caching-hash-algo", "sha256_cbor"]
    )
    specs = specs_from_args(args)
    assert [s.rank for s in specs] == [0, 1]
    assert all(s.kv_events is not None and s.kv_events.publishes for s in specs)
    assert specs[0].kv_events is not None and specs[0].kv_events.topic == "kv"
    assert {(s.config.hash_seed, s.config.prefix_caching_hash_algo) for s in specs} == {
        ("42", "sha256_cbor")
    }


def test_a_bad_kv_events_config_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--kv-events-config", '{"enable_kv_cache_events": 1, "x": 2}'])
    assert "--kv-events-config" in capsys.readouterr().err
