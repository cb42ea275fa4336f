"""Wall clock with the engines' KV events: the precise arm's router subscribes to the ports its
engines publish on; bypassing traffic and engine restarts survive the cut to the replay window;
and, end to end, real `sluice sim` engines publish over ZMQ to a real `sluice serve`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from sluice.bench.arms import arm_by_name
from sluice.bench.harness.ports import free_port, wait_for_port
from sluice.bench.scenarios import SCENARIOS
from sluice.bench.wall.processes import _manifests, sluice_config_text, start_engines, stop
from sluice.bench.wall.run import needs_kv_events, run_wall_scenario, wall_workload
from sluice.config import load_sluice_config
from sluice.scheduling.precise_scorer import PrecisePrefixCacheScorer
from sluice.scheduling.scheduler import Scheduler


def test_the_precise_arm_subscribes_to_the_ports_its_engines_publish_on() -> None:
    config = load_sluice_config(sluice_config_text(arm_by_name("sluice-precise"), (41000, 42000)))
    scheduler = Scheduler.from_config(config.picker, random.Random(1))
    (scorer,) = {
        id(s): s
        for p in scheduler.profiles.values()
        for s, _ in p.scorers
        if isinstance(s, PrecisePrefixCacheScorer)
    }.values()
    assert (scorer.subscribers.socket_port, scorer.subscribers.replay_socket_port) == (
        41000,
        42000,
    )


def test_a_precise_arm_without_publishing_engines_is_refused_by_name() -> None:
    with pytest.raises(RuntimeError, match="sluice-precise"):
        sluice_config_text(arm_by_name("sluice-precise"))


def test_every_arm_of_a_kv_event_run_gets_the_publishing_engines() -> None:
    assert needs_kv_events(["sluice-default", "sluice-precise"])
    assert not needs_kv_events(["sluice-default", "round-robin", "vllm-router:round_robin"])


def test_the_replay_window_keeps_the_bypassing_requests_and_the_restarts_inside_it() -> None:
    restarts = wall_workload(SCENARIOS["prefix-restarts"], 1, 4.0, True, cut=20.0)
    assert restarts.restarts and all(at < 20.0 for at, _ in restarts.restarts)
    assert max(a.at for a in restarts.arrivals) < 20.0
    bypass = wall_workload(SCENARIOS["prefix-bypass"], 1, 4.0, True, cut=20.0)
    share = sum(a.bypass for a in bypass.arrivals) / len(bypass.arrivals)
    assert 0.15 < share < 0.45  # the scenario's 30%


def test_a_replay_window_longer_than_the_workload_is_refused_before_any_run() -> None:
    scenario = SCENARIOS["prefix-eviction"]
    built = scenario.build(1, 4.0, True).window_s
    assert built is not None
    whole = wall_workload(scenario, 1, 4.0, True, cut=built)
    assert whole.arrivals == scenario.build(1, 4.0, True).arrivals
    with pytest.raises(ValueError, match=rf"{built + 50:g}-s .* at most {built:g} s .*--quick"):
        wall_workload(scenario, 1, 4.0, True, cut=built + 50)
    with pytest.raises(ValueError, match="at most"):  # before a single engine starts
        run_wall_scenario(scenario, ["sluice-default"], seed=1, quick=True, duration_s=built + 1)
    full = scenario.build(1, 4.0, False).window_s
    assert full is not None and full > built  # the full workload is the way to a longer window
    assert wall_workload(scenario, 1, 4.0, False, cut=full).arrivals


@pytest.mark.slow
def test_real_engines_publish_to_a_real_router_and_a_restart_is_followed() -> None:
    engines = start_engines(SCENARIOS["prefix-eviction"], False, kv_events=True)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-wall-kv-"))
    config = workdir / "config.yaml"
    config.write_text(sluice_config_text(arm_by_name("sluice-precise"), engines.kv_ports))
    port, metrics = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "sluice"), "serve", "--pool-name=bench"]
    command += ["--pool-namespace=default", f"--resources={_manifests(workdir, engines, {})}"]
    command += [f"--proxy-port={port}", f"--config-file={config}", "--disable-extproc"]
    command += ["--secure-serving=false", "--log-level=warning"]
    command += [f"--grpc-health-port={free_port()}", f"--metrics-port={metrics}"]
    router = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def counter(name: str) -> dict[str, float]:
        """`name`'s samples on the router's /metrics page, by label set ("" unlabelled)."""
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics").read().decode()
        out = {}
        for line in page.splitlines():
            if line.startswith((name + "{", name + " ")):
                labels, value = line.rsplit(" ", 1)
                out[labels[len(name) :]] = float(value)
        return out

    def wait_until(check: object, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.1)

    try:
        wait_for_port("127.0.0.1", port, router, timeout=60)
        body = json.dumps({"model": "sim-model", "prompt": "a b c d " * 200, "max_tokens": 1})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            body.encode(),
            {"content-type": "application/json"},
        )
        wait_until(lambda: len(counter("sluice_kv_events_endpoint_mode")) >= 4)
        urllib.request.urlopen(request).read()
        # The engine that served it reported its 25 blocks (400 tokens): its events arrived.
        wait_until(lambda: counter("sluice_precise_prefix_index_blocks")[""] >= 20)
        served = max((v, k) for k, v in counter("sluice_kv_events_events_total").items())[1]
        index = int(served.split("rank-")[1][0])
        engines.restart(index)
        # The restarted engine holds nothing, and neither does its view; it is trusted again.
        wait_until(lambda: counter("sluice_precise_prefix_index_blocks")[""] == 0)
        precise = f'{{endpoint="engine-0-rank-{index}",mode="precise"}}'
        wait_until(lambda: counter("sluice_kv_events_endpoint_mode").get(precise) == 1.0)
    finally:
        stop(router)
        engines.stop()
