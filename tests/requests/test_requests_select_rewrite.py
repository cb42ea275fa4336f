"""InferenceModelRewrite selection: exact beats generic, oldest wins, weighted targets."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sluice.requests.select_rewrite import choose_rewrite, resolve_target_model, weighted_choice


@dataclass
class Meta:
    name: str
    creation_timestamp: datetime | str | None = None


@dataclass
class ModelMatch:
    value: str
    type: str | None = "Exact"


@dataclass
class Match:
    model: ModelMatch | None


@dataclass
class Target:
    model_rewrite: str
    weight: int | None = None


@dataclass
class Rule:
    targets: list[Target]
    matches: list[Match] | None = field(default_factory=list)


@dataclass
class Spec:
    rules: list[Rule] | None


@dataclass
class Rewrite:
    metadata: Meta
    spec: Spec


def rewrite(name: str, created: datetime | str | None, *rules: Rule) -> Rewrite:
    return Rewrite(Meta(name, created), Spec(list(rules)))


def exact(model: str, *targets: str) -> Rule:
    return Rule([Target(t) for t in targets], [Match(ModelMatch(model))])


def generic(*targets: str) -> Rule:
    return Rule([Target(t) for t in targets])


JAN = "2024-01-01T00:00:00Z"
FEB = "2024-02-01T00:00:00Z"
RNG = random.Random(7)


def test_no_resources_no_rewrite():
    assert choose_rewrite("m", [], RNG) is None


def test_a_rule_for_another_model_does_not_apply():
    assert choose_rewrite("m", [rewrite("r", JAN, exact("other", "x"))], RNG) is None


def test_an_exact_rule_beats_an_older_generic_rule():
    resources = [rewrite("old", JAN, generic("catch-all")), rewrite("new", FEB, exact("m", "x"))]

    assert choose_rewrite("m", resources, RNG) == "x"


def test_a_generic_rule_applies_to_any_model_without_an_exact_rule():
    resources = [rewrite("r", JAN, exact("other", "x"), generic("catch-all"))]

    assert choose_rewrite("m", resources, RNG) == "catch-all"


def test_the_oldest_resource_wins_whatever_the_input_order():
    older = rewrite("b", JAN, exact("m", "from-older"))
    newer = rewrite("a", FEB, exact("m", "from-newer"))

    assert choose_rewrite("m", [newer, older], RNG) == "from-older"
    assert choose_rewrite("m", [older, newer], RNG) == "from-older"


def test_equal_timestamps_fall_back_to_the_name():
    assert (
        choose_rewrite(
            "m", [rewrite("b", JAN, exact("m", "b")), rewrite("a", JAN, exact("m", "a"))], RNG
        )
        == "a"
    )


def test_datetime_and_string_timestamps_compare_and_missing_ones_sort_last():
    resources = [
        rewrite("none", None, exact("m", "none")),
        rewrite("dt", datetime(2024, 3, 1, tzinfo=UTC), exact("m", "dt")),
        rewrite("naive", datetime(2024, 2, 1), exact("m", "naive")),
        rewrite("str", "2024-04-01T00:00:00Z", exact("m", "str")),
    ]

    assert choose_rewrite("m", resources, RNG) == "naive"


def test_the_first_matching_rule_in_list_order_wins():
    resources = [rewrite("r", JAN, exact("m", "first"), exact("m", "second"))]

    assert choose_rewrite("m", resources, RNG) == "first"


def test_a_non_exact_match_type_is_not_an_exact_match_and_unset_type_means_exact():
    prefix_rule = Rule([Target("x")], [Match(ModelMatch("m", type="Prefix"))])
    unset_rule = Rule([Target("y")], [Match(ModelMatch("m", type=None))])

    assert choose_rewrite("m", [rewrite("r", JAN, prefix_rule)], RNG) is None
    assert choose_rewrite("m", [rewrite("r", JAN, unset_rule)], RNG) == "y"


def test_targets_are_drawn_by_weight():
    targets = [Target("a", 1), Target("b", 3), Target("c", 0)]
    rng = random.Random(1)

    drawn = Counter(weighted_choice(targets, rng) for _ in range(4000))

    assert drawn["c"] == 0
    assert 0.70 < drawn["b"] / 4000 < 0.80


def test_an_unset_weight_counts_as_one_and_all_zero_weights_are_uniform():
    rng = random.Random(2)
    unset = Counter(weighted_choice([Target("a"), Target("b", 1)], rng) for _ in range(2000))
    zeros = Counter(weighted_choice([Target("a", 0), Target("b", 0)], rng) for _ in range(2000))

    assert 0.4 < unset["a"] / 2000 < 0.6
    assert 0.4 < zeros["a"] / 2000 < 0.6


def test_the_header_forces_the_target_over_resources():
    resources = [rewrite("r", JAN, exact("m", "x"))]

    assert resolve_target_model("m", header_rewrite="forced", rewrites=resources) == "forced"
    assert resolve_target_model("m", header_rewrite=None, rewrites=resources) == "x"
    assert resolve_target_model("m", header_rewrite=None, rewrites=[]) == "m"
