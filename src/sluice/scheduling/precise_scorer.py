"""`precise-prefix-cache-scorer`: prefix-cache affinity from the engines' own KV events.

Upstream's plugin (llm-d-inference-scheduler, now llm-d-router's precise producer) under its type
name and parameters::

    - type: precise-prefix-cache-scorer
      parameters:
        tokenProcessorConfig: {blockSizeTokens: 16, hashSeed: "42", hashAlgorithm: sha256}
        kvEventsConfig:
          topicFilter: ""
          podDiscoveryConfig: {socketPort: 5557, replaySocketPort: 5558}
        indexerConfig: {tokenizersPoolConfig: {modelName: sim-model}}
        speculativeIndexing: true
        speculativeTTL: 2s

Score = leading blocks the endpoint's engine holds / blocks in the prompt, per endpoint from the
freshest source that can be trusted (`source_of`):

* ``precise``: its event stream is contiguous since an empty cache — the precise index alone;
* ``partial``: contiguous, but joined mid-stream — the higher of the precise index (what events
  proved) and the approximate guess (blocks stored before Sluice listened);
* ``fallback``: no trustworthy stream (connecting, replaying a gap, stale, subscriber down, a
  block size or hash seed that cannot match) — the approximate guess, which this scorer keeps
  exactly as `prefix-cache-scorer` does (it is one: it learns from Sluice's own dispatches).

With ``speculativeIndexing`` a dispatched prompt counts as held by its endpoint for
``speculativeTTL``, until the engine's events can say so (upstream's blind-spot fix). Every
dispatch compares the approximate guess with the engines' truth (`on_compare`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.kvevents.manager import SubscriberSettings
from sluice.datalayer.kvevents.stream import Mode, StreamSettings
from sluice.datalayer.kvevents.streams import KVEventStreams
from sluice.datalayer.registry import EndpointState
from sluice.requests.model import InferenceRequest
from sluice.scheduling.framework import PREFIX_MATCH, CycleState, PluginContext, Scorer
from sluice.scheduling.precise_hashing import BlockKeys
from sluice.scheduling.precise_index import PreciseIndex
from sluice.scheduling.precise_parameters import PreciseParameters
from sluice.scheduling.precise_tokens import token_ids
from sluice.scheduling.prefix_scorer import PrefixCacheScorer

DEFAULT_BLOCK_SIZE_TOKENS = 16  # upstream's and vLLM's default
MAX_PREFIX_BLOCKS = 8192  # 131,072 tokens at 16 a block (upstream's maxPrefixTokensToMatch)
_PENDING_MAX = 8192

# (prompt tokens, tokens the approximate index expected cached, tokens the engine holds)
CompareObserver = Callable[[int, int, int], None]


@dataclass(frozen=True, slots=True)
class DispatchPrediction:
    """What the scorer expected of a dispatched request's cache hit, in tokens."""

    approximate: int  # the approximate index's guess for the chosen endpoint
    precise: int  # what the engines' events say it holds (plus speculation)
    predicted: int  # the one its score used (by the endpoint's source)
    source: str  # precise | partial | fallback


@dataclass(slots=True)
class _Prediction:
    """One scoring of a request, kept until its dispatch."""

    keys: list[int]
    prompt_tokens: int
    precise: dict[str, int]  # endpoint -> leading blocks held (precise index + speculation)
    now: float


