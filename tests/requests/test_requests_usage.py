"""UsageParser: token usage from SSE streams and JSON bodies, chunk by chunk."""

from __future__ import annotations

import json
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.requests.model import Usage
from sluice.requests.usage import UsageParser, usage_from_json


def sse(*events: object, newline: str = "\n") -> bytes:
    lines = [f"data: {json.dumps(e) if not isinstance(e, str) else e}" for e in events]
    return "".join(line + newline + newline for line in lines).encode()


def delta(text: str) -> dict:
    return {
        "object": "chat.completion.chunk",
        "usage": None,
        "choices": [{"index": 0, "delta": {"content": text}}],
    }


USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 3,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 8},
}
STREAM = sse(delta("Hel"), delta("lo"), delta("!"), {"choices": [], "usage": USAGE}, "[DONE]")


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(min(c, len(stream)) for c in cuts), len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


def parse_chunks(chunks: list[bytes], **options: object) -> tuple[Usage | None, bool]:
    parser = UsageParser(streaming=True, **options)  # type: ignore[arg-type]
    for chunk in chunks:
        parser.feed(chunk)
    return parser.finish(), parser.done


# --- SSE ----------------------------------------------------------------------------------------


def test_a_stream_with_usage_reports_it_with_cached_tokens():
    usage, done = parse_chunks([STREAM])

    assert usage == Usage(prompt_tokens=12, completion_tokens=3, cached_tokens=8)
    assert done


def test_usage_is_available_before_the_end_of_the_body():
    parser = UsageParser(streaming=True)
    parser.feed(STREAM)

    assert parser.usage() == Usage(prompt_tokens=12, completion_tokens=3, cached_tokens=8)


def test_upstreams_misspelled_details_field_is_accepted():
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "prompt_token_details": {"cached_tokens": 4},
    }

    assert parse_chunks([sse({"usage": usage})])[0] == Usage(5, 1, 4)


def test_crlf_line_endings_work():
    assert parse_chunks([sse({"usage": USAGE}, "[DONE]", newline="\r\n")]) == (
        Usage(12, 3, 8),
        True,
    )


def test_a_usage_line_split_across_chunks_is_reassembled():
    middle = STREAM.index(b'"completion_tokens"')

    assert parse_chunks([STREAM[:middle], STREAM[middle:]])[0] == Usage(12, 3, 8)


def test_a_final_line_without_a_newline_is_read_at_the_end():
    assert parse_chunks([b'data: {"usage": {"prompt_tokens": 2, "completion_tokens": 1}}'])[
        0
    ] == Usage(2, 1)


def test_null_usage_on_every_chunk_is_not_decoded_and_not_mistaken_for_usage():
    usage, _ = parse_chunks([sse(delta("abcd"), delta("efgh"))])

    assert usage is not None and usage.estimated


def test_without_usage_completion_tokens_are_estimated_from_streamed_text():
    usage, _ = parse_chunks(
        [sse(delta("one "), delta("two three four "), delta(""), "[DONE]")],
        prompt_tokens_estimate=40,
    )

    # Two events carried text (19 characters → 5 tokens at 4 chars/token).
    assert usage == Usage(prompt_tokens=40, completion_tokens=5, estimated=True)


def test_each_text_event_counts_at_least_one_token():
    usage, _ = parse_chunks([sse(*(delta("模") for _ in range(6)))])

    assert usage is not None and usage.completion_tokens == 6


def test_text_that_merely_looks_like_usage_or_done_is_ignored():
    stream = sse(delta('"usage": {"prompt_tokens": 99}'), delta("data: [DONE]"))

    usage, done = parse_chunks([stream])

    assert usage is not None and usage.estimated
    assert not done


def test_responses_api_completed_event_carries_usage_under_response():
    completed = {
        "type": "response.completed",
        "response": {
            "id": "r",
            "usage": {
                "input_tokens": 30,
                "output_tokens": 7,
                "input_tokens_details": {"cached_tokens": 16},
            },
        },
    }
    stream = (
        b"event: response.output_text.delta\n"
        + sse({"type": "response.output_text.delta", "delta": "Hi"})
        + b"event: response.completed\n"
        + sse(completed)
    )

    assert parse_chunks([stream])[0] == Usage(30, 7, 16)


def test_an_over_long_line_is_dropped_and_parsing_resumes_after_it():
    huge = sse(delta("x" * 5000))

    usage, _ = parse_chunks([huge[:3000], huge[3000:], sse({"usage": USAGE})], max_line_bytes=1024)

    assert usage == Usage(12, 3, 8)


@settings(max_examples=200, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_any_chunking_of_a_stream_yields_the_same_usage(cuts: list[int], newline: str):
    stream = sse(
        delta("Hel"),
        delta("lo wor"),
        delta("ld"),
        {"choices": [], "usage": USAGE},
        "[DONE]",
        newline=newline,
    )
    assert parse_chunks(split_at(stream, cuts)) == parse_chunks([stream]) == (Usage(12, 3, 8), True)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_chunking_yields_the_same_estimate_when_there_is_no_usage(cuts: list[int]):
    stream = sse(*(delta(word) for word in ["The ", "quick ", "brown ", "fox ", "jumps"]))

    chunked = parse_chunks(split_at(stream, cuts))

    assert chunked == parse_chunks([stream])
    assert chunked[0] is not None and chunked[0].estimated


# --- JSON ---------------------------------------------------------------------------------------


def test_a_json_body_is_parsed_at_the_end():
    body = json.dumps(
        {"id": "x", "choices": [{"message": {"content": "hi"}}], "usage": USAGE}
    ).encode()
    parser = UsageParser(streaming=False)
    for i in range(0, len(body), 7):
        parser.feed(body[i : i + 7])

    assert parser.usage() is None  # nothing is decoded before the end
    assert parser.finish() == Usage(12, 3, 8)


def test_a_json_body_without_usage_is_estimated_from_its_choices():
    body = json.dumps({"choices": [{"message": {"content": "x" * 40}}, {"text": "y" * 8}]}).encode()
    parser = UsageParser(streaming=False, prompt_tokens_estimate=9)
    parser.feed(body)

    assert parser.finish() == Usage(prompt_tokens=9, completion_tokens=12, estimated=True)


def test_a_json_body_over_the_buffer_cap_gives_up_on_usage():
    parser = UsageParser(streaming=False, max_buffer_bytes=64)
    parser.feed(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}, "pad": "')
    parser.feed(b"x" * 100 + b'"}')

    assert parser.finish() is None


def test_a_body_that_is_not_json_has_no_usage():
    parser = UsageParser(streaming=False)
    parser.feed(b"<html>502 Bad Gateway</html>")

    assert parser.finish() is None


def test_the_content_type_selects_the_mode():
    assert UsageParser.for_content_type("text/event-stream; charset=utf-8").streaming
    assert not UsageParser.for_content_type("application/json").streaming
    assert not UsageParser.for_content_type(None).streaming


def test_usage_objects_without_counts_are_not_usage():
    assert usage_from_json({}) is None
    assert usage_from_json(None) is None
    assert usage_from_json({"input_tokens": 3, "output_tokens": 4}) == Usage(3, 4)
