"""`precise-prefix-cache-scorer`'s parameters, under upstream's names and nesting (an example
heads `precise_scorer`). What Sluice cannot honour (another engine's events, the global socket
mode) is refused with the fix; what the pool already decides (`podLabelSelector`,
`podNamespace`) is accepted and unread."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from sluice.api.scalars import Bool, Seconds, Text, boolean, field_type, integer, text
from sluice.scheduling.parameters import PluginParameters, at_least
from sluice.scheduling.precise_hashing import HASH_ALGORITHMS


def _block_size(value: Any) -> int:
    size = integer(value)
    if size < 0:
        raise ValueError("must be a positive number of tokens")
    return size


def _hash_algorithm(value: Any) -> str:
    algorithm = text(value)
    if algorithm not in HASH_ALGORITHMS:
        raise ValueError(
            f"{algorithm!r} is not one of vLLM's --prefix-caching-hash-algo values "
            f"({', '.join(HASH_ALGORITHMS)}); without hashSeed the keys are Sluice's own"
        )
    return algorithm


def _engine(value: Any) -> str:
    engine = text(value)
    if engine != "vllm":
        raise ValueError(f"{engine!r}: only vllm's events are understood")
    return engine


def _discover_pods(value: Any) -> bool:
    if not boolean(value):
        raise ValueError(
            "Sluice subscribes to every endpoint of the pool (per-pod discovery); the global "
            "socket mode (zmqEndpoint) is not supported: remove discoverPods: false"
        )
    return True


def _no_global_socket(value: Any) -> str:
    if text(value):
        raise ValueError("the global socket mode is not supported; use podDiscoveryConfig")
    return ""


def _port(low: int) -> Any:
    def parse(value: Any) -> int:
        port = integer(value)
        if not low <= port < 65536:
            raise ValueError(f"{port} is not a TCP port")
        return port

    return field_type(parse)


class TokenProcessorConfig(PluginParameters):
    block_size_tokens: Annotated[int, field_type(_block_size)] = 0  # 0: vLLM's 16
    block_size: Annotated[int, field_type(_block_size)] = 0  # older name
    hash_seed: Text = ""
    hash_algorithm: Annotated[str, field_type(_hash_algorithm)] = "sha256"


class PodDiscoveryConfig(PluginParameters):
    socket_port: Annotated[int, _port(1)] = 5557
    replay_socket_port: Annotated[int, _port(0)] = 0  # 0: no replay socket
    pod_label_selector: Text = ""  # the pool's selector already chose the endpoints
    pod_namespace: Text = ""


class KvEventsConfig(PluginParameters):
    topic_filter: Text = ""
    concurrency: Annotated[int, at_least(1)] = 4
    engine_type: Annotated[str, field_type(_engine)] = "vllm"
    discover_pods: Annotated[bool, field_type(_discover_pods)] = True
    zmq_endpoint: Annotated[str, field_type(_no_global_socket)] = ""
    pod_discovery_config: PodDiscoveryConfig = PodDiscoveryConfig()


class TokenizersPoolConfig(PluginParameters):
    model_name: Text = ""


class IndexerConfig(PluginParameters):
    tokenizers_pool_config: TokenizersPoolConfig = TokenizersPoolConfig()


class PreciseParameters(PluginParameters):
    token_processor_config: TokenProcessorConfig = TokenProcessorConfig()
    kv_events_config: KvEventsConfig = KvEventsConfig()
    indexer_config: IndexerConfig = IndexerConfig()
    speculative_indexing: Bool = False
    speculative_ttl: Seconds = Field(2.0, alias="speculativeTTL")  # 0: the default
