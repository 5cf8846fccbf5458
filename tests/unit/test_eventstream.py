"""Unit tests for finops.shared.eventstream (AWS event-stream framing).

Layout follows the style anchors: named byte fixtures paired with their decoded form
(botocore tests/unit/test_eventstream.py), every decode run whole, byte by byte and glued to
neighbours (h11 tests/test_io.py `tr()`), negative cases with readable ids, and cross-checks
against botocore's own decoder and its real `EventStream` parser for bedrock-runtime.

Fixture bytes are built here by `_frame()`, a separate few-line encoder, so a bug in
`encode_frame` cannot hide itself by also producing the fixtures.
"""
from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib

import botocore.session
import pytest
from botocore import eventstream as bc
from botocore.exceptions import EventStreamError as BotoEventStreamError
from botocore.parsers import EventStreamJSONParser

from finops.shared import eventstream as es
from finops.shared.eventstream import (
    MAX_HEADERS_LENGTH,
    MAX_PAYLOAD_LENGTH,
    ChecksumMismatch,
    DuplicateHeader,
    EventStreamError,
    Frame,
    FrameDecoder,
    InvalidHeader,
    InvalidHeadersLength,
    InvalidPayloadLength,
    decode_all,
    decode_headers,
    encode_frame,
    encode_headers,
    error_frame,
    event_frame,
    exception_frame,
)


# --- independent fixture builders ---------------------------------------------------------

def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _hdr(name: str | bytes, htype: int, value: bytes = b"") -> bytes:
    """One raw header: name_len u8 | name | type u8 | value (value bytes given verbatim)."""
    n = name.encode() if isinstance(name, str) else name
    return bytes([len(n)]) + n + bytes([htype]) + value


def _str(name: str, value: str) -> bytes:
    v = value.encode()
    return _hdr(name, 7, struct.pack(">H", len(v)) + v)


def _frame(headers: bytes, payload: bytes = b"", *, total: int | None = None,
           hlen: int | None = None, prelude_crc: int | None = None,
           message_crc: int | None = None) -> bytes:
    """A frame with correct CRCs for whatever (possibly lying) lengths are given."""
    total = 16 + len(headers) + len(payload) if total is None else total
    hlen = len(headers) if hlen is None else hlen
    prelude = struct.pack(">II", total, hlen)
    pcrc = _crc(prelude) if prelude_crc is None else prelude_crc
    body = prelude + struct.pack(">I", pcrc) + headers + payload
    mcrc = _crc(body) if message_crc is None else message_crc
    return body + struct.pack(">I", mcrc)


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


# --- spec vectors (bedrock-protocol.md 2.3) -----------------------------------------------

EMPTY_MESSAGE_HEX = "000000100000000005c248eb7d98c8ff"
PAYLOAD_ONE_STR_HEADER_HEX = (
    "0000003d0000002007fd83960c636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e"
    "7b27666f6f273a27626172277d8d9c08b1")
MESSAGE_START = (
    bytes.fromhex("00000076" "00000052" "96d5fade")
    + b"\x0b:event-type\x07\x00\x0cmessageStart"
    + b"\x0d:content-type\x07\x00\x10application/json"
    + b"\x0d:message-type\x07\x00\x05event"
    + b'{"role":"assistant"}'
    + bytes.fromhex("6fa8c599")
)


def test_empty_message_vector():
    data = bytes.fromhex(EMPTY_MESSAGE_HEX)
    assert encode_frame({}, b"") == data
    assert encode_frame(b"", b"") == data
    assert decode_all(data) == [Frame({}, b"")]


def test_payload_one_str_header_vector():
    # the header name really is `content-type`, without the leading colon
    data = bytes.fromhex(PAYLOAD_ONE_STR_HEADER_HEX)
    assert encode_frame({"content-type": "application/json"}, b"{'foo':'bar'}") == data
    assert encode_frame([("content-type", "application/json")], b"{'foo':'bar'}") == data
    assert decode_all(data) == [Frame({"content-type": "application/json"}, b"{'foo':'bar'}")]


def test_bedrock_message_start_vector():
    assert len(MESSAGE_START) == 118
    out = event_frame("messageStart", b'{"role":"assistant"}')
    assert out == MESSAGE_START
    assert out[-4:] == bytes.fromhex("6fa8c599")
    (frame,) = decode_all(MESSAGE_START)
    assert list(frame.headers) == [":event-type", ":content-type", ":message-type"]  # wire order
    assert frame.event_type == "messageStart"
    assert frame.message_type == "event"
    assert frame.exception_type is None
    assert json.loads(frame.payload) == {"role": "assistant"}


