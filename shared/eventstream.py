"""AWS event-stream framing (application/vnd.amazon.eventstream), pure.

Theory of operation
-------------------
A frame is::

    total_length   uint32 BE   12 + headers_length + payload_length + 4
    headers_length uint32 BE
    prelude_crc    uint32 BE   CRC32 of the 8 bytes above
    headers        H bytes     name_len u8 | name | type u8 | value
    payload        P bytes
    message_crc    uint32 BE   CRC32 of everything before it (prelude CRC included)

`encode_frame()` turns headers and a payload into frame bytes. `event_frame()` and
`exception_frame()` build the two kinds Bedrock sends. `FrameDecoder` is sans-I/O: feed it bytes
with `receive_data()`, then iterate `frames()`; a partial frame stays buffered until the rest
arrives. Offsets are used instead of re-slicing, so decoding a long stream stays linear.

Limits follow botocore's decoder (botocore/eventstream.py): headers at most 128 KiB, payload at
most 24 MiB. The prelude CRC is checked before any length is trusted.
"""
from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

MAX_HEADERS_LENGTH = 128 * 1024        # botocore _MAX_HEADERS_LENGTH
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024  # botocore _MAX_PAYLOAD_LENGTH
PRELUDE_LENGTH = 12                   # total length, headers length, prelude CRC: 4 bytes each
MESSAGE_CRC_LENGTH = 4                # the CRC-32 closing every message

_PRELUDE = struct.Struct(">III")
_U32 = struct.Struct(">I")
_crc32 = zlib.crc32


class EventStreamError(ValueError):
    """The peer sent bytes that are not a valid event-stream frame."""


class ChecksumMismatch(EventStreamError):
    def __init__(self, what: str, expected: int, calculated: int):
        super().__init__(f"{what} CRC mismatch: expected 0x{expected:08x}, calculated 0x{calculated:08x}")
        self.expected = expected
        self.calculated = calculated


class InvalidHeadersLength(EventStreamError):
    pass


class InvalidPayloadLength(EventStreamError):
    pass


class DuplicateHeader(EventStreamError):
    pass


class InvalidHeader(EventStreamError):
    pass


# --- encoding -----------------------------------------------------------------------------

def _encode_header(name: str, value: object) -> bytes:
    """One header. str -> type 7, bytes -> 6, bool -> 0/1, int -> 4 (int32) or 5 (int64), UUID -> 9."""
    n = name.encode("utf-8")
    if len(n) > 255:
        raise ValueError(f"header name too long ({len(n)} bytes): {name[:40]!r}")
    head = bytes((len(n),)) + n
    if value is True:
        return head + b"\x00"
    if value is False:
        return head + b"\x01"
    if isinstance(value, str):
        v = value.encode("utf-8")
        return head + b"\x07" + struct.pack(">H", len(v)) + v
    if isinstance(value, (bytes, bytearray)):
        return head + b"\x06" + struct.pack(">H", len(value)) + bytes(value)
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return head + b"\x04" + struct.pack(">i", value)
        return head + b"\x05" + struct.pack(">q", value)
    if isinstance(value, uuid.UUID):
        return head + b"\x09" + value.bytes
    raise TypeError(f"unsupported header value type for {name!r}: {type(value).__name__}")


def encode_headers(headers: dict[str, object] | list[tuple[str, object]]) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    return b"".join(_encode_header(k, v) for k, v in items)


def encode_frame(headers: bytes | dict | list, payload: bytes) -> bytes:
    """Frame `payload` with `headers` (pre-encoded bytes, a dict or a list of pairs)."""
    hb = headers if isinstance(headers, (bytes, bytearray)) else encode_headers(headers)
    total = PRELUDE_LENGTH + len(hb) + len(payload) + MESSAGE_CRC_LENGTH
    prelude = struct.pack(">II", total, len(hb))
    prelude_crc = _crc32(prelude)
    buf = bytearray(prelude)
    buf += _U32.pack(prelude_crc)
    buf += hb
    buf += payload
    buf += _U32.pack(_crc32(buf[8:], prelude_crc))
    return bytes(buf)


_EVENT_SUFFIX = encode_headers([(":content-type", "application/json"), (":message-type", "event")])
_EXCEPTION_SUFFIX = encode_headers([(":content-type", "application/json"), (":message-type", "exception")])
_event_header_cache: dict[str, bytes] = {}


def event_frame(event_type: str, payload: bytes) -> bytes:
    """A normal event: `:event-type`, `:content-type: application/json`, `:message-type: event`."""
    hb = _event_header_cache.get(event_type)
    if hb is None:
        hb = _encode_header(":event-type", event_type) + _EVENT_SUFFIX
        if len(_event_header_cache) < 256:
            _event_header_cache[event_type] = hb
    return encode_frame(hb, payload)


def exception_frame(exception_type: str, payload: bytes) -> bytes:
    """A modeled exception: `:exception-type` is the lowerCamel union member name."""
    return encode_frame(_encode_header(":exception-type", exception_type) + _EXCEPTION_SUFFIX, payload)


