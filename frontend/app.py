"""The ASGI application: the only code that sees ASGI messages.

For each request: match the raw path, read the body (bounded by `max_body_bytes`), hand it to the
least-busy live worker as a `request` envelope, and relay what comes back:

    head + body           -> one HTTP response
    head + chunk* + end   -> 200 application/vnd.amazon.eventstream, chunked, one frame per send
    error before the head -> an AWS error response (X-Amzn-ErrorType, JSON message)
    error after the head  -> an exception frame, then the end of the stream (never a quiet close)

No provider logic lives here, and the body is not parsed: the worker parses it once. Every
response carries `x-amzn-RequestId`.
"""
from __future__ import annotations

import hmac
import json
import logging
import time
import uuid

import trio

from finops.shared import envelope, errors, eventstream
from finops.shared.config import Config

from . import routes, ui_static
from .dispatch import WorkerLost, WorkerPool

ADMIN_PREFIX = b"/admin/"
METRICS = b"/metrics"
ADMIN = "admin"             # envelope op of /admin/... and /metrics: the worker matches the route (workers/admin/)
log = logging.getLogger("finops.frontend")

EVENTSTREAM = b"application/vnd.amazon.eventstream"
MAX_FRAMES_PER_WRITE = 64   # frames already queued that go out in one HTTP chunk
WATCH_DISCONNECT_AFTER = 0.05  # seconds a non-streaming answer may take before we watch for disconnect


