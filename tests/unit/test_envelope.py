"""Unit tests for finops.shared.envelope: typed, immutable envelopes between frontends and workers.

Fixtures for the refusal cases are packed with msgpack directly, not with `envelope.encode`, so
they can hold what our encoder would never write (another version, a bad kind, a wrong type).
"""
from __future__ import annotations

import msgpack
import pytest

from finops.shared import envelope as env
from finops.shared import errors
from finops.shared.envelope import KINDS, VERSION, EnvelopeError, SequenceChecker, decode, encode

RAW_BODY = b'\xff\xfe{"messages":[]}\x00'  # not valid UTF-8: must survive as bytes
JSON_BODY = b'{"contentBlockIndex":0}'     # valid UTF-8: must *still* come back as bytes
THROTTLED = errors.throttled("slow", retry_after_ms=1500).to_wire()

# id -> (record, its byte form read back as a plain map)
SAMPLES = {
    "request": (
        env.Request(rid="r-1", op="ConverseStream", model="anthropic.claude-3", body=RAW_BODY,
                    headers={"content-type": "application/json", "x-amz-date": "20250101T000000Z"},
                    reply="tcp://10.0.0.1:5555", window=16, deadline=30.5,
                    path="/bedrock/model/anthropic.claude-3/converse-stream"),
        {"k": "request", "id": "r-1", "op": "ConverseStream", "model": "anthropic.claude-3",
         "body": RAW_BODY, "hdr": {"content-type": "application/json", "x-amz-date": "20250101T000000Z"},
         "reply": "tcp://10.0.0.1:5555", "window": 16, "deadline": 30.5,
         "path": "/bedrock/model/anthropic.claude-3/converse-stream"}),
    "request-no-path": (
        env.Request(rid="r-1", op="Converse", model="m", body=b"{}", headers={}, reply="ep", window=1, deadline=1.0),
        {"k": "request", "id": "r-1", "op": "Converse", "model": "m", "body": b"{}", "hdr": {}, "reply": "ep",
         "window": 1, "deadline": 1.0}),
    "head": (
        env.Head(rid="r-1", n=0, status=200, headers=(("content-type", "application/vnd.amazon.eventstream"),),
                 stream=True),
        {"k": "head", "id": "r-1", "n": 0, "status": 200,
         "hdr": [["content-type", "application/vnd.amazon.eventstream"]], "stream": True}),
    "head-not-streaming": (
        env.Head(rid="r-2", n=0, status=429, headers=(), stream=False),
        {"k": "head", "id": "r-2", "n": 0, "status": 429, "hdr": [], "stream": False}),
    "body": (
        env.Body(rid="r-1", n=1, data=RAW_BODY),
        {"k": "body", "id": "r-1", "n": 1, "data": RAW_BODY}),
    "chunk": (
        env.Chunk(rid="r-1", n=7, events=(("contentBlockDelta", JSON_BODY), ("contentBlockStop", b"{}"))),
        {"k": "chunk", "id": "r-1", "n": 7, "ev": [["contentBlockDelta", JSON_BODY], ["contentBlockStop", b"{}"]]}),
    "end": (
        env.End(rid="r-1", n=8, usage={"in": 3, "out": 5}),
        {"k": "end", "id": "r-1", "n": 8, "usage": {"in": 3, "out": 5}}),
    "end-no-usage": (
        env.End(rid="r-1", n=2),
        {"k": "end", "id": "r-1", "n": 2}),
    "error": (
        env.Error(rid="r-1", n=3, error=THROTTLED),
        {"k": "error", "id": "r-1", "n": 3,
         "err": {"code": "ThrottlingException", "message": "slow", "status": 429, "retry_after_ms": 1500}}),
    "body-with-outcome": (
        env.Body(rid="r-1", n=1, data=RAW_BODY, row=b"\x93row", settle=("r-1", "vk-1", "prod", 0.25, 40)),
        {"k": "body", "id": "r-1", "n": 1, "data": RAW_BODY, "row": b"\x93row",
         "settle": ["r-1", "vk-1", "prod", 0.25, 40]}),
    "end-with-row": (
        env.End(rid="r-1", n=9, usage={"in": 1}, row=b"row"),
        {"k": "end", "id": "r-1", "n": 9, "usage": {"in": 1}, "row": b"row"}),
    "error-with-row": (
        env.Error(rid="r-1", n=1, error=errors.WireError("X", "m", 500), row=b"row"),
        {"k": "error", "id": "r-1", "n": 1, "err": {"code": "X", "message": "m", "status": 500}, "row": b"row"}),
    "log": (
        env.Log(rid="r-1", n=4, row=b"row", settle=("r-1", "", "", 0.0, 0, 0.5)),
        {"k": "log", "id": "r-1", "n": 4, "row": b"row", "settle": ["r-1", "", "", 0.0, 0, 0.5]}),
    "credit": (
        env.Credit(rid="r-1", grant=32),
        {"k": "credit", "id": "r-1", "grant": 32}),
    "cancel": (
        env.Cancel(rid="r-1"),
        {"k": "cancel", "id": "r-1"}),
    "cancel-timed-out": (
        env.Cancel(rid="r-1", why=env.Why(408, "ModelTimeoutException", "upstream")),
        {"k": "cancel", "id": "r-1", "why": {"status": 408, "error": "ModelTimeoutException", "origin": "upstream"}}),
    "ping": (
        env.Ping(reply="tcp://10.0.0.1:5556", t=1700000000.25),
        {"k": "ping", "reply": "tcp://10.0.0.1:5556", "t": 1700000000.25}),
    "pong": (
        env.Pong(wid="3", t=1700000000.25, inflight=4),
        {"k": "pong", "wid": "3", "t": 1700000000.25, "inflight": 4}),
}


