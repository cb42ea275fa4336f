"""The precise index and `precise-prefix-cache-scorer`: engines' events in, the longest cached
prefix per endpoint out; upstream's parameters; which source each endpoint's score comes from."""

from __future__ import annotations

import pytest

from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.kvevents.wire import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    decode_batch,
    raw_token_ids,
)
from sluice.requests.model import InferenceRequest
from sluice.scheduling.framework import CycleState
from sluice.scheduling.precise_hashing import BlockKeys
from sluice.scheduling.precise_index import PreciseIndex
from sluice.scheduling.precise_scorer import PrecisePrefixCacheScorer
from sluice.scheduling.precise_tokens import token_ids
from sluice.sim.engine import Engine
from sluice.sim.kv_events import KVEventBatch, encode_batch
from sluice.sim.request import SimRequest
from sluice.util.located import ConfigError

from .helpers import NOW, pool, request, scheduler

SEED = "3"
PROMPT = "Answer in SQL only. " * 40


def run_to_idle(engine: Engine, now: float) -> float:
    """Step `engine` in virtual time until it has nothing left to do."""
    while engine.has_work or engine.next_arrival_time() is not None:
        duration = engine.start_step(now)
        if duration is None:
            now = engine.next_arrival_time() or now
            continue
        now += duration
        engine.finish_step(now)
    return now


def engine_events(text: str, *, seed: str | None = SEED, block_size: int = 16) -> list:
    """What a sim engine (vLLM) reports after serving `text` once, decoded by Sluice."""
    engine = Engine.from_profile(hash_seed=seed, enable_kv_cache_events=True, block_size=block_size)
    engine.add_request(SimRequest.from_text("r", text, max_tokens=1), 0.0)
    run_to_idle(engine, 0.0)
    payload = encode_batch(KVEventBatch(0.0, engine.take_kv_events(), 0))
    return decode_batch(payload).events


def keys_of(index: PreciseIndex, text: str) -> list[int]:
    req = request(text)
    return index.keys.request_keys(token_ids(req), max_blocks=10_000)