def test_our_fixture_builder_matches_the_spec_vectors():
    # guards the helper every negative fixture below relies on
    assert _frame(b"") == bytes.fromhex(EMPTY_MESSAGE_HEX)
    assert _frame(_str("content-type", "application/json"), b"{'foo':'bar'}") == \
        bytes.fromhex(PAYLOAD_ONE_STR_HEADER_HEX)


# --- botocore's named fixtures (boto/botocore tests/unit/test_eventstream.py) -------------
# (encoded, decoded headers, payload); uuids are bytes in botocore, uuid.UUID in ours.

BOTOCORE_POSITIVE = {
    "empty-message": (b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff", {}, b""),
    "int8-header": (
        b"\x00\x00\x00\x17\x00\x00\x00\x07)\x86\x01X\x04byte\x02\xff\xc2\xf8i\xdc",
        {"byte": -1}, b""),
    "int16-header": (
        b"\x00\x00\x00\x19\x00\x00\x00\tq\x0e\x92>\x05short\x03\xff\xff\xb2|\xb6\xcc",
        {"short": -1}, b""),
    "int32-header": (
        b"\x00\x00\x00\x1d\x00\x00\x00\r\x83\xe3\xf0\xe7\x07integer\x04\xff\xff\xff\xff"
        b"\x8b\x8e\x12\xeb",
        {"integer": -1}, b""),
    "int64-header": (
        b"\x00\x00\x00\x1e\x00\x00\x00\x0e]J\xdb\x8d\x04long\x05\xff\xff\xff\xff\xff\xff\xff\xff"
        b"K\xc22\xda",
        {"long": -1}, b""),
    "payload-no-headers": (
        b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96", {}, b"{'foo':'bar'}"),
    "payload-one-str-header": (
        b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10"
        b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1",
        {"content-type": "application/json"}, b"{'foo':'bar'}"),
    "all-header-types": (
        b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c"
        b"\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03"
        b"\x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05"
        b"\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8"
        b"\x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef"
        b"\x63\x35\x36\x71",
        {"0": True, "1": False, "2": 2, "3": 3, "4": 4, "5": 5, "6": b"bytes", "7": "utf8",
         "8": 8, "9": uuid.UUID(bytes=b"0123456789abcdef")}, b""),
    "error-event-message": (
        b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e"
        b"\x0d:message-type\x07\x00\x05error"
        b"\x0b:error-code\x07\x00\x04code"
        b"\x0e:error-message\x07\x00\x07message"
        b"\x6b\x6c\xea\x3d",
        {":message-type": "error", ":error-code": "code", ":error-message": "message"}, b""),
}


def _as_botocore(headers: dict) -> dict:
    return {k: (v.bytes if isinstance(v, uuid.UUID) else v) for k, v in headers.items()}


def _botocore_decode(data: bytes) -> list[tuple[dict, bytes]]:
    buf = bc.EventStreamBuffer()
    buf.add_data(data)
    return [(m.headers, m.payload) for m in buf]


@pytest.mark.parametrize("encoded, headers, payload",
                         list(BOTOCORE_POSITIVE.values()), ids=list(BOTOCORE_POSITIVE))
def test_botocore_fixture_decodes(encoded, headers, payload):
    for frames in _decode_every_way(encoded):
        assert frames == [Frame(headers, payload)]
    # the fixture itself is what botocore expects
    assert _botocore_decode(encoded) == [(_as_botocore(headers), payload)]


# the fixtures our encoder can express: it writes ints as int32 and never writes timestamps
_REENCODABLE = ["empty-message", "int32-header", "payload-no-headers", "payload-one-str-header",
                "error-event-message"]


@pytest.mark.parametrize("name", _REENCODABLE)
def test_botocore_fixture_reencodes_identically(name):
    encoded, headers, payload = BOTOCORE_POSITIVE[name]
    assert encode_frame(headers, payload) == encoded


def test_all_botocore_fixtures_on_one_stream():
    stream = b"".join(e for e, _, _ in BOTOCORE_POSITIVE.values())
    expected = [Frame(h, p) for _, h, p in BOTOCORE_POSITIVE.values()]
    for frames in _decode_every_way(stream, split_everywhere=False):
        assert frames == expected


def test_botocore_wrapper_fixture_split_inside_headers():
    # botocore's EventStream test feeds this frame as two chunks split inside a header value
    a = b"\x00\x00\x00+\x00\x00\x00\x0e4\x8b\xec{\x08event-id\x04\x00"
    b = b"\x00\xa0\x0c{'foo':'bar'}\xd3\x89\x02\x85"
    d = FrameDecoder()
    d.receive_data(a)
    assert d.next_frame() is None
    assert d.pending == len(a)
    d.receive_data(b)
    assert d.next_frame() == Frame({"event-id": 0xA00C}, b"{'foo':'bar'}")
    assert d.pending == 0


# --- feeding: whole, byte by byte, glued to neighbours (h11 `tr()` style) -----------------

_BEFORE = bytes.fromhex(EMPTY_MESSAGE_HEX)
_AFTER = bytes.fromhex(PAYLOAD_ONE_STR_HEADER_HEX)
_BEFORE_FRAME = Frame({}, b"")
_AFTER_FRAME = Frame({"content-type": "application/json"}, b"{'foo':'bar'}")


def _drain(d: FrameDecoder) -> list[Frame]:
    out = []
    while (f := d.next_frame()) is not None:
        out.append(f)
    return out


def _feed(chunks) -> tuple[list[Frame], FrameDecoder]:
    d = FrameDecoder()
    out: list[Frame] = []
    for c in chunks:
        d.receive_data(c)
        out += _drain(d)
    return out, d


def _decode_every_way(data: bytes, split_everywhere: bool = True) -> list[list[Frame]]:
    """Decode `data` several ways; every way must consume it all. Returns each way's frames."""
    results = []
    frames, d = _feed([data])
    assert d.pending == 0
    results.append(frames)

    frames, d = _feed(data[i:i + 1] for i in range(len(data)))
    assert d.pending == 0
    results.append(frames)

    glued = _BEFORE + data + _AFTER
    splits = range(len(glued) + 1) if split_everywhere else (0, 7, len(_BEFORE) + 13, len(glued))
    for i in splits:
        frames, d = _feed([glued[:i], glued[i:]])
        assert d.pending == 0
        assert frames[0] == _BEFORE_FRAME and frames[-1] == _AFTER_FRAME, f"split at {i}"
        results.append(frames[1:-1])
    return results


def test_feeding_whole_bytewise_and_glued_give_the_same_frames():
    data = MESSAGE_START + error_frame("Boom", "it broke") + MESSAGE_START
    ways = _decode_every_way(data)
    assert len(ways) > 3
    expected = decode_all(data)
    assert len(expected) == 3
    for frames in ways:
        assert frames == expected


def test_partial_frame_is_buffered_not_returned():
    d = FrameDecoder()
    for i in range(len(MESSAGE_START) - 1):
        d.receive_data(MESSAGE_START[i:i + 1])
        assert d.next_frame() is None
        assert d.pending == i + 1
    d.receive_data(MESSAGE_START[-1:])
    assert d.next_frame().event_type == "messageStart"
    assert d.next_frame() is None
    assert d.pending == 0


def test_frames_iterator_stops_at_a_partial_frame_and_resumes():
    d = FrameDecoder()
    d.receive_data(MESSAGE_START + MESSAGE_START[:50])
    assert [f.event_type for f in d.frames()] == ["messageStart"]
    assert d.pending == 50
    d.receive_data(MESSAGE_START[50:])
    assert [f.event_type for f in d.frames()] == ["messageStart"]
    assert d.pending == 0


def test_receive_empty_data_is_harmless():
    d = FrameDecoder()
    d.receive_data(b"")
    assert d.next_frame() is None
    d.receive_data(MESSAGE_START)
    d.receive_data(b"")
    assert _drain(d) == decode_all(MESSAGE_START)


def test_decode_all():
    assert decode_all(b"") == []
    assert len(decode_all(MESSAGE_START * 3)) == 3
    with pytest.raises(EventStreamError, match=r"^5 trailing bytes"):
        decode_all(MESSAGE_START + MESSAGE_START[:5])


# --- header types: every one round-trips ---------------------------------------------------

_UUID = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")

ENCODER_TYPES = {
    # value -> the wire type byte the encoder must choose
    "bool-true": (True, 0),
    "bool-false": (False, 1),
    "int32-zero": (0, 4),
    "int32-minus-one": (-1, 4),
    "int32-min": (-(2**31), 4),
    "int32-max": (2**31 - 1, 4),
    "int64-above-int32": (2**31, 5),
    "int64-below-int32": (-(2**31) - 1, 5),
    "int64-max": (2**63 - 1, 5),
    "int64-min": (-(2**63), 5),
    "byte-array-empty": (b"", 6),
    "byte-array": (b"\x00\xff\x80bin", 6),
    "bytearray": (bytearray(b"\x01\x02"), 6),
    "string-empty": ("", 7),
    "string-ascii": ("application/json", 7),
    "string-unicode": ("h\u00e9llo \u2603 \U0001f600", 7),
    "uuid": (_UUID, 9),
}


@pytest.mark.parametrize("value, wire_type", list(ENCODER_TYPES.values()), ids=list(ENCODER_TYPES))
def test_encoder_header_type_round_trip(value, wire_type):
    hb = encode_headers({"h": value})
    assert hb[:2] == b"\x01h"
    assert hb[2] == wire_type
    decoded = decode_headers(hb)["h"]
    assert decoded == value
    assert type(decoded) is (bytes if isinstance(value, bytearray) else type(value))
    (frame,) = decode_all(encode_frame({"h": value}, b"p"))
    assert frame.headers == {"h": value} and frame.payload == b"p"


def test_bool_headers_are_not_encoded_as_ints():
    assert encode_headers({"t": True}) == b"\x01t\x00"
    assert encode_headers({"f": False}) == b"\x01f\x01"


def test_encoded_values_have_exact_bytes():
    assert encode_headers({"i": -2}) == b"\x01i\x04\xff\xff\xff\xfe"
    assert encode_headers({"l": 2**32}) == b"\x01l\x05\x00\x00\x00\x01\x00\x00\x00\x00"
    assert encode_headers({"s": "\u00e9"}) == b"\x01s\x07\x00\x02\xc3\xa9"
    assert encode_headers({"b": b"ab"}) == b"\x01b\x06\x00\x02ab"
    assert encode_headers({"u": _UUID}) == b"\x01u\x09" + _UUID.bytes


HAND_BUILT_TYPES = {
    # types the encoder never emits: (raw header, decoded value)
    "int8-min": (_hdr("x", 2, b"\x80"), -128),
    "int8-max": (_hdr("x", 2, b"\x7f"), 127),
    "int8-minus-two": (_hdr("x", 2, b"\xfe"), -2),
    "int16-min": (_hdr("x", 3, b"\x80\x00"), -32768),
    "int16-max": (_hdr("x", 3, b"\x7f\xff"), 32767),
    "int16-minus-two": (_hdr("x", 3, b"\xff\xfe"), -2),
    "int32-min": (_hdr("x", 4, b"\x80\x00\x00\x00"), -(2**31)),
    "int64-minus-two": (_hdr("x", 5, b"\xff" * 7 + b"\xfe"), -2),
    "timestamp-ms": (_hdr("x", 8, struct.pack(">q", 1_700_000_000_123)), 1_700_000_000_123),
    "timestamp-negative": (_hdr("x", 8, struct.pack(">q", -1)), -1),
    "uuid": (_hdr("x", 9, _UUID.bytes), _UUID),
    "byte-array-max-len": (_hdr("x", 6, b"\xff\xff" + b"z" * 65535), b"z" * 65535),
    "string-non-ascii": (_hdr("x", 7, b"\x00\x03\xe2\x98\x83"), "\u2603"),
    "empty-name": (_hdr("", 7, b"\x00\x01v"), "v"),
}


@pytest.mark.parametrize("raw, value", list(HAND_BUILT_TYPES.values()), ids=list(HAND_BUILT_TYPES))
def test_hand_built_header_types_decode(raw, value):
    name = "" if raw[0] == 0 else "x"
    assert decode_headers(raw) == {name: value}
    data = _frame(raw, b"payload")
    for frames in _decode_every_way(data, split_everywhere=False):
        assert frames == [Frame({name: value}, b"payload")]
    ((bh, bp),) = _botocore_decode(data)
    assert bh == _as_botocore({name: value}) and bp == b"payload"


def test_all_header_types_in_one_block_keep_order():
    raw = (_hdr("t", 0) + _hdr("f", 1) + _hdr("i8", 2, b"\x05") + _hdr("i16", 3, b"\x01\x00")
           + _hdr("i32", 4, b"\x00\x01\x00\x00") + _hdr("i64", 5, b"\x00" * 3 + b"\x01" + b"\x00" * 4)
           + _hdr("ba", 6, b"\x00\x01\x00") + _str("s", "str") + _hdr("ts", 8, b"\x00" * 7 + b"\x09")
           + _hdr("u", 9, _UUID.bytes))
    h = decode_headers(raw)
    assert list(h.items()) == [
        ("t", True), ("f", False), ("i8", 5), ("i16", 256), ("i32", 65536), ("i64", 2**32),
        ("ba", b"\x00"), ("s", "str"), ("ts", 9), ("u", _UUID)]


def test_decode_headers_accepts_memoryview_and_empty():
    assert decode_headers(b"") == {}
    assert decode_headers(memoryview(b"xx" + _str("a", "b"))[2:]) == {"a": "b"}


def test_encoder_rejects_what_it_cannot_encode():
    with pytest.raises(ValueError, match="header name too long"):
        encode_headers({"n" * 256: "v"})
    assert decode_headers(encode_headers({"n" * 255: "v"})) == {"n" * 255: "v"}
    for bad in (1.5, None, ["x"], {"a": 1}):
        with pytest.raises(TypeError, match="unsupported header value type"):
            encode_headers({"h": bad})


# --- the frame builders -------------------------------------------------------------------

def test_event_frame_headers_and_payload():
    (f,) = decode_all(event_frame("contentBlockDelta", b'{"x":1}'))
    assert list(f.headers.items()) == [
        (":event-type", "contentBlockDelta"), (":content-type", "application/json"),
        (":message-type", "event")]
    assert f.payload == b'{"x":1}'


def test_event_frame_cache_never_mixes_types():
    # more distinct names than the header cache holds, each asked for twice
    names = [f"ev{i}" for i in range(300)]
    for _ in range(2):
        for n in names:
            (f,) = decode_all(event_frame(n, n.encode()))
            assert f.event_type == n and f.payload == n.encode()


def test_exception_frame_headers():
    body = b'{"message":"m","originalStatusCode":424}'
    (f,) = decode_all(exception_frame("modelStreamErrorException", body))
    assert list(f.headers.items()) == [
        (":exception-type", "modelStreamErrorException"), (":content-type", "application/json"),
        (":message-type", "exception")]
    assert f.message_type == "exception"
    assert f.exception_type == "modelStreamErrorException"
    assert f.event_type is None
    assert f.payload == body


def test_error_frame_headers():
    (f,) = decode_all(error_frame("InternalFailure", "it broke \u2603"))
    assert f.headers == {":error-code": "InternalFailure", ":error-message": "it broke \u2603",
                         ":message-type": "error"}
    assert f.message_type == "error"
    assert f.payload == b""


def test_message_type_defaults_to_event():
    assert Frame({}, b"").message_type == "event"
    assert Frame({":message-type": "exception"}, b"").message_type == "exception"


def test_large_payload_round_trip():
    payload = bytes(range(256)) * 4096  # 1 MiB
    frames, _ = _feed(event_frame("chunk", payload)[i:i + 65536]
                      for i in range(0, len(payload) + 200, 65536))
    assert [f.payload for f in frames] == [payload]


# --- cross-check with botocore's decoder ---------------------------------------------------

OUR_FRAMES = {
    "empty": encode_frame({}, b""),
    "message-start": event_frame("messageStart", b'{"role":"assistant"}'),
    "chunk": event_frame("chunk", b'{"bytes":"eyJhIjoxfQ=="}'),
    "unicode-payload": event_frame("contentBlockDelta", "\u2603 \U0001f600".encode()),
    "exception": exception_frame("throttlingException", b'{"message":"slow down"}'),
    "error": error_frame("InternalFailure", "boom"),
    "every-encoder-type": encode_frame(
        [("t", True), ("f", False), ("i32", -7), ("i64", 2**40), ("b", b"\x00\xff"),
         ("s", "\u00e9"), ("u", _UUID)], b"\x00\x01\x02"),
    "binary-payload": encode_frame({"x": "y"}, bytes(range(256))),
}


@pytest.mark.parametrize("data", list(OUR_FRAMES.values()), ids=list(OUR_FRAMES))
def test_botocore_decodes_our_frames_identically(data):
    buf = bc.EventStreamBuffer()
    buf.add_data(data)
    (msg,) = list(buf)
    (ours,) = decode_all(data)
    assert msg.headers == _as_botocore(ours.headers)
    assert msg.payload == ours.payload
    assert msg.prelude.total_length == len(data)
    assert msg.crc == struct.unpack(">I", data[-4:])[0]
    expected_status = 200 if ours.message_type == "event" else 400
    assert msg.to_response_dict()["status_code"] == expected_status


def test_botocore_decodes_a_long_mixed_stream_of_ours_split_oddly():
    stream = b"".join(OUR_FRAMES.values()) * 3
    buf = bc.EventStreamBuffer()
    got = []
    for i in range(0, len(stream), 13):
        buf.add_data(stream[i:i + 13])
        got += [(m.headers, m.payload) for m in buf]
    assert got == [(_as_botocore(f.headers), f.payload) for f in decode_all(stream)]
    assert len(got) == 3 * len(OUR_FRAMES)


# --- negative fixtures ----------------------------------------------------------------------

_GOOD = _frame(_str("k", "v"), b"payload")
_H = len(_str("k", "v"))

NEGATIVE_CASES = {
    # id: (bytes, our exception, message fragment, botocore's exception or None)
    "corrupted-prelude-crc": (_flip(_GOOD, 11), ChecksumMismatch, "prelude CRC", bc.ChecksumMismatch),
    "corrupted-total-length": (_flip(_GOOD, 3), ChecksumMismatch, "prelude CRC", bc.ChecksumMismatch),
    "corrupted-message-crc": (_flip(_GOOD, len(_GOOD) - 1), ChecksumMismatch, "message CRC",
                              bc.ChecksumMismatch),
    "corrupted-header-byte": (_flip(_GOOD, 13), ChecksumMismatch, "message CRC", bc.ChecksumMismatch),
    "corrupted-payload": (_flip(_GOOD, 12 + _H), ChecksumMismatch, "message CRC", bc.ChecksumMismatch),
    "headers-length-too-large": (
        _frame(b"", total=16 + MAX_HEADERS_LENGTH + 1, hlen=MAX_HEADERS_LENGTH + 1),
        InvalidHeadersLength, f"headers length {MAX_HEADERS_LENGTH + 1}", bc.InvalidHeadersLength),
    "payload-length-too-large": (
        _frame(b"", total=16 + MAX_PAYLOAD_LENGTH + 1), InvalidPayloadLength,
        f"payload length {MAX_PAYLOAD_LENGTH + 1}", bc.InvalidPayloadLength),
    "total-length-smaller-than-headers": (
        _frame(_str("k", "v"), total=16 + _H - 1), InvalidPayloadLength, "too small", None),
    "total-length-smaller-than-prelude": (
        _frame(b"", total=8, hlen=0), InvalidPayloadLength, "too small", None),
    "truncated-header-name": (_frame(b"\x05ab"), InvalidHeader, "name runs past", None),
    "missing-header-type": (_frame(b"\x02ab"), InvalidHeader, "name runs past", None),
    "truncated-header-value": (_frame(_hdr("k", 7, b"\x00\x0aabc")), InvalidHeader,
                               "value runs past", None),
    "truncated-header-value-length": (_frame(_hdr("k", 6, b"\x00")), InvalidHeader,
                                      "length runs past", None),
    "truncated-int32": (_frame(_hdr("k", 4, b"\x00\x00")), InvalidHeader, "value runs past", None),
    "truncated-int64": (_frame(_hdr("k", 5, b"\x00" * 7)), InvalidHeader, "value runs past", None),
    "truncated-timestamp": (_frame(_hdr("k", 8, b"\x00")), InvalidHeader, "value runs past", None),
    "truncated-uuid": (_frame(_hdr("k", 9, b"\x00" * 15)), InvalidHeader, "uuid runs past", None),
    "header-value-past-headers-into-payload": (
        # the value length reaches into the payload: must not be read from there
        _frame(_hdr("k", 7, b"\x00\x05"), b"abcde"), InvalidHeader, "value runs past", None),
    "unknown-header-type": (_frame(_hdr("k", 10, b"\x00")), InvalidHeader, "unknown type 10", None),
    "unknown-header-type-255": (_frame(_hdr("k", 255)), InvalidHeader, "unknown type 255", None),
    "duplicate-header": (_frame(_str("test", "asdf") + _str("test", "asdf")), DuplicateHeader,
                         "duplicate header 'test'", bc.DuplicateHeader),
    "duplicate-header-different-types": (_frame(_hdr("a", 0) + _str("a", "x")), DuplicateHeader,
                                         "duplicate header 'a'", bc.DuplicateHeader),
    "invalid-utf8-header-name": (_frame(_hdr(b"\xff\xfe", 0)), InvalidHeader, "UTF-8", None),
    "invalid-utf8-string-value": (_frame(_hdr("k", 7, b"\x00\x02\xc3\x28")), InvalidHeader,
                                  "UTF-8", None),
}


@pytest.mark.parametrize("data, exc, fragment, boto_exc", list(NEGATIVE_CASES.values()),
                         ids=list(NEGATIVE_CASES))
def test_negative_case_raises(data, exc, fragment, boto_exc):
    assert issubclass(exc, EventStreamError) and issubclass(exc, ValueError)
    with pytest.raises(exc, match=fragment):
        decode_all(data)
    # byte by byte: raised as soon as the bad part is there, never a silent None forever
    d = FrameDecoder()
    with pytest.raises(exc):
        for i in range(min(len(data), 4096)):
            d.receive_data(data[i:i + 1])
            assert d.next_frame() is None
        d.receive_data(data[4096:])
        d.next_frame()
    if boto_exc is not None:  # botocore rejects the same bytes for the same reason
        with pytest.raises(boto_exc):
            _botocore_decode(data)


@pytest.mark.parametrize("data", [NEGATIVE_CASES[k][0] for k in (
    "corrupted-prelude-crc", "headers-length-too-large", "payload-length-too-large",
    "total-length-smaller-than-headers")], ids=["prelude-crc", "headers-len", "payload-len", "total-len"])
def test_prelude_errors_raise_before_the_rest_arrives(data):
    # the prelude alone is judged: no waiting for (possibly 24 MiB of) body first
    d = FrameDecoder()
    d.receive_data(data[:12])
    with pytest.raises(EventStreamError):
        d.next_frame()


def test_lengths_at_the_limits_are_accepted_while_waiting():
    for hlen, total in ((MAX_HEADERS_LENGTH, 16 + MAX_HEADERS_LENGTH),
                        (0, 16 + MAX_PAYLOAD_LENGTH)):
        d = FrameDecoder()
        d.receive_data(_frame(b"", total=total, hlen=hlen)[:12])
        assert d.next_frame() is None


def test_headers_block_exactly_at_the_limit_decodes():
    h1 = _hdr("a", 6, b"\xff\xff" + b"a" * 65535)          # 65540 bytes
    rest = MAX_HEADERS_LENGTH - len(h1) - len(_hdr("b", 6, b"\x00\x00"))
    raw = h1 + _hdr("b", 6, struct.pack(">H", rest) + b"b" * rest)
    assert len(raw) == MAX_HEADERS_LENGTH
    (f,) = decode_all(_frame(raw, b"p"))
    assert f.headers == {"a": b"a" * 65535, "b": b"b" * rest} and f.payload == b"p"
    with pytest.raises(InvalidHeadersLength):  # one byte more is refused
        decode_all(_frame(raw + _hdr("", 0), b"p"))


def test_checksum_mismatch_carries_both_values():
    data = NEGATIVE_CASES["corrupted-message-crc"][0]
    with pytest.raises(ChecksumMismatch) as ei:
        decode_all(data)
    good_crc = struct.unpack(">I", _GOOD[-4:])[0]
    assert ei.value.expected == good_crc ^ 0x01
    assert ei.value.calculated == good_crc
    assert f"0x{good_crc ^ 1:08x}" in str(ei.value) and f"0x{good_crc:08x}" in str(ei.value)


def test_good_frames_before_a_bad_one_are_delivered_first():
    d = FrameDecoder()
    d.receive_data(MESSAGE_START + MESSAGE_START + NEGATIVE_CASES["corrupted-payload"][0])
    assert d.next_frame().event_type == "messageStart"
    assert d.next_frame().event_type == "messageStart"
    with pytest.raises(ChecksumMismatch):
        d.next_frame()


@pytest.mark.parametrize("case", ["corrupted-prelude-crc", "corrupted-message-crc",
                                  "duplicate-header", "invalid-utf8-header-name"])
def test_decoder_refuses_further_use_after_an_error(case):
    data, exc, fragment, _ = NEGATIVE_CASES[case]
    d = FrameDecoder()
    d.receive_data(data)
    with pytest.raises(exc):
        d.next_frame()
    with pytest.raises(EventStreamError, match="unusable after earlier error") as ei:
        d.receive_data(MESSAGE_START)  # good bytes do not revive it
    assert fragment in str(ei.value)  # the refusal names the original reason
    with pytest.raises(EventStreamError):
        d.next_frame()
    with pytest.raises(EventStreamError):
        list(d.frames())


# --- linear time ----------------------------------------------------------------------------

def test_buffer_is_compacted_on_a_long_stream():
    # white-box: the bytearray must not keep every consumed frame alive
    frame = MESSAGE_START
    stream = frame * 20_000
    d = FrameDecoder()
    n = 0
    peak = 0
    for i in range(0, len(stream), 1000):  # chunks cut frames anywhere
        d.receive_data(stream[i:i + 1000])
        n += len(_drain(d))
        assert d.pending < len(frame)
        peak = max(peak, len(d._buf))
    assert n == 20_000
    assert peak <= 2 * (1000 + len(frame))


class _CountingBuffer(bytearray):
    """The decoder's buffer, counting the bytes it copies: appended (`+=`) and moved when consumed
    bytes are dropped (`del buf[:n]` moves what is left). Linear decoding copies each byte a
    bounded number of times, whatever the frames' sizes and the receives' cuts."""

    def __init__(self):
        super().__init__()
        self.copied = 0

    def __iadd__(self, data):
        self.copied += len(data)
        return super().__iadd__(data)

    def __delitem__(self, index):
        super().__delitem__(index)
        self.copied += len(self)          # what the deletion moved to the front


def _decode_counting(chunks) -> tuple[int, int, int]:
    """(frames, bytes received, bytes the decoder copied) for these receives."""
    d = FrameDecoder()
    d._buf = _CountingBuffer()
    frames = received = 0
    for c in chunks:
        d.receive_data(c)
        received += len(c)
        while d.next_frame() is not None:
            frames += 1
    assert d.pending == 0
    return frames, received, d._buf.copied


def test_many_frames_in_one_buffer_decode_without_recopying():
    """botocore re-slices its buffer per frame (quadratic in the frames of one receive); ours
    reads them in place: 20,000 frames in one receive are copied once."""
    frame = event_frame("contentBlockDelta", b'{"contentBlockIndex":0,"delta":{"text":"hi"}}')
    frames, received, copied = _decode_counting([frame * 20_000])
    assert frames == 20_000 and copied == received


@pytest.mark.parametrize("cut", [1, 7, 100, 1000, 65536])
def test_receives_cut_anywhere_copy_each_byte_a_bounded_number_of_times(cut):
    stream = b"".join([MESSAGE_START] * 5_000 + [event_frame("contentBlockDelta", b"x" * 300)] * 1_000)
    frames, received, copied = _decode_counting([stream[i:i + cut] for i in range(0, len(stream), cut)])
    assert frames == 6_000 and received == len(stream)
    assert copied <= 3 * received, f"{copied} bytes copied for {received} received"


# --- boto3's real event-stream parsing accepts our frames -------------------------------------

class _RawStream:
    """Stands in for urllib3's response: botocore only calls .stream() and .close()."""

    def __init__(self, data: bytes, chunk: int = 7):
        self._chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]

    def stream(self):
        yield from self._chunks

    def close(self):
        pass


@pytest.fixture(scope="module")
def bedrock_model():
    return botocore.session.get_session().get_service_model("bedrock-runtime")


def _boto_stream(model, operation: str, data: bytes, chunk: int = 7) -> bc.EventStream:
    shape = model.operation_model(operation).output_shape
    (member,) = [m for m in shape.members.values() if m.serialization.get("eventstream")]
    return bc.EventStream(_RawStream(data, chunk), member, EventStreamJSONParser(), operation)


def test_boto3_parses_a_converse_stream_of_our_events(bedrock_model):
    events = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5},
                      "metrics": {"latencyMs": 12}}),
    ]
    data = b"".join(event_frame(t, json.dumps(p).encode()) for t, p in events)
    assert list(_boto_stream(bedrock_model, "ConverseStream", data)) == [{t: p} for t, p in events]