@pytest.mark.parametrize("record, wire", list(SAMPLES.values()), ids=list(SAMPLES))
def test_every_kind_round_trips_and_has_the_documented_byte_form(record, wire):
    data = encode(record)
    assert isinstance(data, bytes)
    assert decode(data) == record and type(decode(data)) is type(record)
    # the map holds the short keys, the version always, and no absent optional field
    assert msgpack.unpackb(data, raw=False) == {"v": VERSION, **wire}


def test_samples_cover_every_kind():
    assert {env.kind(r) for r, _ in SAMPLES.values()} == KINDS
    assert KINDS == {"request", "head", "body", "chunk", "end", "error", "log", "credit", "cancel", "ping", "pong"}


def test_final_replies_are_the_ones_that_carry_an_outcome():
    finals = {env.kind(r) for r, _ in SAMPLES.values() if isinstance(r, env.Final)}
    assert finals == {"body", "end", "error", "log"}
    sequenced = {env.kind(r) for r, _ in SAMPLES.values() if isinstance(r, env.Sequenced)}
    assert sequenced == finals | {"head", "chunk"}


def test_records_are_frozen():
    r = SAMPLES["request"][0]
    with pytest.raises(AttributeError):
        r.op = "InvokeModel"
    with pytest.raises(AttributeError):
        r.v = 2
    with pytest.raises(AttributeError):
        env.Why(408, "ModelTimeoutException", "upstream").status = 200
    with pytest.raises(AttributeError):
        THROTTLED.code = "X"


def test_a_record_without_a_required_field_cannot_be_built():
    with pytest.raises(TypeError, match="status"):
        env.Head(rid="r", n=0, headers=(), stream=False)
    with pytest.raises(TypeError, match="rid"):
        env.Credit(grant=1)
    with pytest.raises(TypeError):
        env.Body("r", 1, b"")          # keyword only: a field cannot land in the wrong place


def test_senders_may_pass_lists_which_come_back_as_tuples():
    h = decode(encode(env.Head(rid="r", n=0, status=200, headers=[["a", "1"], ["a", "2"]], stream=False)))
    assert h.headers == (("a", "1"), ("a", "2"))           # repeated names keep their order
    c = decode(encode(env.Chunk(rid="r", n=1, events=[["e", b"1"], ("e", b"2")])))
    assert c.events == (("e", b"1"), ("e", b"2"))
    b = decode(encode(env.Body(rid="r", n=1, data=b"", settle=["r", "k", "", 1, 2])))
    assert b.settle == ("r", "k", "", 1, 2)