def test_with_the_engines_seed_events_are_stored_as_they_come_and_match_the_prompt() -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    index.apply("a", engine_events(PROMPT))
    keys = keys_of(index, PROMPT)
    assert index.match(keys) == {index.slot("a"): len(keys)}
    assert index.held("a") == set(keys) and index.count("a") == len(keys)
    other = keys_of(index, PROMPT[:160] + "different tail " * 30)
    assert index.match(other) == {index.slot("a"): 160 // 4 // 16}


def test_an_engine_with_another_seed_is_unusable_in_the_engine_key_space() -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    index.apply("a", engine_events(PROMPT, seed="999"))
    assert "hashSeed" in index.unusable["a"] and index.held("a") == set()


def test_without_a_seed_keys_are_recomputed_from_token_ids_for_any_engine_seed() -> None:
    index = PreciseIndex(BlockKeys(16))
    events = engine_events(PROMPT, seed=None)  # vLLM without PYTHONHASHSEED: random
    index.apply("a", events)
    keys = keys_of(index, PROMPT)
    assert index.match(keys) == {index.slot("a"): len(keys)}
    index.apply("a", [BlockRemoved(events[0].block_hashes[3:4])])  # names the engine's hash
    assert index.match(keys) == {index.slot("a"): 3}


def test_an_engine_block_of_several_index_blocks_is_split_and_removed_whole() -> None:
    index = PreciseIndex(BlockKeys(16))
    events = engine_events(PROMPT, seed=None, block_size=32)
    index.apply("a", events)
    keys = keys_of(index, PROMPT)
    assert index.match(keys)[index.slot("a")] == len(keys) // 2 * 2
    index.apply("a", [BlockRemoved(events[0].block_hashes[1:2])])
    assert index.match(keys)[index.slot("a")] == 2


def test_a_block_size_that_cannot_match_is_reported() -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    index.apply("a", engine_events(PROMPT, block_size=32))
    assert "block size 32" in index.unusable["a"]


def test_clearing_and_forgetting_an_endpoint_leave_the_others_alone() -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    events = engine_events(PROMPT)
    index.apply("a", events)
    index.apply("b", events)
    keys = keys_of(index, PROMPT)
    index.apply("a", [AllBlocksCleared()])
    assert index.match(keys) == {index.slot("b"): len(keys)}
    index.forget("b")
    assert index.match(keys) == {} and len(index) == 0
    index.apply("c", events)  # reuses the freed slot
    assert index.match(keys) == {index.slot("c"): len(keys)}


def test_clearing_a_large_endpoint_never_stalls_and_is_swept_as_events_arrive() -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    index._verified.add("a")  # synthetic hashes with parents: no first block to check
    big = list(range(1, 20_001))
    index.apply("a", [BlockStored(big, 1, raw_token_ids([0] * 16 * len(big)), 16)])
    assert len(index) == 20_000
    index.clear("a")  # moves "a" to a fresh slot at once; the old bits go a chunk at a time
    assert index.count("a") == 0 and 0 < index.sweeping < 20_000
    # Keys not swept yet still carry the old slot's bit, but that slot is nobody's now.
    stale = index.match(big[-5:])
    assert stale and all(index.names[slot] is None for slot in stale)
    index._verified.add("a")
    while index.sweeping:
        index.apply("a", [BlockRemoved([999_999])])  # any batch sweeps a little more
    assert len(index) == 0 and index.held("a") == set()


# -- the scorer ---------------------------------------------------------------------------------

CONFIG = f"""
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    tokenProcessorConfig: {{blockSizeTokens: 16, hashSeed: "{SEED}"}}
    kvEventsConfig:
      topicFilter: ""
      concurrency: 4
      podDiscoveryConfig: {{socketPort: 5557, replaySocketPort: 5558}}
    indexerConfig: {{tokenizersPoolConfig: {{modelName: base}}}}
    speculativeIndexing: true
    speculativeTTL: 500ms
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: precise-prefix-cache-scorer
"""


def precise_scorer(yaml_text: str = CONFIG) -> PrecisePrefixCacheScorer:
    sched = scheduler(yaml_text)
    (scorer,) = [p for p in sched._plugins if isinstance(p, PrecisePrefixCacheScorer)]
    return scorer


def live(scorer: PrecisePrefixCacheScorer, name: str, *, complete: bool = True) -> None:
    """Make `name`'s stream trusted: connected, synced from the publisher's first batch."""
    stream = scorer.streams.add(name, replay=True)
    stream.on_connected(0.0)
    if complete:
        stream.on_replay_done(0.0)
    else:
        stream.on_replayed(7, encode_batch(KVEventBatch(0.0, [], 0)), 0.0)
        stream.on_replay_done(0.0)


def score(scorer: PrecisePrefixCacheScorer, req: InferenceRequest, now: float = NOW) -> list:
    states = pool(EngineMetrics(), EngineMetrics(), EngineMetrics())
    return scorer.score(CycleState(req, now), states.snapshot())


def test_upstreams_parameters_configure_the_plugin() -> None:
    scorer = precise_scorer()
    assert scorer.keys.block_size == 16 and scorer.keys.space == "engine"
    assert scorer.subscribers.socket_port == 5557 and scorer.subscribers.replay_socket_port == 5558
    assert scorer.speculative and scorer.speculative_ttl_s == 0.5 and scorer.model_name == "base"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ("tokenProcessorConfig: {hashAlgorithm: fnv64a_cbor}", "hashAlgorithm"),
        ("kvEventsConfig: {zmqEndpoint: 'tcp://*:5557'}", "global socket mode"),
        ("kvEventsConfig: {podDiscoveryConfig: {socketPort: 70000}}", "not a TCP port"),
        ("kvEventsConfig: {engineType: sglang}", "only vllm"),
        ("tokenProcessorConfig: {blocksize: 16}", "unknown parameter 'blocksize'"),
        ("speculativeTTL: soon", "speculativeTTL"),
    ],
)
def test_a_bad_parameter_names_its_path_and_line(parameters: str, message: str) -> None:
    text = CONFIG.split("  parameters:")[0] + f"  parameters:\n    {parameters}\n"
    text += CONFIG.split("    speculativeTTL: 500ms\n")[1]
    with pytest.raises(ConfigError, match=message) as info:
        precise_scorer(text)
    assert "test.yaml:" in str(info.value)


def test_a_precise_endpoint_scores_what_its_engine_holds_and_others_fall_back() -> None:
    scorer = precise_scorer()
    live(scorer, "pod-1")
    scorer.precise.apply("pod-1", engine_events(PROMPT))
    req = request(PROMPT)
    scores = score(scorer, req)
    assert scores[1] == 1.0 and scores[0] == 0.0 and scores[2] == 0.0
    assert scorer.source_of("pod-1") == ("precise", "live")
    assert scorer.source_of("pod-0") == ("fallback", "no subscriber")


