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
    credit   grant (int): the worker may send that many more chunks
    cancel   -: the client went away; stop and settle
    ping     reply, t: liveness probe from a frontend
    pong     wid (worker id), t, inflight

`encode()` and `decode()` are the only functions that know the byte form.
"""
from __future__ import annotations

import msgpack

VERSION = 1

REQUEST, HEAD, BODY, CHUNK, END, ERROR, CREDIT, CANCEL, PING, PONG = (
    "request", "head", "body", "chunk", "end", "error", "credit", "cancel", "ping", "pong")
KINDS = frozenset({REQUEST, HEAD, BODY, CHUNK, END, ERROR, CREDIT, CANCEL, PING, PONG})


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


def body(rid: str, n: int, data: bytes) -> bytes:
    return encode(BODY, rid, n=n, data=data)


def chunk(rid: str, n: int, events: list) -> bytes:
    """Stream events [(event_type, payload bytes), ...] that go out in this order."""
    return encode(CHUNK, rid, n=n, ev=events)


def end(rid: str, n: int, usage: dict | None = None, meta: dict | None = None) -> bytes:
    return encode(END, rid, n=n, usage=usage or {}, meta=meta or {})


def error(rid: str, n: int, err: dict) -> bytes:
    return encode(ERROR, rid, n=n, err=err)


def credit(rid: str, grant: int) -> bytes:
    return encode(CREDIT, rid, grant=grant)


def cancel(rid: str) -> bytes:
    return encode(CANCEL, rid)


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