def test_bytes_fields_stay_bytes_and_strings_stay_strings():
    r = decode(encode(env.Request(rid="r", op="InvokeModel", model="m", body=JSON_BODY, headers={}, reply="ep",
                                  window=1, deadline=1.0)))
    assert type(r.body) is bytes and r.body == JSON_BODY
    assert type(r.op) is str and type(r.rid) is str
    (et, data), = decode(encode(env.Chunk(rid="r", n=1, events=[("chunk", b"")]))).events
    assert type(data) is bytes and data == b"" and type(et) is str
    b = decode(encode(env.Body(rid="r", n=1, data=bytearray(b"\x00\x01"))))
    assert type(b.data) is bytes and b.data == b"\x00\x01"


def test_an_integer_deadline_reads_as_a_float():
    r = decode(_pack({**_wire("request"), "deadline": 600}))
    assert r.deadline == 600.0 and type(r.deadline) is float


def test_unicode_survives():
    d = decode(encode(env.Chunk(rid="r\u00e9", n=1, events=[("\u2603", "\U0001f600".encode())])))
    assert d.rid == "r\u00e9" and d.events[0][0] == "\u2603" and d.events[0][1].decode() == "\U0001f600"


def test_an_error_envelope_carries_the_gateway_error_whole():
    e = errors.GatewayError("ModelErrorException", "boom", extra={"originalStatusCode": 500}, retry_after_ms=3)
    back = errors.GatewayError.from_wire(decode(encode(env.Error(rid="r", n=1, error=e.to_wire()))).error)
    assert (back.code, back.status, back.message, back.extra, back.retry_after_ms) == \
        ("ModelErrorException", 424, "boom", {"originalStatusCode": 500}, 3)


# --- refusals -------------------------------------------------------------------------------

def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _wire(name: str) -> dict:
    """A valid map of the sample `name`, to spoil one field of."""
    return {"v": VERSION, **SAMPLES[name][1]}


