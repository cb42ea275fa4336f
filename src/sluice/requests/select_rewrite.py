"""Which model a request is sent to: InferenceModelRewrite selection (upstream semantics).

Precedence, as upstream's datastore applies it:

1. the `x-llm-d-model-name-rewrite` header (or `x-gateway-model-name-rewrite`), when present,
   forces the target;
2. otherwise a rule that matches the incoming model **exactly** beats a generic rule (a rule with
   no matches applies to every model);
3. among resources, the oldest `creationTimestamp` wins (ties: name); within a resource, the
   first matching rule in list order;
4. the target is a weighted random choice among the rule's `targets[].modelRewrite`
   (`weight` unset = 1; all weights zero = uniform).

The resources are `sluice.api` pydantic models; this module only relies on the attribute shapes
below (`*Like` protocols) so it stays importable and testable on its own. Callers pass the
rewrites of the request's pool only.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

EXACT = "Exact"
_NEVER = datetime.max.replace(tzinfo=UTC)  # resources without a timestamp sort last


class RandomLike(Protocol):
    def randrange(self, stop: int, /) -> int: ...


class ModelMatchLike(Protocol):
    @property
    def type(self) -> str | None: ...
    @property
    def value(self) -> str: ...


class MatchLike(Protocol):
    @property
    def model(self) -> ModelMatchLike | None: ...


class TargetLike(Protocol):
    @property
    def weight(self) -> int | None: ...
    @property
    def model_rewrite(self) -> str: ...


class RuleLike(Protocol):
    @property
    def matches(self) -> Sequence[MatchLike] | None: ...
    @property
    def targets(self) -> Sequence[TargetLike] | None: ...


class RewriteSpecLike(Protocol):
    @property
    def rules(self) -> Sequence[RuleLike] | None: ...


class MetadataLike(Protocol):
    @property
    def name(self) -> str | None: ...
    @property
    def creation_timestamp(self) -> datetime | str | None: ...


class ModelRewriteLike(Protocol):
    """The parts of an InferenceModelRewrite that selection reads."""

    @property
    def metadata(self) -> MetadataLike: ...
    @property
    def spec(self) -> RewriteSpecLike | None: ...


def resolve_target_model(
    incoming_model: str,
    *,
    header_rewrite: str | None,
    rewrites: Iterable[ModelRewriteLike],
    rng: RandomLike | None = None,
) -> str:
    """The model the forwarded body will carry: header, else a rewrite rule, else unchanged."""
    if header_rewrite:
        return header_rewrite
    chosen = choose_rewrite(incoming_model, rewrites, rng)
    return incoming_model if chosen is None else chosen


def choose_rewrite(
    incoming_model: str, rewrites: Iterable[ModelRewriteLike], rng: RandomLike | None = None
) -> str | None:
    """The rewritten model name for `incoming_model`, or None when no rule applies."""
    exact: RuleLike | None = None
    generic: RuleLike | None = None
    for resource in sorted(rewrites, key=_age_order):
        if resource.spec is None:  # the schema allows a rewrite without spec: no rules
            continue
        for rule in resource.spec.rules or ():
            if exact is None and _matches_exactly(rule, incoming_model):
                exact = rule
            elif generic is None and not rule.matches:
                generic = rule
        if exact is not None:
            break  # older exact rules already beat everything that follows
    chosen = exact or generic
    if chosen is None:
        return None
    return weighted_choice(chosen.targets or (), rng or random)


def weighted_choice(targets: Sequence[TargetLike], rng: RandomLike) -> str | None:
    """Upstream's `rand.Intn(sum(weights))` walk; uniform when every weight is zero."""
    if not targets:
        return None
    weights = [max(0, 1 if t.weight is None else t.weight) for t in targets]
    total = sum(weights)
    if total == 0:
        return targets[rng.randrange(len(targets))].model_rewrite
    point = rng.randrange(total)
    for target, weight in zip(targets, weights):
        if point < weight:
            return target.model_rewrite
        point -= weight
    raise AssertionError("unreachable: point < total")


def _matches_exactly(rule: RuleLike, model: str) -> bool:
    for match in rule.matches or ():
        spec = match.model
        if spec is not None and (spec.type or EXACT) == EXACT and spec.value == model:
            return True
    return False


def _age_order(resource: ModelRewriteLike) -> tuple[datetime, str]:
    return _as_datetime(resource.metadata.creation_timestamp), resource.metadata.name or ""


def _as_datetime(timestamp: datetime | str | None) -> datetime:
    if timestamp is None or timestamp == "":
        return _NEVER
    if isinstance(timestamp, str):
        try:
            timestamp = datetime.fromisoformat(timestamp)
        except ValueError:
            return _NEVER
    # Kubernetes timestamps are UTC; a naive one would not compare with aware ones.
    return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