def error_frame(code: str, message: str) -> bytes:
    """An unmodeled error frame (`:message-type: error`), empty payload."""
    return encode_frame([(":error-code", code), (":error-message", message), (":message-type", "error")], b"")


# --- decoding -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Frame:
    headers: dict[str, object]
    payload: bytes

    @property
    def message_type(self) -> str:
        return self.headers.get(":message-type", "event")  # type: ignore[return-value]

    @property
    def event_type(self) -> str | None:
        return self.headers.get(":event-type")  # type: ignore[return-value]

    @property
    def exception_type(self) -> str | None:
        return self.headers.get(":exception-type")  # type: ignore[return-value]


def _utf8(raw, what: str) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:  # peer garbage must surface as EventStreamError, not ValueError
        raise InvalidHeader(f"{what} is not valid UTF-8: {e.reason} at byte {e.start}") from None


def decode_headers(data: bytes | memoryview) -> dict[str, object]:
    headers: dict[str, object] = {}
    mv = memoryview(data)
    i, end = 0, len(mv)
    while i < end:
        nlen = mv[i]
        i += 1
        if i + nlen + 1 > end:
            raise InvalidHeader("header name runs past the end of the headers block")
        name = _utf8(mv[i:i + nlen], "header name")
        i += nlen
        htype = mv[i]
        i += 1
        if htype == 0:
            value: object = True
        elif htype == 1:
            value = False
        elif htype in (2, 3, 4, 5, 8):
            size = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8}[htype]
            if i + size > end:
                raise InvalidHeader(f"header {name!r} value runs past the end")
            value = int.from_bytes(mv[i:i + size], "big", signed=True)
            i += size
        elif htype in (6, 7):
            if i + 2 > end:
                raise InvalidHeader(f"header {name!r} length runs past the end")
            vlen = int.from_bytes(mv[i:i + 2], "big")
            i += 2
            if i + vlen > end:
                raise InvalidHeader(f"header {name!r} value runs past the end")
            raw = bytes(mv[i:i + vlen])
            value = _utf8(raw, f"header {name!r} value") if htype == 7 else raw
            i += vlen
        elif htype == 9:
            if i + 16 > end:
                raise InvalidHeader(f"header {name!r} uuid runs past the end")
            value = uuid.UUID(bytes=bytes(mv[i:i + 16]))
            i += 16
        else:
            raise InvalidHeader(f"header {name!r} has unknown type {htype}")
        if name in headers:
            raise DuplicateHeader(f"duplicate header {name!r}")
        headers[name] = value
    return headers


class FrameDecoder:
    """Sans-I/O decoder: `receive_data(bytes)`, then iterate `frames()`.

    Raises an `EventStreamError` subclass on corrupt input; after that the decoder refuses further
    use. `pending` is the number of buffered bytes of an incomplete frame.
    """

    __slots__ = ("_buf", "_pos", "_broken")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._broken: str | None = None

    @property
    def pending(self) -> int:
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        if self._broken:
            raise EventStreamError(f"decoder unusable after earlier error: {self._broken}")
        if self._pos and self._pos > len(self._buf) // 2:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None when more data is needed."""
        try:
            return self._next()
        except EventStreamError as e:
            self._broken = str(e)
            raise

    def _next(self) -> Frame | None:
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < PRELUDE_LENGTH:
            return None
        total, hlen, pcrc = _PRELUDE.unpack_from(buf, pos)
        calc = _crc32(memoryview(buf)[pos:pos + 8])
        if calc != pcrc:
            raise ChecksumMismatch("prelude", pcrc, calc)
        if hlen > MAX_HEADERS_LENGTH:
            raise InvalidHeadersLength(f"headers length {hlen} exceeds {MAX_HEADERS_LENGTH}")
        plen = total - hlen - PRELUDE_LENGTH - MESSAGE_CRC_LENGTH
        if plen < 0:
            raise InvalidPayloadLength(f"total length {total} too small for headers length {hlen}")
        if plen > MAX_PAYLOAD_LENGTH:
            raise InvalidPayloadLength(f"payload length {plen} exceeds {MAX_PAYLOAD_LENGTH}")
        if avail < total:
            return None
        mv = memoryview(buf)
        (mcrc,) = _U32.unpack_from(buf, pos + total - 4)
        calc = _crc32(mv[pos + 8:pos + total - 4], pcrc)
        if calc != mcrc:
            raise ChecksumMismatch("message", mcrc, calc)
        hstart = pos + PRELUDE_LENGTH
        headers = decode_headers(mv[hstart:hstart + hlen])
        payload = bytes(mv[hstart + hlen:pos + total - 4])
        mv.release()
        self._pos = pos + total
        return Frame(headers, payload)

    def frames(self):
        while (f := self.next_frame()) is not None:
            yield f


def decode_all(data: bytes) -> list[Frame]:
    """Decode a complete byte string; raises if bytes are left over."""
    d = FrameDecoder()
    d.receive_data(data)
    out = list(d.frames())
    if d.pending:
        raise EventStreamError(f"{d.pending} trailing bytes do not form a whole frame")
    return out