REFUSED = {
    # id: (bytes, regex the message must match)
    "version-2": (_pack({"v": 2, "k": "ping", "reply": "r", "t": 1.0}), r"^envelope version 2, this build speaks 1$"),
    "version-0": (_pack({**_wire("credit"), "v": 0}), r"^envelope version 0, this build speaks 1$"),
    "version-2-other-fields": (_pack({"v": 2, "k": "ping", "id": "", "hello": 1}), r"^envelope version 2"),
    "version-as-string": (_pack({**_wire("credit"), "v": "1"}), r"^envelope version '1'"),
    "kind-unknown": (_pack({"v": 1, "k": "bogus", "id": ""}), r"^unknown envelope kind 'bogus'$"),
    "kind-missing": (_pack({"v": 1, "id": "", "grant": 1}), r"^unknown envelope kind None$"),
    "kind-wrong-case": (_pack({**_wire("ping"), "k": "PING"}), r"^unknown envelope kind 'PING'$"),
    "kind-as-bytes": (_pack({**_wire("ping"), "k": b"ping"}), r"^unknown envelope kind b'ping'$"),
    "kind-as-list": (_pack({**_wire("ping"), "k": ["ping"]}), r"^unknown envelope kind \['ping'\]$"),
    "kind-as-map": (_pack({**_wire("ping"), "k": {"a": 1}}), r"^unknown envelope kind \{'a': 1\}$"),
    "garbage-empty": (b"", r"^undecodable envelope \(0 bytes\)"),
    "garbage-reserved-byte": (b"\xc1", r"^undecodable envelope \(1 bytes\)"),
    "garbage-truncated-map": (_pack(_wire("ping"))[:-3], r"^undecodable envelope \(\d+ bytes\)"),
    "garbage-trailing-bytes": (_pack(_wire("ping")) + b"\x00", r"^undecodable envelope"),
    "garbage-text": (b"GET / HTTP/1.1\r\n\r\n", r"^undecodable envelope \(18 bytes\)"),
    "garbage-invalid-utf8-str": (b"\xa2\xff\xfe", r"^undecodable envelope \(3 bytes\)"),
    "not-a-map-list": (_pack([1, "ping", ""]), r"^envelope is a list, not a map$"),
    "not-a-map-int": (_pack(1), r"^envelope is a int, not a map$"),
    "not-a-map-str": (_pack("ping"), r"^envelope is a str, not a map$"),
    "not-a-map-bytes": (_pack(b"\x81"), r"^envelope is a bytes, not a map$"),
    "not-a-map-nil": (_pack(None), r"^envelope is a NoneType, not a map$"),
    # a known kind and version, a field missing or of the wrong type
    "request-without-body": (_pack({k: v for k, v in _wire("request").items() if k != "body"}),
                             r"^invalid request envelope: Object missing required field `body`$"),
    "request-body-as-str": (_pack({**_wire("request"), "body": "{}"}),
                            r"^invalid request envelope: Expected `bytes`, got `str` - at `\$.body`$"),
    "request-header-value-int": (_pack({**_wire("request"), "hdr": {"content-length": 3}}),
                                 r"^invalid request envelope: Expected `str`, got `int` - at `\$.hdr\[...\]`$"),
    "request-window-float": (_pack({**_wire("request"), "window": 1.5}),
                             r"^invalid request envelope: Expected `int`, got `float` - at `\$.window`$"),
    "request-id-int": (_pack({**_wire("request"), "id": 7}),
                       r"^invalid request envelope: Expected `str`, got `int` - at `\$.id`$"),
    "head-status-str": (_pack({**_wire("head"), "status": "200"}),
                        r"^invalid head envelope: Expected `int`, got `str` - at `\$.status`$"),
    "head-header-pair-of-three": (_pack({**_wire("head"), "hdr": [["a", "b", "c"]]}),
                                  r"^invalid head envelope: Expected `array` of length 2, got 3 - at `\$.hdr\[0\]`$"),
    "head-stream-int": (_pack({**_wire("head"), "stream": 1}),
                        r"^invalid head envelope: Expected `bool`, got `int` - at `\$.stream`$"),
    "head-without-n": (_pack({k: v for k, v in _wire("head").items() if k != "n"}),
                       r"^invalid head envelope: Object missing required field `n`$"),
    "chunk-payload-str": (_pack({**_wire("chunk"), "ev": [["contentBlockDelta", "{}"]]}),
                          r"^invalid chunk envelope: Expected `bytes`, got `str` - at `\$.ev\[0\]\[1\]`$"),
    "chunk-ev-map": (_pack({**_wire("chunk"), "ev": {"a": b""}}),
                     r"^invalid chunk envelope: Expected `array`, got `object` - at `\$.ev`$"),
    "body-row-str": (_pack({**_wire("body-with-outcome"), "row": "row"}),
                     r"^invalid body envelope: Expected `bytes \| null`, got `str` - at `\$.row`$"),
    "body-settle-map": (_pack({**_wire("body-with-outcome"), "settle": {"rid": "r"}}),
                        r"^invalid body envelope: Expected `array \| null`, got `object` - at `\$.settle`$"),
    "end-usage-float": (_pack({**_wire("end"), "usage": {"in": 1.5}}),
                        r"^invalid end envelope: Expected `int`, got `float` - at `\$.usage\[...\]`$"),
    "error-without-code": (_pack({**_wire("error"), "err": {"message": "m", "status": 500}}),
                           r"^invalid error envelope: Object missing required field `code` - at `\$.err`$"),
    "error-err-str": (_pack({**_wire("error"), "err": "boom"}),
                      r"^invalid error envelope: Expected `object`, got `str` - at `\$.err`$"),
    "credit-grant-str": (_pack({**_wire("credit"), "grant": "8"}),
                         r"^invalid credit envelope: Expected `int`, got `str` - at `\$.grant`$"),
    "cancel-why-without-origin": (_pack({**_wire("cancel"), "why": {"status": 408, "error": "E"}}),
                                  r"^invalid cancel envelope: Object missing required field `origin` - at `\$.why`$"),
    "ping-t-str": (_pack({**_wire("ping"), "t": "now"}),
                   r"^invalid ping envelope: Expected `float`, got `str` - at `\$.t`$"),
    "pong-inflight-nil": (_pack({**_wire("pong"), "inflight": None}),
                          r"^invalid pong envelope: Expected `int`, got `None` - at `\$.inflight`$"),
}


