"""SSE parser: events must not depend on where TCP cut the bytes."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from planner.measure.sse import SSEEvent, SSEParser, parse_all


def _chunk(i, text):
    return {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": None}]}


# A vLLM-like stream with multi-byte UTF-8 (2, 3 and 4 bytes), a comment, CRLF and LF line ends.
TEXTS = [" héllo", " ✓", " 😀", " plain"]
STREAM = (
    b": keep-alive\n\n"
    + b"".join(b"data: " + json.dumps(_chunk(i, t), ensure_ascii=False).encode() + b"\r\n\r\n" for i, t in enumerate(TEXTS))
    + b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}}\n\n'
    + b"data: [DONE]\n\n"
)


def _feed_all(chunks):
    p = SSEParser()
    events = []
    for c in chunks:
        events += p.feed(c)
    return events + p.close(), p


def test_whole_stream_known_events():
    events = parse_all(STREAM)
    assert len(events) == 6
    assert [e.json()["choices"][0]["text"] for e in events[:4]] == TEXTS
    assert events[4].json()["usage"]["completion_tokens"] == 4
    assert events[5].is_done and events[5].json() is None
    assert all(e.error is None for e in events)


def test_byte_by_byte_equals_whole():
    events, p = _feed_all([bytes([b]) for b in STREAM])
    assert events == parse_all(STREAM)
    assert p.comments == 1 and not p.truncated


def test_every_two_way_split_equals_whole():
    whole = parse_all(STREAM)
    for i in range(len(STREAM) + 1):
        events, _ = _feed_all([STREAM[:i], STREAM[i:]])
        assert events == whole, i


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_equals_whole(cuts):
    cuts = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0] + cuts, cuts + [len(STREAM)])]
    events, _ = _feed_all(pieces)
    assert events == parse_all(STREAM)


def test_crlf_split_between_cr_and_lf_is_one_line_end():
    # If the LF after a chunk-final CR were a second line end, "a" and "b" would be two events.
    events, _ = _feed_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert [e.data for e in events] == ["a\nb"]


def test_cr_only_line_ends_and_multiline_data():
    events = parse_all(b"data: one\rdata: two\r\rdata:three\r\r")
    assert [e.data for e in events] == ["one\ntwo", "three"]


def test_field_rules():
    events = parse_all(b"id: 7\nretry: 250\nevent: update\ndata:  two spaces\n\ndata\n\n: only a comment\n\n")
    assert events[0] == SSEEvent(data=" two spaces", event="update", id="7", retry_ms=250)
    assert events[1].data == "" and events[1].event == "message" and events[1].id == "7"
    assert len(events) == 2  # a comment-only block dispatches nothing


def test_bom_split_across_chunks_is_dropped():
    bom_stream = "\ufeffdata: x\n\n".encode()
    events, _ = _feed_all([bom_stream[:1], bom_stream[1:2], bom_stream[2:]])
    assert [e.data for e in events] == ["x"]


def test_error_event_types():
    named = parse_all(b'event: error\ndata: {"message": "engine died", "code": 500}\n\n')[0]
    assert named.error == "engine died (code 500)"
    vllm = parse_all(b'data: {"error": {"message": "out of KV", "type": "InternalServerError", "code": 500}}\n\n')[0]
    assert vllm.error == "out of KV (code 500)"
    old = parse_all(b'data: {"object": "error", "message": "prompt too long", "code": 400}\n\n')[0]
    assert old.error == "prompt too long (code 400)"
    plain = parse_all(b"event: error\ndata: overloaded\n\n")[0]
    assert plain.error == "overloaded"


def test_json_error_body_instead_of_frames():
    # A server that answers with a plain JSON body (no "data:" prefix, no blank line).
    body = b'{"detail": "Not Found"}'
    events, p = _feed_all([body[:5], body[5:]])
    assert len(events) == 1 and events[0].event == "raw"
    assert events[0].error == "Not Found"
    # Pretty-printed over several lines it is still one raw event.
    pretty = json.dumps({"error": {"message": "bad model", "code": 404}}, indent=2).encode()
    (ev,) = parse_all(pretty)
    assert ev.error == "bad model (code 404)"


def test_error_mid_stream_then_done():
    stream = STREAM[: STREAM.index(b"data: {\"choices\": []")] + b'data: {"error": {"message": "cut", "code": 500}}\n\ndata: [DONE]\n\n'
    events = parse_all(stream)
    assert [e.error for e in events].count("cut (code 500)") == 1
    assert events[-1].is_done


def test_stream_cut_mid_event_is_truncated():
    cut = STREAM[: STREAM.index(b"[DONE]") - 30]
    events, p = _feed_all([cut])
    assert p.truncated
    assert events[-1].json() is None  # half a JSON frame: seen, but not usable
    assert not any(e.is_done for e in events)


def test_partial_utf8_at_end_is_replaced_not_fatal():
    events, p = _feed_all(["data: é".encode()[:-1]])
    assert events[0].data == "\ufffd" and p.truncated
