"""``sluice sim``: serve N simulated vLLM engines on ports P..P+N-1 in one process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import replace

from sluice.sim.block_hash import HASH_ALGORITHMS
from sluice.sim.faults import FaultMode
from sluice.sim.kv_events import KVEventsConfig
from sluice.sim.pool import EngineSpec, expand_hosts, start_pool
from sluice.sim.profiles import DEFAULT_PROFILE, PROFILES, get_profile, with_engine

log = logging.getLogger("sluice.sim")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sluice sim",
        description="Serve simulated vLLM engines (OpenAI API + vLLM /metrics) on ports P..P+N-1.",
    )
    p.add_argument("--count", type=int, default=1, help="number of engines (default 1)")
    p.add_argument("--port", type=int, default=8000, help="port of the first engine (default 8000)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address: one for all, a comma list (one each), or 127.0.0.10+ (consecutive)",
    )
    p.add_argument(
        "--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES), help="cost/capacity preset"
    )
    p.add_argument("--model", default="sim-model", help="served model name (default sim-model)")
    p.add_argument("--max-num-seqs", type=int, help="running-set size (profile default)")
    p.add_argument(
        "--max-num-batched-tokens", type=int, help="token budget per step (profile default)"
    )
    p.add_argument("--num-gpu-blocks", type=int, help="KV cache size in blocks (profile default)")
    p.add_argument("--block-size", type=int, help="tokens per KV block (default 16)")
    p.add_argument("--max-model-len", type=int, help="context length (default 32768)")
    p.add_argument(
        "--scheduling-policy",
        choices=("fcfs", "priority"),
        help="waiting-queue order (default fcfs)",
    )
    p.add_argument(
        "--no-prefix-caching", action="store_true", help="disable automatic prefix caching"
    )
    p.add_argument(
        "--prefix-caching-hash-algo",
        choices=HASH_ALGORITHMS,
        help="block hash (vLLM's; default sha256); the seed is PYTHONHASHSEED, random if unset",
    )
    p.add_argument(
        "--kv-events-config",
        type=_kv_events_config,
        help="vLLM's KV-events JSON, e.g. "
        '\'{"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:5557",'
        '"replay_endpoint":"tcp://*:5558"}\'; engine i uses the ports plus i',
    )
    p.add_argument(
        "--lora-modules", nargs="*", default=[], metavar="NAME=PATH", help="LoRA adapters served"
    )
    p.add_argument("--max-loras", type=int, help="adapters resident at once (default 1)")
    p.add_argument(
        "--lora-load-delay", type=float, help="seconds to load an adapter (profile default)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seeds natural output lengths and fault sampling"
    )
    p.add_argument(
        "--mean-output-tokens",
        type=float,
        default=128.0,
        help="mean natural length without ignore_eos",
    )
    p.add_argument(
        "--fault",
        default="none",
        choices=[m.value for m in FaultMode],
        help="start with this fault",
    )
    p.add_argument("--fault-rate", type=float, default=1.0, help="share of requests the fault hits")
    p.add_argument("--log-level", default="INFO")
    return p


def _kv_events_config(text: str) -> KVEventsConfig:
    try:
        return KVEventsConfig.from_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_lora_modules(items: list[str]) -> dict[str, str]:
    loras = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--lora-modules expects NAME=PATH, got {item!r}")
        loras[name] = path
    return loras


def specs_from_args(args: argparse.Namespace) -> list[EngineSpec]:
    profile = get_profile(args.profile)
    loras = parse_lora_modules(args.lora_modules)
    config = with_engine(
        profile,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        num_gpu_blocks=args.num_gpu_blocks,
        block_size=args.block_size,
        max_model_len=args.max_model_len,
        scheduling_policy=args.scheduling_policy,
        max_loras=args.max_loras,
        enable_prefix_caching=False if args.no_prefix_caching else None,
        prefix_caching_hash_algo=args.prefix_caching_hash_algo,
    )
    # vLLM seeds block hashes from PYTHONHASHSEED (random bytes when unset).
    config = replace(config, hash_seed=os.environ.get("PYTHONHASHSEED"))
    cost = profile.cost
    if args.lora_load_delay is not None:
        cost = replace(cost, lora_load_s=args.lora_load_delay)
    hosts = expand_hosts(args.host, args.count)
    return [
        EngineSpec(
            config=config,
            cost=cost,
            host=hosts[i],
            port=args.port + i,
            model=args.model,
            loras=loras,
            seed=args.seed + i,
            mean_output_tokens=args.mean_output_tokens,
            fault=FaultMode(args.fault),
            fault_rate=args.fault_rate,
            kv_events=args.kv_events_config,
            rank=i,
        )
        for i in range(args.count)
    ]


async def serve(specs: list[EngineSpec], profile_name: str) -> None:
    pool = await start_pool(specs)
    for i, served in enumerate(pool.engines):
        log.info(
            "sim engine %d (%s, model %s) listening on %s",
            i,
            profile_name,
            served.spec.model,
            served.url,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await pool.close()


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        specs = specs_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        import uvloop

        runner: contextlib.AbstractContextManager[asyncio.Runner] = asyncio.Runner(
            loop_factory=uvloop.new_event_loop
        )
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        runner = asyncio.Runner()
    with runner as r:
        r.run(serve(specs, args.profile))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
