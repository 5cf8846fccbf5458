"""Typed, versioned envelopes between frontends and workers. Pure.

Each kind of message is a frozen record (a msgspec Struct), read by attribute. `encode()` writes
one as a msgpack map; `decode()` reads bytes back into the record of its kind, checking the type of
every field, or raises EnvelopeError with a one-line reason. They are the only functions that know
the byte form.

On the wire an envelope is a msgpack map with short keys (the record's attribute, where it differs,
in parentheses):

    v    schema version (VERSION); a peer refuses an envelope of another version
    k    kind: the record's tag, one of KINDS
    id   (rid) request id; ping and pong have none
    n    sequence number of a reply on its request (head=0, then 1, 2, ...); lets the frontend
         detect a lost or reordered message on a stream (SequenceChecker)

and the fields of each kind:

    Request  op, model, body (bin, the raw HTTP body: parsed once, by the worker), hdr (headers:
             the request headers the worker needs), reply (the frontend's PULL endpoint),
             window (initial stream credit), deadline (seconds the frontend will wait), path (the
             raw request target, percent-encoding and query intact: SigV4 signs it)
    Head     status, hdr (headers: [name, value] pairs), stream (bool)
    Body     data (bin): the whole body of a non-streaming answer; follows its head
    Chunk    ev (events): [[event type, payload], ...], one or more stream events in order (e.g.
             ["contentBlockDelta", b'{"delta":...}']); each counts against the stream credit
    End      usage ({"in", "out", "cr", "cw", "cw1h"?}: the integer counts of Usage.to_wire(), finops.shared.model)
    Error    err (error): errors.WireError, what GatewayError.to_wire() gives
    Log      -: the request ended without an answer to relay (its client had gone)
    Credit   grant (int): the worker may send that many more chunks
    Cancel   why (optional Why: status, error, origin): the frontend stopped waiting (the client
             went away, or it timed out the request); stop, settle, and log the request with `why`
    Ping     reply, t: liveness probe from a frontend
    Pong     wid (worker id), t, inflight

The last reply of every request (Body, End, Error or Log: a `Final`) may carry the request's
outcome, which the frontend passes on (README: Request log):

    row      (bin) the request-log row, finops.shared.logrow.pack(): the frontend forwards it to
             the observer, so a row reaches the log with the answer, even if the worker dies next
    settle   [rid, key, env, cost, tokens(, saved)]: the ledger settle the worker sent; the
             frontend keeps recent ones and sends them again when a worker dies (the ledger
             counts a request id once), so a settle still queued in a killed worker is not lost

Absent optional fields (row, settle, why, an empty usage, a default path) are not written.

Decoding. A map of a known kind whose fields have the declared types decodes to its record; any
other field in it is ignored, so a later revision may add an optional field that an older peer can
skip (a change an older peer must not skip bumps VERSION). Everything else is refused: bytes that
are not msgpack, a msgpack value that is not a map, another version, an unknown kind, a missing
required field, a field of the wrong type (`invalid head envelope: Expected int, got str - at
$.status`). Every sender writes `v`; a map without one is read as this version.

Building. Records are built by keyword (`Head(rid=rid, n=0, status=200, headers=[], stream=False)`);
a missing required field is a TypeError and a record cannot be changed once built. Field types are
checked where it matters, at the receiving end's decode. The decoded containers are tuples
(headers pairs, events, settle); a sender may pass lists, which encode the same.

Cost. scripts/envelope_cost.py times these records against the msgpack maps they replaced (builder
functions over dicts, read by key), in one process, alternating, with a Converse request's sizes:
microseconds per envelope, best of 7 rounds of 20000, Python 3.11, a shared 2-core machine:

    kind               build+encode old     new  decode+read old     new bytes old   new
    request                        3.35    1.04             3.19    1.28       611   611
    head                           1.79    0.50             1.60    0.73       145   145
    chunk, 1 event                 0.97    0.38             1.40    0.87       152   152
    chunk, 20 events               4.13    1.53             5.67    5.24      1902  1902
    body + outcome                 2.24    1.00             2.94    0.90       855   855
    end + outcome                  3.13    0.45             2.23    1.24       413   407
    error + outcome                2.90    0.73             2.92    0.96       499   499
    log + outcome                  2.19    0.40             1.56    0.93       391   391
    credit                         0.72    0.28             1.40    0.45        61    61
    cancel                         1.08    0.62             1.71    0.49       113   113
    ping                           0.73    0.33             1.26    0.31        70    66
    pong                           1.34    0.48             2.32    0.93        46    42
    sum                           24.56    7.75            28.19   14.34

Every kind is cheaper to build+encode and to decode+read, and no byte form grew (ping and pong
dropped their empty `id`, an end its empty `meta`, which nothing read).
"""
from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

from .errors import WireError

VERSION = 1