class App:
    def __init__(self, cfg: Config, pool: WorkerPool):
        self.cfg = cfg
        self.pool = pool
        self.draining = False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":      # hypercorn answered a refused handshake with a bare 500
            await send_error(send, str(uuid.uuid4()), errors.GatewayError(
                "ValidationException", "This endpoint speaks HTTP, not WebSocket: send the request "
                "without 'Upgrade: websocket' (the Bedrock Runtime API streams over event streams).", 400),
                kind="websocket.http.response")

    # --- one request ---------------------------------------------------------------------
    async def http(self, scope, receive, send):
        rid = str(uuid.uuid4())
        started = time.time()
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if raw_path in (b"/health", b"/bedrock/health") and scope["method"] == "GET":
            return await self.health(rid, send)
        if ui_static.is_ui_path(raw_path) and scope["method"] in ("GET", "HEAD"):   # the dashboard's files
            found = ui_static.lookup(raw_path)
            if found is None:
                return await send_error(send, rid, errors.GatewayError(
                    "ResourceNotFoundException", "No such dashboard file; the dashboard is at /ui/.", 404))
            body, headers = found
            headers.append((b"x-amzn-requestid", rid.encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            return await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
        try:
            if raw_path.startswith(ADMIN_PREFIX):
                route = routes.Route(ADMIN, "")
                self.check_admin(scope)
            elif raw_path == METRICS and scope["method"] == "GET":
                # Prometheus metrics, served by a worker from the observer actor (whole gateway)
                route = routes.Route(ADMIN, "")
                if self.cfg.observability.metrics_auth:
                    self.check_admin(scope)
            else:
                route = routes.match(scope["method"], raw_path)
        except errors.GatewayError as e:
            extra = [(b"allow", b"POST")] if e.status == 405 else []
            return await send_error(send, rid, e, extra)
        hdr = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        req = Inbound(rid, started, route, hdr)
        try:
            body = await read_body(scope, receive, self.cfg.server.max_body_bytes)
        except errors.GatewayError as e:
            self.failed(req, e)
            return await send_error(send, rid, e, [(b"connection", b"close")])
        except ClientGone:
            return
        worker = self.pool.choose()
        if worker is None:
            try:
                worker = await self.wait_for_worker(receive)
            except ClientGone:
                return                     # nothing was dispatched: nothing to cancel
            if worker is None:
                wait = self.cfg.server.worker_wait_seconds
                e = errors.unavailable(f"No gateway worker became available within {wait:g}s "
                                       "(server.worker_wait_seconds); the gateway restarts failed workers, "
                                       "retry shortly.")
                self.failed(req, e)
                return await send_error(send, rid, e)
        if route.op == ADMIN:
            hdr[":method"] = scope["method"]
            self.pool.outcomes.flush()      # a report sees the requests this frontend answered before it
        pending = self.pool.open(rid, worker)
        try:
            await self.pool.send(worker, envelope.encode(envelope.Request(
                rid=rid, op=route.op, model=route.model_id, body=body, headers=hdr,
                reply=self.pool.reply_endpoint, window=self.cfg.server.stream_window,
                deadline=self.cfg.server.request_timeout_seconds, path=raw_target(scope))))
            first = None
            if route.op not in routes.STREAMING:
                # Most non-streaming answers are back within milliseconds: relay those without a
                # disconnect watcher (a task per request). A slower one gets the watcher, so a
                # client that gives up cancels the upstream call.
                with trio.move_on_after(WATCH_DISCONNECT_AFTER):
                    first = await pending.recv_ch.receive()
            if first is not None:
                await self.relay(req, pending, send, first)
            else:
                answered = Answered(send)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope, answered)
                    await self.relay(req, pending, answered.send)
                    nursery.cancel_scope.cancel()
        finally:
            self.pool.close(pending)
            if not pending.finished:        # the worker logs it, with why the frontend stopped waiting
                self.pool.send_nowait(worker, envelope.encode(envelope.Cancel(rid=rid, why=pending.why)))

    async def wait_for_worker(self, receive):
        """No worker is live: wait up to server.worker_wait_seconds for one (None if none came).
        Raises ClientGone when the client disconnects while waiting."""
        worker, gone = None, False
        async with trio.open_nursery() as nursery:
            async def watch():
                nonlocal gone
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
                nursery.cancel_scope.cancel()
            nursery.start_soon(watch)
            worker = await self.pool.wait_choose(self.cfg.server.worker_wait_seconds)
            nursery.cancel_scope.cancel()
        if gone:
            raise ClientGone()
        return worker

    def failed(self, req: "Inbound", e: errors.GatewayError, *, stream: bool = False, messages: int = 0) -> None:
        """Log a request the frontend answered itself, with no worker row to show for it (a body
        over the limit, no live worker, its worker died): frontend/outcomes.py."""
        if req.route.op != ADMIN:
            self.pool.outcomes.failure(req.rid, req.started, req.route.op, req.route.model_id, req.hdr,
                                       200 if stream else e.status, e.code, stream, messages)

    async def relay(self, req: "Inbound", pending, send, msg=None) -> None:
        """Relay the worker's replies (`msg`: the first, if already received) to the client.
        A reply is an envelope (finops.shared.envelope) or the pool's own WorkerLost."""
        rid = req.rid
        timeout = self.cfg.server.request_timeout_seconds
        recv = pending.recv_ch
        if msg is None:
            with trio.move_on_after(timeout) as scope:
                msg = await recv.receive()
            if scope.cancelled_caught:
                pending.why = envelope.Why(408, "ModelTimeoutException", "upstream")
                return await send_error(send, rid, errors.model_timeout(
                    f"The model did not answer within {timeout:.0f}s (server.request_timeout_seconds)."))
        kind = type(msg)
        if kind is envelope.Error or kind is WorkerLost:
            e = errors.GatewayError.from_wire(msg.error)
            if kind is WorkerLost:          # its worker died: no worker row will come
                self.failed(req, e, messages=0)
            return await send_error(send, rid, e)
        if kind is not envelope.Head or pending.seq.check(msg):
            log.error("request %s: expected head, got %s", rid, envelope.kind(msg))
            pending.why = envelope.Why(500, "InternalServerException", "gateway")
            return await send_error(send, rid, errors.internal())
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in msg.headers]
        headers.append((b"x-amzn-requestid", rid.encode()))
        if not msg.stream:
            try:
                nxt = recv.receive_nowait()     # the body mostly came with the head: no timer then
            except trio.WouldBlock:
                nxt = None
                with trio.move_on_after(timeout):
                    nxt = await recv.receive()
            kind = type(nxt)
            if kind is envelope.Body and not pending.seq.check(nxt):
                headers.append((b"content-length", str(len(nxt.data)).encode()))
                await send({"type": "http.response.start", "status": msg.status, "headers": headers})
                return await send({"type": "http.response.body", "body": nxt.data})
            if kind is envelope.Error or kind is WorkerLost:
                e = errors.GatewayError.from_wire(nxt.error)
                if kind is WorkerLost:
                    self.failed(req, e, messages=1)
                return await send_error(send, rid, e)
            pending.why = envelope.Why(500, "InternalServerException", "gateway")
            return await send_error(send, rid, errors.internal())
        await self.relay_stream(req, pending, msg.status, headers, send)

    async def relay_stream(self, req: "Inbound", pending, status, headers, send) -> None:
        """Relay stream chunks as event-stream frames; a failure ends it with an exception frame.

        Each frame is written as soon as it is here. Frames that are already queued when the
        client's socket is free are written together in one HTTP chunk: nothing is held back to
        wait for more, and a busy gateway saves a write per frame.
        """
        rid = req.rid
        invoke = req.route.op == routes.INVOKE_STREAM
        await send({"type": "http.response.start", "status": status, "headers": headers})
        received = 1
        grant_at = max(1, self.cfg.server.stream_window // 2)
        consumed = 0
        worker = pending.worker
        recv = pending.recv_ch
        idle = self.cfg.server.request_timeout_seconds
        event_frame = eventstream.event_frame
        while True:
            out = []
            err = None
            finished = False
            with trio.move_on_after(idle) as scope:
                msg = await recv.receive()
            if scope.cancelled_caught:
                err = errors.model_timeout(f"The model sent nothing for {idle:.0f}s mid-stream.")
                pending.why = envelope.Why(200, err.code, "upstream")
            while err is None:
                kind = type(msg)
                received += 1
                if kind is WorkerLost:      # its worker died mid-stream: no worker row will come
                    err = errors.GatewayError.from_wire(msg.error)
                    self.failed(req, err, stream=True, messages=received - 1)
                elif bad := pending.seq.check(msg):
                    log.error("request %s: %s", rid, bad)
                    err = errors.internal("The gateway lost part of this stream internally; retry the request.")
                    pending.why = envelope.Why(200, err.code, "gateway")
                elif kind is envelope.Chunk:
                    events = msg.events
                    for et, data in events:
                        out.append(event_frame(et, data))
                    consumed += len(events)
                elif kind is envelope.End:
                    finished = True
                elif kind is envelope.Error:
                    err = errors.GatewayError.from_wire(msg.error)
                else:
                    err = errors.internal()
                if finished or err is not None or len(out) >= MAX_FRAMES_PER_WRITE:
                    break
                try:
                    msg = recv.receive_nowait()
                except trio.WouldBlock:
                    break
            if err is not None:
                member = err.stream_member(invoke)
                out.append(eventstream.exception_frame(member, err.stream_payload(member)))
                finished = True
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": not finished})
            if finished:
                return
            if consumed >= grant_at:
                self.pool.send_nowait(worker, envelope.encode(envelope.Credit(rid=rid, grant=consumed)))
                consumed = 0

    def check_admin(self, scope) -> None:
        """The admin API (/admin/...) answers only with `Authorization: Bearer <governance.admin_token>`."""
        token = self.cfg.governance.admin_token
        if not token:
            raise errors.GatewayError("ResourceNotFoundException",
                                      "The admin API is off: set governance.admin_token in the config.", 404)
        got = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
        if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
            raise errors.GatewayError("AccessDeniedException",
                                      "The admin API needs Authorization: Bearer <governance.admin_token>.", 401)

    async def health(self, rid, send):
        live = len(self.pool.live_workers())
        ok = live > 0 and not self.draining
        body = json.dumps({"status": "ok" if ok else "unavailable", "workers_live": live,
                           "draining": self.draining}).encode()
        await send({"type": "http.response.start", "status": 200 if ok else 503,
                    "headers": [(b"content-type", b"application/json"), (b"x-amzn-requestid", rid.encode())]})
        await send({"type": "http.response.body", "body": body})


class Inbound:
    """What the frontend knows of one request: enough to log it when no worker can."""
    __slots__ = ("rid", "started", "route", "hdr")

    def __init__(self, rid: str, started: float, route: routes.Route, hdr: dict):
        self.rid, self.started, self.route, self.hdr = rid, started, route, hdr


class ClientGone(Exception):
    pass


def raw_target(scope) -> str:
    """The request target as the client sent it: raw path (still percent-encoded) and query."""
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    q = scope.get("query_string") or b""
    return path + ("?" + q.decode("latin-1") if q else "")


async def read_body(scope, receive, limit: int) -> bytes:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                n = int(v)
            except ValueError:
                raise errors.validation("Content-Length: not a number") from None
            if n > limit:
                raise too_large(n, limit)
            break
    chunks = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        data = msg.get("body", b"")
        if data:
            size += len(data)
            if size > limit:
                raise too_large(size, limit)
            chunks.append(data)
        if not msg.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(size: int, limit: int) -> errors.GatewayError:
    return errors.GatewayError(
        "ValidationException",
        f"body: {size} bytes is over the gateway's limit of {limit} bytes (server.max_body_bytes).", 413)


class Answered:
    """`send`, noting when the answer's last body message goes out (see watch_disconnect)."""

    __slots__ = ("_send", "done")

    def __init__(self, send):
        self._send = send
        self.done = False

    async def send(self, msg: dict) -> None:
        if msg["type"] == "http.response.body" and not msg.get("more_body"):
            self.done = True
        await self._send(msg)


async def watch_disconnect(receive, cancel_scope: trio.CancelScope, answered: Answered) -> None:
    """Cancel the request when the client goes away (ASGI http.disconnect) before its answer is
    complete. Hypercorn also reports http.disconnect for a completed answer, from inside the
    last send: cancelling then would interrupt its keep-alive bookkeeping, and the connection,
    never marked idle, would hold a drain for the whole server.drain_seconds."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            if not answered.done:
                cancel_scope.cancel()
            return


async def send_error(send, rid: str, err: errors.GatewayError, extra_headers=(),
                     kind: str = "http.response") -> None:
    """The AWS-shaped answer of `err`; `kind` "websocket.http.response" refuses a WebSocket handshake."""
    body = err.http_body()
    headers = err.http_headers(rid)
    headers.append((b"content-length", str(len(body)).encode()))
    headers.extend(extra_headers)
    await send({"type": f"{kind}.start", "status": err.status, "headers": headers})
    await send({"type": f"{kind}.body", "body": body})
