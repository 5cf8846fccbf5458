"""The text/event-stream decoder: WHATWG parsing rules, under every split of the byte stream."""
import pytest
from hypothesis import given, settings, strategies as st

from finops.workers.formats.sse import MAX_EVENT_BYTES, SSEDecoder, SSEError


def decode(*chunks):
    d = SSEDecoder()
    out = []
    for c in chunks:
        out += d.feed(c)
    return out


def test_data_and_event_fields():
    assert decode(b"event: message_start\ndata: {\"a\":1}\n\n") == [("message_start", '{"a":1}')]
    assert decode(b"data: x\n\n") == [(None, "x")]


def test_multi_line_data_is_joined_with_newlines():
    assert decode(b"data: a\ndata: b\ndata:c\n\n") == [(None, "a\nb\nc")]


def test_only_one_leading_space_is_stripped():
    assert decode(b"data:  two\n\n") == [(None, " two")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(eol):
    raw = b"event: e" + eol + b"data: 1" + eol + eol + b"data: 2" + eol + eol
    assert decode(raw) == [("e", "1"), (None, "2")]


def test_comments_id_retry_and_unknown_fields_are_ignored():
    raw = b": keep-alive\nid: 7\nretry: 100\nfoo: bar\ndata: x\n\n"
    assert decode(raw) == [(None, "x")]


def test_event_without_data_is_dropped_and_event_name_resets():
    assert decode(b"event: ping\n\ndata: x\n\n") == [(None, "x")]


def test_unfinished_event_at_end_is_not_dispatched():
    assert decode(b"data: [DONE]\n\ndata: partial") == [(None, "[DONE]")]


def test_bom_is_skipped_even_when_split():
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [(None, "x")]


def test_crlf_split_between_chunks_is_one_line_end():
    assert decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == [(None, "a"), (None, "b")]


def test_not_utf8_is_an_error():
    with pytest.raises(SSEError):
        decode(b"data: \xff\xfe\n\n")


def test_a_line_beyond_the_limit_is_an_error():
    d = SSEDecoder()
    with pytest.raises(SSEError):
        d.feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1))


def test_html_garbage_yields_no_events():
    assert decode(b"<html><body>502 Bad Gateway</body></html>\n") == []


events_st = st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["message_start", "content_block_delta", "e"])),
                               st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                                       min_size=0, max_size=40)),
                     max_size=12)


@settings(max_examples=200, deadline=None)
@given(events=events_st, eol=st.sampled_from(["\n", "\r\n", "\r"]), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_any_split_gives_the_same_events(events, eol, cuts):
    raw = "".join((f"event: {e}{eol}" if e else "") + f"data: {d}{eol}{eol}" for e, d in events).encode()
    points = sorted({c % (len(raw) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in points:
        chunks.append(raw[prev:p])
        prev = p
    chunks.append(raw[prev:])
    assert decode(*chunks) == [(e, d) for e, d in events]
