"""Versioned msgpack envelopes between frontends and workers. Pure.

An envelope is a msgpack map with short fixed keys::

    v    schema version (VERSION); a peer refuses an envelope of another major version
    k    kind, one of KINDS
    id   request id (str); "" for ping/pong
    n    sequence number of a reply on its request (head=0, then 1, 2, ...); lets the frontend
         detect a lost or reordered message on a stream

and kind-specific fields:

    request  op, model, body (bin, the raw HTTP body: parsed once, by the worker), hdr (dict of
             the request headers the worker needs), reply (the frontend's PULL endpoint),
             window (initial stream credit), deadline (seconds the frontend will wait)
    head     status, hdr (list of [name, value] pairs), stream (bool)
    body     data (bin): the whole body of a non-streaming answer; follows its head
    chunk    ev: [[event type, payload], ...], one or more stream events in order (e.g.
             ["contentBlockDelta", b'{"delta":...}']); each counts against the stream credit
    end      usage (dict), meta (dict)
    error    err (GatewayError.to_wire())
    log      -: the request ended without an answer to relay (its client had gone)
    credit   grant (int): the worker may send that many more chunks
    cancel   why (optional {"status", "error"}): the frontend stopped waiting (the client went
             away, or it timed out the request); stop, settle, and log the request with `why`
    ping     reply, t: liveness probe from a frontend
    pong     wid (worker id), t, inflight

The last reply of every request (`body`, `end`, `error`, or `log`) is its *final* one and may
carry the request's outcome, which the frontend passes on (README: Request log):

    row      (bin) the request-log row, finops.shared.logrow.pack(): the frontend forwards it to
             the observer, so a row reaches the log with the answer, even if the worker dies next
    settle   [rid, key, env, cost, tokens(, saved)]: the ledger settle the worker sent; the
             frontend keeps recent ones and sends them again when a worker dies (the ledger
             counts a request id once), so a settle still queued in a killed worker is not lost

`encode()` and `decode()` are the only functions that know the byte form.
"""
from __future__ import annotations

import msgpack

VERSION = 1

REQUEST, HEAD, BODY, CHUNK, END, ERROR, LOG, CREDIT, CANCEL, PING, PONG = (
    "request", "head", "body", "chunk", "end", "error", "log", "credit", "cancel", "ping", "pong")
KINDS = frozenset({REQUEST, HEAD, BODY, CHUNK, END, ERROR, LOG, CREDIT, CANCEL, PING, PONG})
FINAL = frozenset({BODY, END, ERROR, LOG})      # the last reply of a request


class EnvelopeError(ValueError):
    """An envelope that cannot be decoded or has the wrong version or kind."""


_packb = msgpack.Packer(use_bin_type=True).pack


def encode(kind: str, rid: str = "", **fields) -> bytes:
    fields["v"] = VERSION
    fields["k"] = kind
    fields["id"] = rid
    return _packb(fields)


def decode(data: bytes) -> dict:
    try:
        env = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated exception types
        raise EnvelopeError(f"undecodable envelope ({len(data)} bytes): {e}") from None
    if not isinstance(env, dict):
        raise EnvelopeError(f"envelope is a {type(env).__name__}, not a map")
    if env.get("v") != VERSION:
        raise EnvelopeError(f"envelope version {env.get('v')!r}, this build speaks {VERSION}")
    k = env.get("k")
    if not isinstance(k, str) or k not in KINDS:  # isinstance first: a list/map kind is unhashable
        raise EnvelopeError(f"unknown envelope kind {k!r}")
    return env


# --- builders, so every sender spells the fields the same way ------------------------------

def request(rid: str, op: str, model: str, body: bytes, hdr: dict, reply: str, window: int,
            deadline: float, path: str = "") -> bytes:
    """`path` is the raw request target (percent-encoding and query intact): SigV4 signs it."""
    return encode(REQUEST, rid, op=op, model=model, body=body, hdr=hdr, reply=reply,
                  window=window, deadline=deadline, path=path)


def head(rid: str, status: int, hdr: list, stream: bool) -> bytes:
    return encode(HEAD, rid, n=0, status=status, hdr=hdr, stream=stream)


def _outcome(fields: dict, row: bytes | None, settle: list | None) -> dict:
    if row is not None:
        fields["row"] = row
    if settle is not None:
        fields["settle"] = settle
    return fields


def body(rid: str, n: int, data: bytes, row: bytes | None = None, settle: list | None = None) -> bytes:
    return encode(BODY, rid, **_outcome({"n": n, "data": data}, row, settle))


def chunk(rid: str, n: int, events: list) -> bytes:
    """Stream events [(event_type, payload bytes), ...] that go out in this order."""
    return encode(CHUNK, rid, n=n, ev=events)


def end(rid: str, n: int, usage: dict | None = None, meta: dict | None = None,
        row: bytes | None = None, settle: list | None = None) -> bytes:
    return encode(END, rid, **_outcome({"n": n, "usage": usage or {}, "meta": meta or {}}, row, settle))


def error(rid: str, n: int, err: dict, row: bytes | None = None, settle: list | None = None) -> bytes:
    return encode(ERROR, rid, **_outcome({"n": n, "err": err}, row, settle))


def log(rid: str, n: int, row: bytes | None = None, settle: list | None = None) -> bytes:
    """The outcome of a request that has no answer to relay (the frontend stopped waiting)."""
    return encode(LOG, rid, **_outcome({"n": n}, row, settle))


def credit(rid: str, grant: int) -> bytes:
    return encode(CREDIT, rid, grant=grant)


def cancel(rid: str, why: dict | None = None) -> bytes:
    """`why`: {"status": int, "error": str} when the frontend answered the client itself (a
    timeout); without it the client went away."""
    return encode(CANCEL, rid, why=why) if why else encode(CANCEL, rid)


def ping(reply: str, t: float) -> bytes:
    return encode(PING, "", reply=reply, t=t)


def pong(wid: str, t: float, inflight: int) -> bytes:
    return encode(PONG, "", wid=wid, t=t, inflight=inflight)


class SequenceChecker:
    """Checks the replies of one request arrive in order, head first. Pure.

    `check(env)` returns None when the envelope is the next expected one, else a one-line reason.
    """

    __slots__ = ("expected",)

    def __init__(self) -> None:
        self.expected = 0

    def check(self, env: dict) -> str | None:
        n = env.get("n")
        if n != self.expected:
            return f"reply {env.get('k')} #{n} arrived, #{self.expected} expected"
        self.expected += 1
        return None