def test_a_fallback_endpoint_gets_the_approximate_guess_and_a_partial_one_the_better() -> None:
    scorer = precise_scorer()
    warm = request(PROMPT)
    score(scorer, warm)
    scorer.on_dispatch(None, warm, Endpoint("pod-0", "10.0.0.1", 8000))  # the approximate guess
    scorer.on_dispatch(None, warm, Endpoint("pod-2", "10.0.0.3", 8000))
    live(scorer, "pod-2", complete=False)  # partial: its events say nothing about the prompt
    scores = score(scorer, request(PROMPT), now=NOW + 10)  # speculation has expired
    assert scores[0] > 0.9  # fallback: approximate
    assert scores[2] == scores[0]  # partial: max(precise 0, approximate)
    live(scorer, "pod-0")  # precise now: its engine holds nothing
    assert score(scorer, request(PROMPT), now=NOW + 10)[0] == 0.0


def test_speculation_covers_the_time_until_the_engines_events_arrive() -> None:
    scorer = precise_scorer()
    live(scorer, "pod-1")
    first = request(PROMPT)
    score(scorer, first)
    scorer.on_dispatch(None, first, Endpoint("pod-1", "10.0.0.2", 8000))
    assert score(scorer, request(PROMPT), now=NOW + 0.1)[1] == 1.0
    assert score(scorer, request(PROMPT), now=NOW + 1.0)[1] == 0.0  # TTL 500 ms is over


def test_the_predicted_hit_is_what_the_engine_will_report_as_cached_tokens() -> None:
    scorer = precise_scorer()
    live(scorer, "pod-1")
    scorer.precise.apply("pod-1", engine_events(PROMPT))
    req = request(PROMPT)
    score(scorer, req)
    target = Endpoint("pod-1", "10.0.0.2", 8000)
    predicted = scorer.predicted_cached_tokens(req, target)
    engine = Engine.from_profile(hash_seed=SEED)
    sim = SimRequest.from_text("x", PROMPT, max_tokens=1)
    engine.add_request(SimRequest.from_text("warm", PROMPT, max_tokens=1), 0.0)
    now = run_to_idle(engine, 0.0)
    seq = engine.add_request(sim, now)
    run_to_idle(engine, now)
    assert predicted == seq.cached_tokens and predicted > 0
    compared: list[tuple[int, int, int]] = []
    scorer.on_compare = lambda *row: compared.append(row)
    scorer.on_dispatch(None, req, target)
    assert compared == [(len(token_ids(req)), 0, predicted)]


def offloaded(events: list, medium: str) -> list:
    """What vLLM's offloading connector reports for the same blocks in another tier: a map-layout
    BlockStored without token ids or parent, then their BlockRemoved, under the same hashes."""
    import msgspec

    hashes = [h for e in events if isinstance(e, BlockStored) for h in e.block_hashes]
    payload = msgspec.msgpack.encode(
        [
            0.0,
            [
                {
                    "type": "BlockStored",
                    "block_hashes": hashes,
                    "parent_block_hash": None,
                    "token_ids": [],
                    "block_size": 16,
                    "lora_id": None,
                    "medium": medium,
                    "lora_name": None,
                },
                {"type": "BlockRemoved", "block_hashes": hashes, "medium": medium},
            ],
            0,
        ]
    )
    return list(decode_batch(payload).events)


@pytest.mark.parametrize("seed", [SEED, None], ids=["engine-keys", "own-keys"])
def test_another_tiers_events_neither_store_nor_drop_the_gpu_blocks(seed: str | None) -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=seed))
    gpu = engine_events(PROMPT, seed=seed)
    index.apply("a", gpu)
    keys = keys_of(index, PROMPT)
    held = index.held("a")
    assert index.match(keys) == {index.slot("a"): len(keys)} and held
    cpu = offloaded(gpu, "CPU")
    assert [e.medium for e in cpu] == ["CPU", "CPU"]
    index.apply("a", cpu)  # offloaded to CPU and dropped there: the GPU copy stays
    assert index.held("a") == held and index.match(keys) == {index.slot("a"): len(keys)}
    assert "a" not in index.unusable and index.other_tiers == 2
    # A GPU removal (medium "GPU", or none as before vLLM had tiers) does drop them.
    for event in gpu:
        if isinstance(event, BlockStored):
            index.apply("a", [BlockRemoved(event.block_hashes, None)])
    assert index.held("a") == set() and index.match(keys) == {}


