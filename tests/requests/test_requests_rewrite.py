"""rewrite_model / set_top_level_field: splice one top-level value, keep every other byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sluice.requests.rewrite import (
    _spans_by_tokens,
    member_value_spans,
    rewrite_model,
    set_top_level_field,
)


def test_only_the_model_value_changes():
    body = b'{"seed": 9223372036854775807, "model": "a",\n  "x": 1.0000000000000000001}'

    assert (
        rewrite_model(body, "b")
        == b'{"seed": 9223372036854775807, "model": "b",\n  "x": 1.0000000000000000001}'
    )


def test_whitespace_around_the_value_and_the_colon_is_kept():
    body = b'{ "model"  :\t "a"  , "p": "q" }'

    assert rewrite_model(body, "bb") == b'{ "model"  :\t "bb"  , "p": "q" }'


def test_the_model_as_the_last_member_and_surrounding_whitespace():
    assert rewrite_model(b'\n {"p":1,"model":"a"}\n', "b") == b'\n {"p":1,"model":"b"}\n'


def test_nested_model_keys_and_look_alike_strings_are_untouched():
    body = (
        b'{"messages": [{"model": "inner", "content": "\\"model\\": \\"x\\""}],'
        b' "meta": {"model": {"model": "deep"}}, "model": "top"}'
    )

    rewritten = rewrite_model(body, "new")

    assert json.loads(rewritten)["model"] == "new"
    assert rewritten == body.replace(b'"model": "top"', b'"model": "new"')


def test_a_key_spelled_with_escapes_is_still_the_model_key():
    assert rewrite_model(b'{"mod\\u0065l": "a"}', "b") == b'{"mod\\u0065l": "b"}'


def test_every_duplicate_top_level_model_is_replaced_so_all_parsers_agree():
    assert rewrite_model(b'{"model": "a", "model": "c"}', "b") == b'{"model": "b", "model": "b"}'


def test_a_non_string_model_value_is_replaced_whole():
    assert rewrite_model(b'{"model": {"a": [1, "}"]}, "z": 0}', "b") == b'{"model": "b", "z": 0}'


def test_the_new_name_is_json_escaped():
    rewritten = rewrite_model(b'{"model": "a"}', 'we"ird\\name\n')

    assert json.loads(rewritten) == {"model": 'we"ird\\name\n'}


def test_a_body_without_a_model_is_returned_as_is():
    body = b'{"prompt": "p"}'

    assert rewrite_model(body, "b") is body


def test_set_top_level_field_replaces_an_existing_member():
    assert (
        set_top_level_field(b'{"priority": 1, "model": "m"}', "priority", b"-5")
        == b'{"priority": -5, "model": "m"}'
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model": "m"}', b'{"priority":3,"model": "m"}'),
        (b"{}", b'{"priority":3}'),
        (b"  { \n }", b'  {"priority":3 \n }'),
    ],
)
def test_set_top_level_field_inserts_after_the_opening_brace(body: bytes, expected: bytes):
    rewritten = set_top_level_field(body, "priority", b"3")

    assert rewritten == expected
    assert json.loads(rewritten)["priority"] == 3


def test_set_top_level_field_rejects_a_malformed_value():
    with pytest.raises(ValueError, match="not a JSON value"):
        set_top_level_field(b"{}", "priority", b"3,")


@pytest.mark.parametrize("body", [b"[1]", b"", b'"model"', b'{"model": "a"'])
def test_bodies_that_are_not_a_complete_object_are_refused(body: bytes):
    with pytest.raises(ValueError):
        list(member_value_spans(body, "model"))


def test_integers_beyond_pythons_digit_limit_fall_back_to_the_tokenizer():
    huge = b"9" * 5000
    body = b'{"seed": ' + huge + b', "model": "a", "n": -' + huge + b"}"

    assert rewrite_model(body, "b") == body.replace(b'"a"', b'"b"')


def test_very_deep_nesting_falls_back_to_the_tokenizer():
    deep = b"[" * 50_000 + b"]" * 50_000
    body = b'{"x": ' + deep + b', "model": "a"}'

    assert rewrite_model(body, "b") == b'{"x": ' + deep + b', "model": "b"}'


def test_non_ascii_text_before_the_model_keeps_byte_offsets_right():
    body = '{"prompt": "日本語 ✓", "model": "a", "z": "é"}'.encode()

    assert rewrite_model(body, "b") == '{"prompt": "日本語 ✓", "model": "b", "z": "é"}'.encode()


# --- property: random JSON objects --------------------------------------------------------------

OLD = 'OLD-MODEL-é-"quoted"-\\-\u2028'
NEW = 'new/模型-"x"'

_scalars = (
    st.none()
    | st.booleans()
    | st.text(max_size=12)
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=16,
)
_styles = st.fixed_dictionaries(
    {
        "indent": st.sampled_from([None, 0, 2]),
        "separators": st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
        "ensure_ascii": st.booleans(),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    members=st.dictionaries(st.text(max_size=6), _values, max_size=6),
    position=st.integers(min_value=0, max_value=6),
    style=_styles,
    padding=st.sampled_from(["", " ", "\n\t "]),
)
def test_rewriting_random_objects_changes_exactly_the_model_bytes(
    members: dict[str, Any], position: int, style: dict[str, Any], padding: str
):
    items = [(k, v) for k, v in members.items() if k != "model"]
    items.insert(min(position, len(items)), ("model", OLD))
    original = dict(items)
    body = (padding + json.dumps(original, **style) + padding).encode()
    old_bytes = json.dumps(OLD, ensure_ascii=style["ensure_ascii"]).encode()
    assume(body.count(old_bytes) == 1)  # the marker must not also occur inside another value

    rewritten = rewrite_model(body, NEW)

    assert json.loads(rewritten) == {**original, "model": NEW}
    assert member_value_spans(body, "model") == list(_spans_by_tokens(body, "model"))
    start = body.index(old_bytes)
    prefix, suffix = body[:start], body[start + len(old_bytes) :]
    assert rewritten.startswith(prefix) and rewritten.endswith(suffix)
    assert json.loads(rewritten[len(prefix) : len(rewritten) - len(suffix)]) == NEW
