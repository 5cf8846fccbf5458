"""Unit tests for finops.shared.envelope (msgpack envelopes between frontends and workers).

Fixtures for the refusal cases are packed with msgpack directly, not with `envelope.encode`,
so they can hold what our encoder would never write (another version, a bad kind, a list).
"""
from __future__ import annotations

import msgpack
import pytest

from finops.shared import envelope as env
from finops.shared.envelope import KINDS, VERSION, EnvelopeError, SequenceChecker, decode, encode

RAW_BODY = b'\xff\xfe{"messages":[]}\x00'  # not valid UTF-8: must survive as bytes
JSON_BODY = b'{"contentBlockIndex":0}'     # valid UTF-8: must *still* come back as bytes

BUILDERS = {
    "request": (
        lambda: env.request("r-1", "ConverseStream", "anthropic.claude-3", RAW_BODY,
                            {"content-type": "application/json", "x-amz-date": "20250101T000000Z"},
                            "tcp://10.0.0.1:5555", 16, 30.5, "/bedrock/model/anthropic.claude-3/converse-stream"),
        {"k": "request", "id": "r-1", "op": "ConverseStream", "model": "anthropic.claude-3",
         "body": RAW_BODY, "hdr": {"content-type": "application/json",
                                    "x-amz-date": "20250101T000000Z"},
         "reply": "tcp://10.0.0.1:5555", "window": 16, "deadline": 30.5,
         "path": "/bedrock/model/anthropic.claude-3/converse-stream"}),
    "head": (
        lambda: env.head("r-1", 200, [["content-type", "application/vnd.amazon.eventstream"]], True),
        {"k": "head", "id": "r-1", "n": 0, "status": 200,
         "hdr": [["content-type", "application/vnd.amazon.eventstream"]], "stream": True}),
    "head-not-streaming": (
        lambda: env.head("r-2", 429, [], False),
        {"k": "head", "id": "r-2", "n": 0, "status": 429, "hdr": [], "stream": False}),
    "body": (
        lambda: env.body("r-1", 1, RAW_BODY),
        {"k": "body", "id": "r-1", "n": 1, "data": RAW_BODY}),
    "chunk": (
        lambda: env.chunk("r-1", 7, [("contentBlockDelta", JSON_BODY), ("contentBlockStop", b"{}")]),
        {"k": "chunk", "id": "r-1", "n": 7, "ev": [["contentBlockDelta", JSON_BODY], ["contentBlockStop", b"{}"]]}),
    "end": (
        lambda: env.end("r-1", 8, {"inputTokens": 3, "outputTokens": 5}, {"latencyMs": 12}),
        {"k": "end", "id": "r-1", "n": 8, "usage": {"inputTokens": 3, "outputTokens": 5},
         "meta": {"latencyMs": 12}}),
    "end-defaults": (
        lambda: env.end("r-1", 2),
        {"k": "end", "id": "r-1", "n": 2, "usage": {}, "meta": {}}),
    "error": (
        lambda: env.error("r-1", 3, {"code": "ThrottlingException", "status": 429, "message": "slow"}),
        {"k": "error", "id": "r-1", "n": 3,
         "err": {"code": "ThrottlingException", "status": 429, "message": "slow"}}),
    "body-with-outcome": (
        lambda: env.body("r-1", 1, RAW_BODY, row=b"\x93row", settle=["r-1", "vk-1", "prod", 0.25, 40]),
        {"k": "body", "id": "r-1", "n": 1, "data": RAW_BODY, "row": b"\x93row",
         "settle": ["r-1", "vk-1", "prod", 0.25, 40]}),
    "end-with-row": (
        lambda: env.end("r-1", 9, {"in": 1}, row=b"row"),
        {"k": "end", "id": "r-1", "n": 9, "usage": {"in": 1}, "meta": {}, "row": b"row"}),
    "error-with-row": (
        lambda: env.error("r-1", 1, {"code": "X"}, row=b"row"),
        {"k": "error", "id": "r-1", "n": 1, "err": {"code": "X"}, "row": b"row"}),
    "log": (
        lambda: env.log("r-1", 4, row=b"row", settle=["r-1", "", "", 0.0, 0]),
        {"k": "log", "id": "r-1", "n": 4, "row": b"row", "settle": ["r-1", "", "", 0.0, 0]}),
    "credit": (
        lambda: env.credit("r-1", 32),
        {"k": "credit", "id": "r-1", "grant": 32}),
    "cancel": (
        lambda: env.cancel("r-1"),
        {"k": "cancel", "id": "r-1"}),
    "cancel-timed-out": (
        lambda: env.cancel("r-1", {"status": 408, "error": "ModelTimeoutException"}),
        {"k": "cancel", "id": "r-1", "why": {"status": 408, "error": "ModelTimeoutException"}}),
    "ping": (
        lambda: env.ping("tcp://10.0.0.1:5556", 1700000000.25),
        {"k": "ping", "id": "", "reply": "tcp://10.0.0.1:5556", "t": 1700000000.25}),
    "pong": (
        lambda: env.pong("w-3", 1700000000.25, 4),
        {"k": "pong", "id": "", "wid": "w-3", "t": 1700000000.25, "inflight": 4}),
}