class PrecisePrefixCacheScorer(PrefixCacheScorer):
    type_name = "precise-prefix-cache-scorer"

    def __init__(
        self,
        name: str,
        *,
        keys: BlockKeys,
        subscribers: SubscriberSettings | None = None,
        stream_settings: StreamSettings | None = None,
        model_name: str = "",
        speculative: bool = False,
        speculative_ttl_s: float = 2.0,
        max_blocks: int = MAX_PREFIX_BLOCKS,
    ) -> None:
        # The approximate half: characters of 4 a token, learning from dispatches.
        super().__init__(name, block_size=keys.block_size * 4)
        self.keys = keys
        self.precise = PreciseIndex(keys)
        self.streams = KVEventStreams(self.precise, stream_settings)
        self.subscribers = subscribers or SubscriberSettings()
        self.model_name = model_name
        self.speculative = speculative
        self.speculative_ttl_s = speculative_ttl_s
        self.max_precise_blocks = max_blocks
        self.on_compare: CompareObserver | None = None
        self._predictions: dict[str, _Prediction] = {}
        # request id -> what was expected when it was dispatched (benchmarks, receipts)
        self.dispatched: dict[str, DispatchPrediction] = {}
        # endpoint -> key -> expiry, and the order they expire in
        self._speculated: dict[str, dict[int, float]] = {}
        self._expiries: deque[tuple[float, str, list[int]]] = deque()

    Parameters = PreciseParameters

    @classmethod
    def from_params(  # type: ignore[override]  # its own parameters, not prefix-cache-scorer's
        cls, name: str, params: PreciseParameters, ctx: PluginContext
    ) -> Scorer:
        tokens, events = params.token_processor_config, params.kv_events_config
        pods = events.pod_discovery_config
        block_size = tokens.block_size_tokens or tokens.block_size or DEFAULT_BLOCK_SIZE_TOKENS
        return cls(
            name,
            keys=BlockKeys(block_size, hash_seed=tokens.hash_seed, algorithm=tokens.hash_algorithm),
            subscribers=SubscriberSettings(
                topic_filter=events.topic_filter,
                socket_port=pods.socket_port,
                replay_socket_port=pods.replay_socket_port,
            ),
            model_name=params.indexer_config.tokenizers_pool_config.model_name,
            speculative=params.speculative_indexing,
            speculative_ttl_s=params.speculative_ttl or 2.0,
        )

    # -- where an endpoint's answer comes from ----------------------------------------------------

    def source_of(self, endpoint: str) -> tuple[Mode, str]:
        """``precise``, ``partial`` or ``fallback``, and why (for metrics and receipts)."""
        why = self.precise.unusable.get(endpoint)
        if why is not None:
            return "fallback", why
        return self.streams.mode(endpoint)

    # -- scoring ----------------------------------------------------------------------------------

    def request_keys(self, request: InferenceRequest) -> tuple[list[int], int]:
        """The prompt's block keys and its length in tokens."""
        ids = token_ids(request)
        lora = (
            request.target_model
            if self.model_name and request.target_model != self.model_name
            else None
        )
        keys = self.keys.request_keys(
            ids, lora=lora, cache_salt=request.cache_salt, max_blocks=self.max_precise_blocks
        )
        return keys, len(ids)

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        approximate = super().score(cycle, candidates)
        request = cycle.request
        keys, prompt_tokens = self.request_keys(request)
        precise = self._held_blocks(keys, cycle.now)
        self._remember_prediction(
            request.request_id, _Prediction(keys, prompt_tokens, precise, cycle.now)
        )
        if not keys:
            return approximate
        inv = 1.0 / len(keys)
        scores = []
        for state, approx in zip(candidates, approximate):
            mode, _ = self.source_of(state.endpoint.name)
            if mode == "fallback":
                scores.append(approx)
                continue
            exact = precise.get(state.endpoint.name, 0) * inv
            scores.append(exact if mode == "precise" else max(exact, approx))
        # Scorers after this one (prefill-cost) read the expected hit: give them ours.
        cycle.data[PREFIX_MATCH] = (
            {state.endpoint.name: score for state, score in zip(candidates, scores)},
            1.0,
        )
        return scores

    def _held_blocks(self, keys: list[int], now: float) -> dict[str, int]:
        names = self.precise.names
        held = {
            name: blocks
            for slot, blocks in self.precise.match(keys).items()
            if (name := names[slot]) is not None
        }
        if self._speculated:
            self._expire(now)
            for endpoint, entries in self._speculated.items():
                n = 0
                for key in keys:
                    if entries.get(key, 0.0) <= now:
                        break
                    n += 1
                if n > held.get(endpoint, 0):
                    held[endpoint] = n
        return held

    def _remember_prediction(self, request_id: str, prediction: _Prediction) -> None:
        self._predictions[request_id] = prediction
        if len(self._predictions) > _PENDING_MAX:
            del self._predictions[next(iter(self._predictions))]

    def cached_fraction(self, request: InferenceRequest, endpoint: Endpoint) -> float:
        approx = super().cached_fraction(request, endpoint)
        prediction = self._predictions.get(request.request_id)
        mode, _ = self.source_of(endpoint.name)
        if prediction is None or not prediction.keys or mode == "fallback":
            return approx
        exact = prediction.precise.get(endpoint.name, 0) / len(prediction.keys)
        return exact if mode == "precise" else max(exact, approx)

    def predicted_cached_tokens(self, request: InferenceRequest, endpoint: Endpoint) -> int:
        """What the engine should report as ``cached_tokens`` if `request` runs on `endpoint`
        now (read between scoring and dispatch): held leading blocks, less the last token the
        engine always recomputes."""
        prediction = self._predictions.get(request.request_id)
        if prediction is None:
            return 0
        return self._hit_tokens(prediction, prediction.precise.get(endpoint.name, 0))

    def _hit_tokens(self, prediction: _Prediction, blocks: int) -> int:
        size = self.keys.block_size
        return min(blocks, (prediction.prompt_tokens - 1) // size) * size

    # -- learning ---------------------------------------------------------------------------------

    def on_dispatch(
        self, cycle: CycleState | None, request: InferenceRequest, target: Endpoint
    ) -> None:
        approx_fraction = super().cached_fraction(request, target)
        super().on_dispatch(cycle, request, target)
        prediction = self._predictions.pop(request.request_id, None)
        if prediction is None:
            return
        mode, _ = self.source_of(target.name)
        approx_blocks = int(approx_fraction * len(prediction.keys) + 0.5)
        approximate = self._hit_tokens(prediction, approx_blocks)
        precise = self._hit_tokens(prediction, prediction.precise.get(target.name, 0))
        predicted = (
            precise
            if mode == "precise"
            else approximate
            if mode == "fallback"
            else max(precise, approximate)
        )
        self.dispatched[request.request_id] = DispatchPrediction(
            approximate, precise, predicted, mode
        )
        if len(self.dispatched) > _PENDING_MAX:
            del self.dispatched[next(iter(self.dispatched))]
        if mode != "fallback" and self.on_compare is not None:
            self.on_compare(prediction.prompt_tokens, approximate, precise)
        if self.speculative and prediction.keys:
            expiry = prediction.now + self.speculative_ttl_s
            entries = self._speculated.setdefault(target.name, {})
            for key in prediction.keys:
                entries[key] = expiry
            self._expiries.append((expiry, target.name, prediction.keys))

    def _expire(self, now: float) -> None:
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            expiry, endpoint, keys = expiries.popleft()
            entries = self._speculated.get(endpoint)
            if entries is None:
                continue
            for key in keys:
                if entries.get(key) == expiry:
                    del entries[key]
            if not entries:
                del self._speculated[endpoint]

    def prune(self, live_endpoints: set[str]) -> None:
        super().prune(live_endpoints)
        for endpoint in [e for e in self._speculated if e not in live_endpoints]:
            del self._speculated[endpoint]