class EnvelopeError(ValueError):
    """An envelope that cannot be decoded: not msgpack, another version, an unknown kind, or a
    field missing or of the wrong type."""


class Envelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False, tag_field="k"):
    """Every envelope: the schema version (always written: `v` has no plain default)."""
    v: Literal[VERSION] = msgspec.field(default_factory=lambda: VERSION)


class PerRequest(Envelope, frozen=True, kw_only=True):
    """An envelope about one request."""
    rid: str = msgspec.field(name="id")


class Sequenced(PerRequest, frozen=True, kw_only=True):
    """A reply on a request, numbered in order from the head's 0."""
    n: int


class Final(Sequenced, frozen=True, kw_only=True):
    """The last reply of a request, with its outcome (row, settle) when it has one."""
    row: bytes | None = None
    settle: tuple[Union[str, int, float], ...] | None = None


class Why(msgspec.Struct, frozen=True, gc=False):
    """Why the frontend stopped waiting when it answered the client itself: the status and AWS
    error code it answered with, and who failed ("upstream" or "gateway")."""
    status: int
    error: str
    origin: str


# --- frontend -> worker ---------------------------------------------------------------------

class Request(PerRequest, frozen=True, kw_only=True, tag="request"):
    op: str
    model: str
    body: bytes
    headers: dict[str, str] = msgspec.field(name="hdr")
    reply: str
    window: int
    deadline: float
    path: str = ""


class Credit(PerRequest, frozen=True, kw_only=True, tag="credit"):
    grant: int


class Cancel(PerRequest, frozen=True, kw_only=True, tag="cancel"):
    why: Why | None = None      # None: the client went away


class Ping(Envelope, frozen=True, kw_only=True, tag="ping"):
    reply: str
    t: float


# --- worker -> frontend ---------------------------------------------------------------------

class Pong(Envelope, frozen=True, kw_only=True, tag="pong"):
    wid: str
    t: float
    inflight: int


class Head(Sequenced, frozen=True, kw_only=True, tag="head"):
    status: int
    headers: tuple[tuple[str, str], ...] = msgspec.field(name="hdr")
    stream: bool


class Chunk(Sequenced, frozen=True, kw_only=True, tag="chunk"):
    events: tuple[tuple[str, bytes], ...] = msgspec.field(name="ev")


class Body(Final, frozen=True, kw_only=True, tag="body"):
    data: bytes


class End(Final, frozen=True, kw_only=True, tag="end"):
    usage: dict[str, int] = {}


class Error(Final, frozen=True, kw_only=True, tag="error"):
    error: WireError = msgspec.field(name="err")


class Log(Final, frozen=True, kw_only=True, tag="log"):
    """The outcome of a request that has no answer to relay (the frontend stopped waiting)."""


RECORDS = (Request, Credit, Cancel, Ping, Pong, Head, Chunk, Body, End, Error, Log)
KINDS = frozenset(t.__struct_config__.tag for t in RECORDS)


def kind(msg: Envelope) -> str:
    """The wire name of an envelope's kind ("head", "chunk", ...)."""
    return msg.__struct_config__.tag


_decoder = msgspec.msgpack.Decoder(Union[RECORDS])   # type: ignore[valid-type]
_encoder = msgspec.msgpack.Encoder()

encode = _encoder.encode
"""encode(msg: Envelope) -> bytes: the envelope's byte form."""


def decode(data: bytes) -> Envelope:
    """The record `data` holds; EnvelopeError, with a one-line reason, when it holds none."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise EnvelopeError(_refusal(data, e)) from None


def _refusal(data: bytes, e: msgspec.DecodeError) -> str:
    """Why `data` was refused, from its untyped reading: the first of undecodable, not a map,
    another version, an unknown kind, or the typed decoder's own reason."""
    try:
        raw = msgspec.msgpack.decode(data)
    except msgspec.DecodeError as e2:
        return f"undecodable envelope ({len(data)} bytes): {e2}"
    if not isinstance(raw, dict):
        return f"envelope is a {type(raw).__name__}, not a map"
    if raw.get("v", VERSION) != VERSION:
        return f"envelope version {raw.get('v')!r}, this build speaks {VERSION}"
    k = raw.get("k")
    if not isinstance(k, str) or k not in KINDS:  # isinstance first: a list/map kind is unhashable
        return f"unknown envelope kind {k!r}"
    return f"invalid {k} envelope: {e}"


class SequenceChecker:
    """Checks the replies of one request arrive in order, head first. Pure.

    `check(msg)` returns None when the envelope is the next expected one, else a one-line reason.
    """

    __slots__ = ("expected",)

    def __init__(self) -> None:
        self.expected = 0

    def check(self, msg: Envelope) -> str | None:
        n = getattr(msg, "n", None)
        if n != self.expected:
            return f"reply {kind(msg)} #{n} arrived, #{self.expected} expected"
        self.expected += 1
        return None