@pytest.mark.parametrize("build, expected", list(BUILDERS.values()), ids=list(BUILDERS))
def test_builder_round_trip(build, expected):
    data = build()
    assert isinstance(data, bytes)
    assert decode(data) == {"v": VERSION, **expected}


def test_builders_cover_every_kind():
    assert {decode(build())["k"] for build, _ in BUILDERS.values()} == KINDS


def test_bytes_fields_stay_bytes_and_strings_stay_strings():
    r = decode(env.request("r", "InvokeModel", "m", JSON_BODY, {}, "ep", 1, 1.0))
    assert type(r["body"]) is bytes and r["body"] == JSON_BODY
    assert type(r["op"]) is str and type(r["id"]) is str
    c = decode(env.chunk("r", 1, [("chunk", b"")]))
    (et, data), = c["ev"]
    assert type(data) is bytes and data == b""
    assert type(et) is str
    b = decode(env.body("r", 1, bytearray(b"\x00\x01")))
    assert type(b["data"]) is bytes and b["data"] == b"\x00\x01"


def test_header_pairs_come_back_as_lists():
    h = decode(env.head("r", 200, [("a", "1"), ("a", "2")], False))
    assert h["hdr"] == [["a", "1"], ["a", "2"]]  # repeated names keep their order


def test_encode_fixes_version_kind_and_id():
    # a caller cannot forge the header fields through **fields
    d = decode(encode(env.PING, "x", v=99, reply="r", t=0.0))
    assert d["v"] == VERSION and d["k"] == "ping" and d["id"] == "x"
    assert decode(encode(env.CANCEL)) == {"v": VERSION, "k": "cancel", "id": ""}


def test_unicode_survives():
    d = decode(env.chunk("r\u00e9", 1, [("\u2603", "\U0001f600".encode())]))
    assert d["id"] == "r\u00e9" and d["ev"][0][0] == "\u2603" and d["ev"][0][1].decode() == "\U0001f600"


# --- refusals -------------------------------------------------------------------------------

def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


REFUSED = {
    # id: (bytes, regex the message must match)
    "version-2": (_pack({"v": 2, "k": "ping", "id": ""}), r"envelope version 2, this build speaks 1"),
    "version-0": (_pack({"v": 0, "k": "ping", "id": ""}), r"envelope version 0"),
    "version-missing": (_pack({"k": "ping", "id": ""}), r"envelope version None"),
    "version-as-string": (_pack({"v": "1", "k": "ping", "id": ""}), r"envelope version '1'"),
    "kind-unknown": (_pack({"v": 1, "k": "bogus", "id": ""}), r"unknown envelope kind 'bogus'"),
    "kind-missing": (_pack({"v": 1, "id": ""}), r"unknown envelope kind None"),
    "kind-wrong-case": (_pack({"v": 1, "k": "PING", "id": ""}), r"unknown envelope kind 'PING'"),
    "kind-as-bytes": (_pack({"v": 1, "k": b"ping", "id": ""}), r"unknown envelope kind b'ping'"),
    "kind-as-list": (_pack({"v": 1, "k": ["ping"], "id": ""}), r"unknown envelope kind \['ping'\]"),
    "kind-as-map": (_pack({"v": 1, "k": {"a": 1}, "id": ""}), r"unknown envelope kind \{'a': 1\}"),
    "garbage-empty": (b"", r"undecodable envelope \(0 bytes\)"),
    "garbage-reserved-byte": (b"\xc1", r"undecodable envelope \(1 bytes\)"),
    "garbage-truncated-map": (_pack({"v": 1, "k": "ping", "id": ""})[:-3],
                              r"undecodable envelope \(\d+ bytes\)"),
    "garbage-trailing-bytes": (_pack({"v": 1, "k": "ping", "id": ""}) + b"\x00",
                               r"undecodable envelope"),
    "garbage-text": (b"GET / HTTP/1.1\r\n\r\n", r"undecodable envelope \(18 bytes\)"),
    "garbage-invalid-utf8-str": (b"\xa2\xff\xfe", r"undecodable envelope \(3 bytes\)"),
    "garbage-unhashable-key": (b"\x81\x90\x01", r"undecodable envelope \(3 bytes\)"),
    "not-a-map-list": (_pack([1, "ping", ""]), r"envelope is a list, not a map"),
    "not-a-map-int": (_pack(1), r"envelope is a int, not a map"),
    "not-a-map-str": (_pack("ping"), r"envelope is a str, not a map"),
    "not-a-map-bytes": (_pack(b"\x81"), r"envelope is a bytes, not a map"),
    "not-a-map-nil": (_pack(None), r"envelope is a NoneType, not a map"),
}


