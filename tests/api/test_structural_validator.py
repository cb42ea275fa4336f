"""The test-side validator is itself checked on hand-picked cases, so the agreement test cannot
pass because both sides are wrong in the same, trivial way."""

from __future__ import annotations

from .manifests import objective, pool
from .official import official_schema
from .structural import admit, go_regex


def test_go_dollar_does_not_match_before_a_final_newline() -> None:
    assert go_regex("^[a-z]+$").search("abc")
    assert not go_regex("^[a-z]+$").search("abc\n")
    assert go_regex(r"^[$&]+$").search("$&")  # `$` inside a class is a literal


def test_a_valid_pool_is_admitted_with_defaults() -> None:
    stored, problems = admit(official_schema("InferencePool"), pool())
    assert problems == []
    assert stored["spec"]["endpointPickerRef"]["failureMode"] == "FailClose"


def test_it_finds_a_bound_a_required_field_and_a_cel_rule() -> None:
    doc = pool()
    doc["spec"]["targetPorts"] = [{"number": 0}]
    del doc["spec"]["selector"]
    del doc["spec"]["endpointPickerRef"]["port"]
    _, problems = admit(official_schema("InferencePool"), doc)
    assert {path for path, _ in problems} == {
        "spec.targetPorts[0].number",
        "spec.selector",
        "spec.endpointPickerRef",
    }


def test_it_defaults_conditions_only_inside_an_existing_status() -> None:
    schema = official_schema("InferenceObjective")
    stored, _ = admit(schema, objective())
    assert "status" not in stored
    stored, _ = admit(schema, {**objective(), "status": {}})
    assert stored["status"]["conditions"][0]["type"] == "Ready"


def test_it_prunes_unknown_fields() -> None:
    doc = objective()
    doc["spec"]["unknown"] = 1
    stored, problems = admit(official_schema("InferenceObjective"), doc)
    assert problems == [] and "unknown" not in stored["spec"]