def test_boto3_raises_model_stream_error_after_earlier_events(bedrock_model):
    data = (event_frame("messageStart", b'{"role":"assistant"}')
            + exception_frame("modelStreamErrorException", json.dumps(
                {"message": "model blew up", "originalStatusCode": 424,
                 "originalMessage": "upstream"}).encode()))
    it = iter(_boto_stream(bedrock_model, "ConverseStream", data))
    assert next(it) == {"messageStart": {"role": "assistant"}}
    with pytest.raises(BotoEventStreamError) as ei:
        next(it)
    assert ei.value.response["Error"] == {"Code": "modelStreamErrorException",
                                          "Message": "model blew up"}


@pytest.mark.parametrize("member", ["internalServerException", "validationException",
                                    "throttlingException", "serviceUnavailableException"])
def test_boto3_surfaces_every_converse_stream_exception_member(bedrock_model, member):
    data = exception_frame(member, b'{"message":"nope"}')
    with pytest.raises(BotoEventStreamError) as ei:
        list(_boto_stream(bedrock_model, "ConverseStream", data))
    assert ei.value.response["Error"] == {"Code": member, "Message": "nope"}


def test_boto3_blanks_an_exception_type_outside_the_union(bedrock_model):
    # why exception_frame callers must use the lowerCamel member name (protocol 2.5)
    data = exception_frame("ThrottlingException", b'{"message":"nope"}')
    with pytest.raises(BotoEventStreamError) as ei:
        list(_boto_stream(bedrock_model, "ConverseStream", data))
    assert ei.value.response["Error"]["Code"] == ""


def test_boto3_surfaces_our_error_frame(bedrock_model):
    data = event_frame("messageStart", b'{"role":"assistant"}') + error_frame("InternalFailure", "boom")
    with pytest.raises(BotoEventStreamError) as ei:
        list(_boto_stream(bedrock_model, "ConverseStream", data, chunk=1))
    assert ei.value.response["Error"] == {"Code": "InternalFailure", "Message": "boom"}


def test_boto3_parses_invoke_model_stream_chunks(bedrock_model):
    native = [b'{"type":"content_block_delta","delta":{"text":"hi"}}', b'{"type":"message_stop"}']
    data = b"".join(event_frame("chunk", json.dumps({"bytes": base64.b64encode(n).decode()}).encode())
                    for n in native)
    data += exception_frame("modelTimeoutException", b'{"message":"too slow"}')
    it = iter(_boto_stream(bedrock_model, "InvokeModelWithResponseStream", data, chunk=64))
    assert [next(it), next(it)] == [{"chunk": {"bytes": n}} for n in native]
    with pytest.raises(BotoEventStreamError) as ei:
        next(it)
    assert ei.value.response["Error"]["Code"] == "modelTimeoutException"