@pytest.mark.parametrize("data, message", list(REFUSED.values()), ids=list(REFUSED))
def test_decode_refuses(data, message):
    with pytest.raises(EnvelopeError, match=message):
        decode(data)


def test_envelope_error_is_a_value_error_without_msgpack_chaining():
    with pytest.raises(ValueError) as ei:
        decode(b"\xc1")
    assert isinstance(ei.value, EnvelopeError)
    assert ei.value.__cause__ is None and ei.value.__suppress_context__


def test_decode_accepts_unknown_extra_fields():
    # a newer minor revision may add fields; same version + known kind still decodes
    d = decode(_pack({"v": 1, "k": "credit", "id": "r", "grant": 2, "future": [1, 2]}))
    assert d["grant"] == 2 and d["future"] == [1, 2]


# --- SequenceChecker --------------------------------------------------------------------------

def _stream(rid: str = "r", chunks: int = 3) -> list[dict]:
    out = [env.head(rid, 200, [], True)]
    out += [env.chunk(rid, i, [("contentBlockDelta", b"{}")]) for i in range(1, chunks + 1)]
    out.append(env.end(rid, chunks + 1))
    return [decode(b) for b in out]


def test_sequence_in_order_is_accepted():
    sc = SequenceChecker()
    assert sc.expected == 0
    for e in _stream(chunks=5):
        assert sc.check(e) is None
    assert sc.expected == 7


def test_sequence_non_streaming_head_body():
    sc = SequenceChecker()
    assert sc.check(decode(env.head("r", 200, [], False))) is None
    assert sc.check(decode(env.body("r", 1, b"{}"))) is None
    assert sc.check(decode(env.error("r", 2, {}))) is None


def test_sequence_reports_a_lost_reply():
    sc = SequenceChecker()
    head, c1, c2, *_ = _stream()
    assert sc.check(head) is None
    assert sc.check(c2) == "reply chunk #2 arrived, #1 expected"
    # the report does not advance: everything after a loss keeps being reported
    assert sc.check(decode(env.end("r", 3))) == "reply end #3 arrived, #1 expected"


def test_sequence_reports_reordering():
    sc = SequenceChecker()
    head, c1, c2, c3, end = _stream()
    assert sc.check(head) is None
    assert sc.check(c2) == "reply chunk #2 arrived, #1 expected"
    assert sc.check(c1) is None  # the late one is still the one expected
    assert sc.check(c2) is None


def test_sequence_reports_a_missing_head():
    sc = SequenceChecker()
    assert sc.check(_stream()[1]) == "reply chunk #1 arrived, #0 expected"


def test_sequence_reports_a_duplicate():
    sc = SequenceChecker()
    head = _stream()[0]
    assert sc.check(head) is None
    assert sc.check(head) == "reply head #0 arrived, #1 expected"


def test_sequence_reports_an_envelope_without_a_number():
    sc = SequenceChecker()
    assert sc.check(decode(env.credit("r", 4))) == "reply credit #None arrived, #0 expected"
    assert sc.expected == 0


def test_sequence_checkers_are_independent():
    a, b = SequenceChecker(), SequenceChecker()
    assert a.check(_stream("a")[0]) is None
    assert b.check(_stream("b")[0]) is None
    assert a.expected == b.expected == 1