@pytest.mark.parametrize("data, message", list(REFUSED.values()), ids=list(REFUSED))
def test_decode_refuses_with_a_one_line_reason(data, message):
    with pytest.raises(EnvelopeError, match=message) as ei:
        decode(data)
    assert "\n" not in str(ei.value)


def test_a_record_built_with_a_wrong_type_is_refused_where_it_is_read():
    # building checks presence, not types: the receiving end's decode does
    data = encode(env.Credit(rid="r", grant="8"))
    with pytest.raises(EnvelopeError, match=r"invalid credit envelope: Expected `int`, got `str`"):
        decode(data)


def test_envelope_error_is_a_value_error_without_chaining():
    with pytest.raises(ValueError) as ei:
        decode(b"\xc1")
    assert isinstance(ei.value, EnvelopeError)
    assert ei.value.__cause__ is None and ei.value.__suppress_context__


def test_decode_accepts_unknown_extra_fields():
    # a later revision may add an optional field; same version + known kind still decodes, without it
    d = decode(_pack({**_wire("credit"), "future": [1, 2]}))
    assert d == env.Credit(rid="r-1", grant=32)


def test_a_map_without_a_version_reads_as_this_one():
    # every sender writes `v` (test above); a map without it is read as this version
    wire = _wire("credit")
    del wire["v"]
    assert decode(_pack(wire)) == env.Credit(rid="r-1", grant=32)


def test_records_are_read_by_attribute_not_by_key():
    # a string key is a TypeError, not a silent None
    with pytest.raises(TypeError):
        SAMPLES["request"][0]["op"]


# --- SequenceChecker --------------------------------------------------------------------------

def _stream(rid: str = "r", chunks: int = 3) -> list[env.Envelope]:
    out = [env.Head(rid=rid, n=0, status=200, headers=(), stream=True)]
    out += [env.Chunk(rid=rid, n=i, events=(("contentBlockDelta", b"{}"),)) for i in range(1, chunks + 1)]
    out.append(env.End(rid=rid, n=chunks + 1))
    return [decode(encode(e)) for e in out]


def test_sequence_in_order_is_accepted():
    sc = SequenceChecker()
    assert sc.expected == 0
    for e in _stream(chunks=5):
        assert sc.check(e) is None
    assert sc.expected == 7


def test_sequence_non_streaming_head_body():
    sc = SequenceChecker()
    assert sc.check(env.Head(rid="r", n=0, status=200, headers=(), stream=False)) is None
    assert sc.check(env.Body(rid="r", n=1, data=b"{}")) is None
    assert sc.check(env.Error(rid="r", n=2, error=THROTTLED)) is None


def test_sequence_reports_a_lost_reply():
    sc = SequenceChecker()
    head, c1, c2, *_ = _stream()
    assert sc.check(head) is None
    assert sc.check(c2) == "reply chunk #2 arrived, #1 expected"
    # the report does not advance: everything after a loss keeps being reported
    assert sc.check(env.End(rid="r", n=3)) == "reply end #3 arrived, #1 expected"


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
    assert sc.check(env.Credit(rid="r", grant=4)) == "reply credit #None arrived, #0 expected"
    assert sc.expected == 0


def test_sequence_checkers_are_independent():
    a, b = SequenceChecker(), SequenceChecker()
    assert a.check(_stream("a")[0]) is None
    assert b.check(_stream("b")[0]) is None
    assert a.expected == b.expected == 1