def test_other_tiers_events_are_counted_in_the_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from sluice.scheduling.precise_metrics import PrecisePrefixMetrics

    scorer = precise_scorer()
    registry = CollectorRegistry()
    PrecisePrefixMetrics(registry, scorer)
    live(scorer, "pod-1")
    gpu = engine_events(PROMPT)
    scorer.precise.apply("pod-1", [*gpu, *offloaded(gpu, "CPU")])
    exposition = generate_latest(registry).decode()
    assert "sluice_precise_prefix_index_other_tier_events_total 2.0" in exposition
    assert "sluice_precise_prefix_index_other_group_events_total 0.0" in exposition
    scorer.precise.apply("pod-1", in_group(gpu, 1, "sliding_window"))
    exposition = generate_latest(registry).decode()
    assert "sluice_precise_prefix_index_other_group_events_total 1.0" in exposition
    assert f"sluice_precise_prefix_index_blocks {len(scorer.precise)}.0" in exposition


def in_group(events: list, group: int, kind: str) -> list:
    """The same blocks as another KV-cache group of a hybrid model reports them: vLLM's
    BlockStored and BlockRemoved under the same hashes, with that group's index (and, when
    stored, its kind)."""
    from sluice.sim import kv_events as vllm

    out: list[vllm.Event] = []
    for e in events:
        if isinstance(e, BlockStored):
            out.append(
                vllm.BlockStored(
                    e.block_hashes,
                    e.parent_block_hash,
                    e.tokens(),
                    e.block_size,
                    None,
                    "GPU",
                    e.lora_name,
                    e.extra_keys,
                    group,
                    kind,
                    1024 if kind == "sliding_window" else None,
                )
            )
        elif isinstance(e, BlockRemoved):
            out.append(vllm.BlockRemoved(e.block_hashes, "GPU", group))
    return list(decode_batch(encode_batch(KVEventBatch(0.0, out, 0))).events)


def removals(events: list) -> list:
    return [
        BlockRemoved(e.block_hashes, "GPU", e.group_idx)
        for e in events
        if isinstance(e, BlockStored)
    ]


@pytest.mark.parametrize("seed", [SEED, None], ids=["engine-keys", "own-keys"])
@pytest.mark.parametrize(
    "full", [0, 1], ids=["full-attention-is-group-0", "full-attention-is-group-1"]
)
def test_a_hybrid_models_groups_are_not_mixed_up(seed: str | None, full: int) -> None:
    """A hybrid model stores the same blocks once per KV-cache group and evicts each group on
    its own: a sliding-window group's removals must not drop what the full-attention group
    still holds, and its stores must not keep alive what that group evicted. The index follows
    the full-attention group, whichever index it has and whichever group reports first."""
    index = PreciseIndex(BlockKeys(16, hash_seed=seed))
    base = engine_events(PROMPT, seed=seed)
    attention = in_group(base, full, "full_attention")
    sliding = in_group(base, 1 - full, "sliding_window")
    assert all(e.group_idx == full for e in attention)
    index.apply("a", [*sliding, *attention])  # the other group first: it is not learned
    keys = keys_of(index, PROMPT)
    assert index.indexed_group("a") == full
    assert index.match(keys) == {index.slot("a"): len(keys)}
    skipped = index.other_groups
    assert skipped == len(sliding)
    index.apply("a", removals(sliding))  # the sliding window moved on: still cached
    assert index.match(keys) == {index.slot("a"): len(keys)}
    assert index.other_groups == skipped + len(removals(sliding))
    index.apply("a", removals(attention))  # the full-attention group evicted them
    assert index.match(keys) == {} and index.held("a") == set()
    index.apply("a", sliding)  # stored again in the sliding-window group only: no hit
    assert index.match(keys) == {}


def test_an_engine_without_a_full_attention_group_is_not_indexed() -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    index.apply("a", in_group(engine_events(PROMPT), 0, "mamba"))
    assert index.indexed_group("a") is None and index.match(keys_of(index, PROMPT)) == {}
    assert index.other_groups == 1


def test_events_without_a_group_apply_as_the_single_group_of_older_vllm() -> None:
    index = PreciseIndex(BlockKeys(16, hash_seed=SEED))
    stored = [e for e in engine_events(PROMPT) if isinstance(e, BlockStored)]
    old = [
        BlockStored(e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size) for e in stored
    ]
    assert all(e.group_idx is None for e in old)
    index.apply("a", old)
    keys = keys_of(index, PROMPT)
    assert index.match(keys) == {index.slot("a"): len(keys)} and index.other_groups == 0
    index.apply("a", [BlockRemoved(e.block_hashes) for e in old])
    assert index.match(keys) == {}
