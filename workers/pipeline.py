"""One request, start to finish, in one readable function: `Pipeline.handle()`.

    route (modelId -> provider) -> parse the body once -> call the provider -> render -> reply

Around the provider call: governance (identify, authorize, reserve, settle: governance/) and
the response cache (cache/service.py): a hit is replayed before anything is reserved or sent
upstream; a miss records the answer as it goes out (`Reply.tape`) and stores it when complete.
The pipeline owns the format conversions: Converse and each model family's native InvokeModel
body are parsed into the canonical model, and the provider's canonical answer is rendered back
into the format the client asked for. A `native_bedrock` provider gets the client's bytes as
they are instead.

Errors: any `GatewayError` becomes an `error` reply: an AWS error response before the head, an
exception frame after it. Anything else is a bug: it is logged with the request id, and the client
gets InternalServerException.
"""
from __future__ import annotations

import base64
import dataclasses
import glob
import json
import os
import logging
import time
import urllib.parse
from contextlib import aclosing

import trio

from finops.shared import errors, transport
from finops.shared.config import Config
from finops.shared.model import EmbedRequest, StreamEvent, request_tokens

from .formats.bedrock import converse, families
from .providers import build_provider
from .providers.base import Call
from .governance import admin
from .governance.governor import Governor
from .cache import keys as cache_keys
from .cache.service import CACHEABLE_OPS, Cache
from .reply import Reply
from .routing import backoff, router
from .formats import provider_errors
from .observe import dashboard, logdb, report
from .observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .observe.requestlog import RequestLog
from .observe.tracing import Tracing

log = logging.getLogger("finops.pipeline")

JSON = "application/json"
EVENTSTREAM = "application/vnd.amazon.eventstream"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj) -> bytes:
    return _dumps(obj).encode()


def parse_json(body: bytes, what: str = "body"):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise errors.validation(f"{what}: not valid UTF-8 (byte {e.start}); send JSON encoded as UTF-8.") from None
    if not text.strip():
        raise errors.validation(f"{what}: empty; expected a JSON object.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.validation(f"{what}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}.") from None


class Pipeline:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.providers = {name: build_provider(p) for name, p in cfg.providers.items()}
        self.gov = Governor(cfg)
        self.requestlog = RequestLog(cfg, customer_of=self.gov.customer_of)
        o = cfg.observability
        self.tracing = Tracing(o.otlp_endpoint, o.service_name, o.otlp_headers, o.trace_sample_ratio)
        self.cache = Cache(cfg) if cfg.caching else None
        self.circuits = router.Circuits(cfg.providers)
        self._published: dict = {}
        for name, p in self.providers.items():
            p.breakers = self.circuits.for_provider(name)

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()
        self.requestlog.close()
        self.gov.close()
        await trio.to_thread.run_sync(self.tracing.shutdown)
        if self.cache is not None:
            self.cache.close()

    async def handle(self, env: dict, reply: Reply) -> None:
        if env["op"] == "admin":
            try:
                return await self.admin(env, reply)
            finally:
                await finish(reply)
        hdr = env.get("hdr", {})
        call = Call(rid=env["id"], op=env["op"], model_id=env["model"], upstream_model=env["model"],
                    headers=hdr, virtual_key=hdr.get("x-bf-vk", ""), env=hdr.get("x-bf-env", ""),
                    started=time.monotonic())
        call.span = self.tracing.request(call.rid, call.op, call.model_id, hdr.get("traceparent", ""))
        error = origin = ""
        status = 200
        usage: dict = {}
        plan = hit = vec = route = None
        try:
            ident = self.gov.identify(call, env)        # governance marks its refusals' origin
            call.key, call.virtual_key = ident.key, ident.label
            route = self.cfg.route_for(call.model_id)
            if route is None:
                raise errors.not_found(
                    f"modelId {call.model_id!r}: no route serves it. Add a [[routes]] entry whose "
                    "models glob matches it, or a [default_route], to the gateway config.")
            targets = router.plan(route)
            if call.key is not None:
                allowed = [t for t in targets if call.key.allows_provider(t.provider)]
                self.gov.authorize(ident, call, targets[0].provider if not allowed else allowed[0].provider)
                targets = allowed
            plan = self.cache_plan(call, route, env["body"])
            if plan is not None:
                hit, vec = await self.cache.lookup(plan)
                call.cache = hit.kind if hit else "miss"
                if hit is not None:
                    call.cache_similarity, call.saved_usd = hit.similarity, hit.saved_usd
                    await self.cache.replay(hit, reply, self.cache_headers(call))
                    return
            if (plan is not None and plan.store) or route.log_bodies:
                reply.tape = []
            usage = await self.attempts(call, route, targets, env["body"], reply) or {}
        except errors.GatewayError as e:
            error, origin = e.code, e.origin or "client"
            status = 200 if reply.head_sent else e.status
            call.span.error(e.code, e.message)
            await reply.error(e)
        except trio.TooSlowError:
            error, origin = "client_gone", "client"     # no stream credit for the idle timeout
        except Exception:
            log.exception("request %s failed", call.rid)
            e = errors.internal()
            error, origin, status = e.code, "gateway", 200 if reply.head_sent else e.status
            await reply.error(e)
        finally:
            if not error and not reply.done:            # the frontend stopped waiting and cancelled us
                why = reply.why or {}
                status = why.get("status", status)
                error, origin = why.get("error", "cancelled"), why.get("origin", "client")
            # one charge for the header, the ledger and the log (Governor.charge)
            charge = self.gov.charge(call, usage, call.parsed[2] if call.parsed else None,
                                     call.produced_tokens, started=reply.head_sent)
            call.cost_usd = charge.usd
            settle = self.gov.settle_hit(call, hit.saved_usd) if hit is not None else self.gov.settle(call, charge)
            tape, reply.tape = reply.tape, None
            bodies = (env["body"], recorded_body(tape)) if route is not None and route.log_bodies else (None, None)
            row = self.requestlog.row(call, status, error, origin, charge.usage or usage, reply, *bodies)
            await finish(reply, row, settle)            # the answer, its row and its settle go together
            if hit is None and plan is not None and plan.store and not error and tape:
                self.cache.store(plan, call, tape, vec, call.cost_usd)
            if self.tracing.enabled:
                u = charge.usage or usage
                call.span.set(gen_ai__usage__input_tokens=u.get("in"),
                              gen_ai__usage__output_tokens=u.get("out"), finops__cost_usd=call.cost_usd,
                              finops__cache=call.cache or None,
                              finops__virtual_key=call.key.id if call.key is not None else None,
                              finops__provider=call.provider or None)
            call.span.end()

    def cache_plan(self, call: Call, route, body: bytes):
        """The cache's plan for this request, or None (no caching on this route and key, an
        operation that is not cached, an embeddings body, or a body the dispatch will refuse)."""
        if self.cache is None or call.op not in CACHEABLE_OPS or self.cache.policy(route, call.key) is None:
            return None
        try:
            _, _, req = self.parse_body(call, body)
        except errors.GatewayError:
            return None
        return self.cache.plan(call, route, req)

    @staticmethod
    def parse_body(call: Call, body: bytes) -> tuple:
        """(JSON document, model family or None for Converse, canonical request), parsed once per
        request: the cache's plan, every attempt and every fallback share it (parsers build new
        objects and nothing downstream changes them). Raises the ValidationException of a bad body."""
        if call.parsed is None:
            doc = parse_json(body)
            if call.op in ("converse", "converse-stream"):
                call.parsed = (doc, None, converse.parse_request(doc))
            else:
                family = families.family_for(call.model_id, doc)
                call.parsed = (doc, family, family.parse_request(doc))
        return call.parsed

    @staticmethod
    def cache_headers(call: Call) -> list:
        """A cache hit's own headers: what happened, the similarity of a semantic hit, and what it
        cost (nothing) and saved."""
        h = [["x-bf-cache", call.cache], ["x-bf-cost-usd", "0.000000"],
             ["x-bf-cache-saved-usd", f"{call.saved_usd:.6f}"]]
        if call.cache == "hit-semantic":
            h.append(["x-bf-cache-similarity", f"{call.cache_similarity:.4f}"])
        return h

    async def attempts(self, call: Call, route, targets: list, body: bytes, reply: Reply):
        """Try the route's targets in `targets` order, all within the request's deadline. After a
        failure, `router.after_failure` decides: the same target with another key (the key was
        refused or is out of quota, and the target has a key this request has not tried), the same
        target after a jittered exponential backoff (retryable, `retries` not used up), or the next
        target. A stream is retried or falls back only before its first byte went to the client;
        after that a failure ends it with an exception frame. When every attempt failed, the client
        gets the last failure's AWS error."""
        now = trio.current_time()
        deadline = now + (route.deadline_seconds or self.cfg.server.request_timeout_seconds)
        last = None
        # circuits only matter where there is somewhere else to go: a lone target keeps getting
        # the requests, and the client sees the upstream's own error (its SDK retries it anyway)
        guarded = len(targets) > 1
        # whose tokenizers and formulas the reservation must bound: every target this request may try
        vendors = [(self.providers[t.provider].kind, t.model or call.model_id) for t in targets]
        for t in targets:
            provider = self.providers[t.provider]
            breakers = self.circuits.for_provider(t.provider)
            name = router.target_name(t)
            call.target = name
            if guarded and not breakers.allow(name):
                last = errors.unavailable(f"target {name}: its circuit is open after repeated failures; "
                                          "it gets traffic again after circuit_open_seconds.")
                continue
            call.provider, call.upstream_model = provider.name, t.model or call.model_id
            call.fallback = t is not targets[0]
            call.keys_tried = call.keys_refused = ()     # keys are tried afresh on each target
            circuit = name if guarded else ""
            retried = 0
            while True:
                call.attempts += 1
                call.key_name = ""
                span = self.tracing.upstream(call.span, provider.name, call.upstream_model, call.attempts, name)
                try:
                    usage = await self.attempt(call, provider, body, reply, deadline, vendors)
                except errors.GatewayError as e:
                    # admitted: the provider (or its timeout) failed; else the body or governance refused
                    e.origin = e.origin or ("upstream" if call.admission is not None else "client")
                    span.error(e.code, e.message)
                    span.end()
                    if e.origin == "governance":
                        # the key's budget or rate limit refused it (Governor.admit): not the target's
                        # failure, and a retry would skip the reservation (admit runs once per request)
                        call.attempts -= 1
                        raise
                    last = e
                    key = call.key_name
                    refused = bool(key) and router.key_refused(e)
                    if key:
                        call.keys_tried += (key,)
                        if refused:
                            call.keys_refused += (key,)
                    if reply.head_sent:
                        step = router.STOP
                    else:
                        step = router.after_failure(e, route.retries - retried, refused and
                                                    provider.has_untried_key(call.upstream_model, call))
                    # a refused key fails its own circuit; the target's only when the request leaves it
                    self.record_outcome(breakers, "" if step == router.OTHER_KEY else circuit, key,
                                        ok=not router.try_next(e))
                    if step == router.STOP:
                        raise
                    if step == router.NEXT:
                        break
                    if step == router.OTHER_KEY:
                        if trio.current_time() >= deadline:
                            raise
                        continue
                    delay = backoff.delay(retried, base=route.retry_backoff_ms / 1000)
                    if not backoff.fits(deadline, trio.current_time(), delay):
                        raise
                    retried += 1
                    await trio.sleep(delay)
                else:
                    span.end()
                    self.record_outcome(breakers, circuit, call.key_name, ok=True)
                    return usage
            if trio.current_time() >= deadline:
                break
        raise last or errors.unavailable("no target of this route can serve the request now.")

    @staticmethod
    def record_outcome(breakers, target: str, key: str, ok: bool) -> None:
        """Tell the circuits of the target ("" when it has none) and of the key what happened."""
        for name in (target, key):
            if name:
                (breakers.success if ok else breakers.failure)(name)

    async def attempt(self, call: Call, provider, body: bytes, reply: Reply, deadline: float, vendors: list):
        """One attempt on one target, under the provider's total timeout and the request's deadline."""
        limit = deadline - trio.current_time()
        total = provider.cfg.total_timeout_seconds
        if total and total < limit:
            limit = total
        with trio.move_on_after(max(0.0, limit)) as scope:
            usage = await self.dispatch(call, provider, body, reply, vendors)
        if scope.cancelled_caught:
            what = (f"provider {provider.name!r}: the attempt took over {total:g}s (total_timeout_seconds)"
                    if total and limit == total else "the request's deadline passed (routes.deadline_seconds)")
            raise errors.model_timeout(f"{what}.")
        return usage

    def publish_circuits(self) -> None:
        """Write this worker's circuit states to <run_dir>/circuits-<pid>.json when they changed.
        Circuits are per worker (README: Load balancing and fallbacks); the admin API shows them all."""
        snap = self.circuits.snapshot()
        if snap == self._published and not any(v.get("retry_in_s") for v in snap.values()):
            return
        self._published = snap
        path = os.path.join(self.cfg.run_dir, f"circuits-{os.getpid()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(snap, f)
        os.replace(path + ".tmp", path)

    def circuits_report(self) -> dict:
        """Every live worker's published circuit states, for GET /admin/circuits."""
        out = {}
        for path in glob.glob(os.path.join(self.cfg.run_dir, "circuits-*.json")):
            pid = os.path.basename(path)[len("circuits-"):-len(".json")]
            if not pid.isdigit() or not transport.pid_alive(int(pid)):
                continue
            try:
                with open(path) as f:
                    out[pid] = json.load(f)
            except (OSError, ValueError):
                continue
        return {"workers": out}

    def response_headers(self, call: Call, usage: dict | None) -> list:
        """The gateway's own response headers: which target served the answer, after how many
        attempts, the cache's verdict (a miss here), and governance's cost and budget headers."""
        h = [["x-bf-target", call.target], ["x-bf-attempts", str(call.attempts)]]
        if call.cache:
            h.append(["x-bf-cache", call.cache])
        return h + self.gov.headers(call, None if usage is None else self.gov.charge(call, usage))

    async def admin(self, env: dict, reply: Reply) -> None:
        """The admin API (the frontend checked the admin token): keys, teams, customers, usage,
        circuits, cache, the request log's dashboard and report; and /metrics (token optional)."""
        path, _, qs = env.get("path", "").partition("?")
        query = dict(urllib.parse.parse_qsl(qs))
        method = env["hdr"].get(":method", "GET")
        if path == "/metrics":
            await reply.head(200, [["content-type", METRICS_CONTENT_TYPE]], stream=False)
            return await reply.body(await self.requestlog.scrape())
        if path.rstrip("/") in ("/admin/dashboard", "/admin/report") and method == "GET":
            status, doc = await self.admin_log(path.rstrip("/"), query)
        elif path.rstrip("/") == "/admin/usage" and method == "GET":
            status, doc = 200, await self.gov.ledger.usage(query.get("key"))
        elif path.rstrip("/") == "/admin/circuits" and method == "GET":
            self.publish_circuits()
            status, doc = 200, self.circuits_report()
        elif path.rstrip("/") == "/admin/cache" and method in ("GET", "DELETE"):
            status, doc = await self.admin_cache(method, query)
        else:
            status, doc = admin.handle(self.gov.store, method, path, query, env["body"])
            if method != "GET":
                self.gov.reload()
        if status >= 400:        # AWS-shaped like every other failure (X-Amzn-ErrorType, JSON message)
            return await reply.error(errors.for_status(status, doc["message"]))
        await reply.head(status, [["content-type", JSON]], stream=False)
        await reply.body(dumps(doc))

    async def admin_log(self, path: str, query: dict) -> tuple[int, dict]:
        """GET /admin/dashboard?days=N: the /ui dashboard's data; GET /admin/report?by=key,model&
        since=7d&until=&key=&team=&customer=&env=&model=&provider=: `finops report` as JSON."""
        if not self.cfg.observability.request_log:
            return 404, {"message": "The request log is off (observability.request_log = false)."}
        await self.requestlog.sync()
        tz = self.cfg.governance.timezone
        data_dir = self.cfg.server.data_dir
        try:
            if path == "/admin/dashboard":
                days = int(query.get("days", "30"))
                if not 1 <= days <= 366:
                    raise ValueError("days: a whole number of days from 1 to 366")
                usage = (await self.gov.ledger.usage(None))["usage"]
                return 200, await trio.to_thread.run_sync(read_log, data_dir, dashboard.dashboard_data, usage, days, tz)
            by = [d for d in query.get("by", "model").split(",") if d]
            since, until = report.parse_period(query.get("since", ""), query.get("until", ""), tz)
            where = {k: query[k] for k in report.FILTERS if k in query}
            rows = await trio.to_thread.run_sync(read_log, data_dir, report.summarize, by, since, until, where)
            return 200, {"by": by, "since": since, "until": until, "rows": rows, "total": report.total(rows)}
        except ValueError as e:
            return 400, {"message": str(e)}

    async def admin_cache(self, method: str, query: dict) -> tuple[int, dict]:
        """GET /admin/cache: the cache's stats; DELETE /admin/cache?key=VK&model=M: clear entries."""
        if self.cache is None:
            return 404, {"message": "The response cache is off: no route has an enabled [routes.cache] table "
                                    "(a [cache.keys.\"ID\"] override only adjusts routes that have one)."}
        if method == "GET":
            out = await self.cache.client.stats()
            out["semantic"] = self.cache.embedder is not None
            if self.cache.semantic_off_reason:
                out["semantic_off_reason"] = self.cache.semantic_off_reason
            return 200, out
        out = await self.cache.client.clear(cache_keys.owner_named(query.get("key")), query.get("model"))
        return 200, {"removed": out["removed"]}

    async def dispatch(self, call: Call, provider, body: bytes, reply: Reply, vendors: list):
        op = call.op
        if provider.native_bedrock:
            doc, family, req = self.validate_native(call, op, body)
            if op != "count-tokens":
                await self.gov.admit(call, req, vendors, len(body))
                cap = self.gov.output_cap(call)
                if cap:         # the client set no maxTokens: the reservation's cap goes upstream
                    body = dumps(converse.with_output_cap(doc, cap) if family is None
                                 else family.with_output_cap(doc, cap))
            return await provider.relay(call, body, reply, lambda usage: self.response_headers(call, usage))
        if op == "converse":
            doc, _, req = self.parse_body(call, body)
            await self.gov.admit(call, req, vendors)
            resp = await provider.chat(call, self.capped(call, req))
            resp.latency_ms = resp.latency_ms or self.elapsed_ms(call)
            usage = resp.usage.to_wire()
            await reply.head(200, [["content-type", JSON]] + self.response_headers(call, usage), stream=False)
            await reply.body(dumps(converse.render_response(
                resp, response_field_paths=doc.get("additionalModelResponseFieldPaths"))))
            return usage
        if op == "converse-stream":
            _, _, req = self.parse_body(call, body)
            await self.gov.admit(call, req, vendors)
            return await self.stream(call, provider.chat_stream(call, self.capped(call, req)), reply,
                                     [["content-type", EVENTSTREAM]] + self.response_headers(call, None),
                                     converse_frames)
        if op == "invoke":
            self.check_accept(call.headers.get("accept"), "accept")
            doc, family, req = self.parse_body(call, body)
            await self.gov.admit(call, req, vendors)
            if family.name == provider.native_family:
                return await self.invoke_native(call, provider, self.capped_doc(call, family, doc), reply)
            if isinstance(req, EmbedRequest):
                resp = await provider.embed(call, req)
                out = family.render_embed_response(resp, req=req, model_id=call.model_id)
                usage = {"in": resp.input_tokens, "out": 0}
            else:
                resp = await provider.chat(call, self.capped(call, req))
                out = family.render_response(resp, call.model_id)
                usage = resp.usage.to_wire()
            await reply.head(200, [["content-type", JSON],
                                   ["x-amzn-bedrock-input-token-count", str(usage["in"])],
                                   ["x-amzn-bedrock-output-token-count", str(usage["out"])],
                                   ["x-amzn-bedrock-invocation-latency", str(self.elapsed_ms(call))]]
                             + self.response_headers(call, usage), stream=False)
            await reply.body(dumps(out))
            return usage
        if op == "invoke-with-response-stream":
            self.check_accept(call.headers.get("x-amzn-bedrock-accept"), "X-Amzn-Bedrock-Accept")
            doc, family, req = self.parse_body(call, body)
            if not getattr(family, "streams", True):
                raise errors.validation(f"modelId {call.model_id!r}: the model is unsupported for streaming.")
            await self.gov.admit(call, req, vendors)
            headers = ([["content-type", EVENTSTREAM], ["x-amzn-bedrock-content-type", JSON]]
                       + self.response_headers(call, None))
            if family.name == provider.native_family:
                tracker = provider.native_tracker()
                doc = self.capped_doc(call, family, doc)
                return await self.stream(call, provider.invoke_native_stream(call, doc, tracker), reply, headers,
                                         lambda d: native_frames(call, d, tracker, self.elapsed_ms),
                                         usage_of=lambda: tracker.usage.to_wire(),
                                         complete=lambda: tracker.done)
            encoder = family.stream_encoder(call.model_id, input_tokens=request_tokens(req), response_id=call.rid)
            return await self.stream(call, provider.chat_stream(call, self.capped(call, req)), reply, headers,
                                     lambda ev: invoke_frames(encoder, ev))
        if op == "count-tokens":
            kind, value = converse.parse_count_tokens(parse_json(body))
            if kind == "invokeModel":
                doc = parse_json(value, "input.invokeModel.body")
                value = families.family_for(call.model_id, doc).parse_request(doc)
                if isinstance(value, EmbedRequest):
                    raise errors.validation("input.invokeModel.body: CountTokens takes a text-generation body, "
                                            "not an embeddings body.")
            n = await provider.count_tokens(call, value)
            await reply.head(200, [["content-type", JSON]], stream=False)
            await reply.body(dumps({"inputTokens": n}))
            return {"in": n}
        raise errors.validation(f"unknown operation {op!r}")

    async def stream(self, call: Call, events, reply: Reply, headers: list, frames_of, *,
                     usage_of=None, complete=None):
        """Relay a provider's event stream. The head waits for the first event, so a provider
        that fails before answering gives a plain (retryable) HTTP error, not a broken stream.
        `events` yields lists (what one upstream read produced, sent as one message) of canonical
        StreamEvents, or of native dicts when `usage_of` (the usage at the end) and `complete`
        (whether the provider finished the answer) say what they carried."""
        usage: dict = {}
        # a stream counts what it relays, so a cut one is charged for it (Governor.charge)
        counting = call.admission is not None and usage_of is None
        chars = 0
        try:
            async with aclosing(events) as agen:
                async for batch in agen:
                    if counting:
                        chars += sum(len(ev.data.get("text") or ev.data.get("toolUse", {}).get("input", ""))
                                     for ev in batch if ev.kind == "block_delta")
                    await self._relay_batch(call, batch, reply, headers, frames_of, usage_of)
                    if usage_of is None and batch and batch[-1].kind == "metadata":
                        u = batch[-1].data.get("usage")
                        usage = u.to_wire() if u is not None else {}
        finally:
            call.produced_tokens = (chars + 3) // 4
        if call.first_byte_ms is None:
            raise errors.GatewayError("ModelErrorException", "the provider returned an empty stream.",
                                      extra={"originalStatusCode": 502})
        if complete is not None and not complete():
            raise provider_errors.cut_stream(call.provider, "the provider's stream ended without its end event")
        if usage_of is not None:
            usage = usage_of()
        await reply.end(usage)
        return usage

    async def _relay_batch(self, call: Call, batch: list, reply: Reply, headers: list, frames_of, usage_of) -> None:
        """One upstream read's events, as one message to the client (the head before the first)."""
        if not batch:
            return
        if call.first_byte_ms is None:
            call.first_byte_ms = self.elapsed_ms(call)
            await reply.head(200, headers, stream=True)
        frames = []
        for ev in batch:
            if usage_of is None and ev.kind == "metadata":
                ev.data.setdefault("firstByteLatencyMs", call.first_byte_ms)
                if not ev.data.get("latencyMs"):
                    ev.data["latencyMs"] = self.elapsed_ms(call)
            frames += frames_of(ev)
        await reply.chunks(frames)

    async def invoke_native(self, call: Call, provider, doc: dict, reply: Reply) -> dict:
        """A family body to the provider whose API it is: the answer goes back as it came."""
        out = await provider.invoke_native(call, doc)
        u = provider.native_usage(out)
        await reply.head(200, [["content-type", JSON],
                               ["x-amzn-bedrock-input-token-count", str(u.input_tokens)],
                               ["x-amzn-bedrock-output-token-count", str(u.output_tokens)],
                               ["x-amzn-bedrock-invocation-latency", str(self.elapsed_ms(call))]]
                         + ([["x-amzn-bedrock-cache-read-input-token-count", str(u.cache_read_tokens)]]
                            if u.cache_read_tokens else [])
                         + ([["x-amzn-bedrock-cache-write-input-token-count", str(u.cache_write_tokens)]]
                            if u.cache_write_tokens else [])
                         + self.response_headers(call, u.to_wire()),
                         stream=False)
        await reply.body(dumps(out))
        return u.to_wire()

    @staticmethod
    def check_accept(accept: str | None, name: str) -> None:
        if accept and not any(a.strip().split(";")[0] in ("application/json", "*/*", "application/*")
                              for a in accept.split(",")):
            raise errors.validation(f"{name}: {accept!r} is not supported; this gateway answers application/json.")

    def validate_native(self, call: Call, op: str, body: bytes) -> tuple:
        """Bodies relayed to Bedrock are still checked, so bad input gets our clear message.
        Returns (document, family or None for Converse, canonical request): the request when the
        body has one (for the reservation), else None."""
        if op == "count-tokens":
            converse.parse_count_tokens(parse_json(body))
            return None, None, None
        if op in ("converse", "converse-stream"):
            return self.parse_body(call, body)
        doc = parse_json(body)
        if not isinstance(doc, dict):
            raise errors.validation("body: expected a JSON object.")
        try:
            return self.parse_body(call, body)
        except errors.GatewayError:
            return doc, None, None      # a body only Bedrock knows: Bedrock judges it

    def capped(self, call: Call, req):
        """The canonical request as sent upstream: with the reservation's output cap when the
        client set no maxTokens on a governed request (Governor.output_cap)."""
        cap = self.gov.output_cap(call)
        return dataclasses.replace(req, max_tokens=cap) if cap else req

    def capped_doc(self, call: Call, family, doc: dict) -> dict:
        """A native body passed through, with the same output cap as `capped`."""
        cap = self.gov.output_cap(call)
        return family.with_output_cap(doc, cap) if cap else doc

    @staticmethod
    def elapsed_ms(call: Call) -> int:
        return int((time.monotonic() - call.started) * 1000)


FINISH_SECONDS = 1.0     # the final reply's send may wait this long for the frontend's socket


async def finish(reply: Reply, row: bytes | None = None, settle: list | None = None) -> None:
    """Send the request's final reply with its outcome, whatever cancelled the request (shielded,
    and bounded by FINISH_SECONDS)."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(FINISH_SECONDS):
            await reply.finish(row, settle)


def read_log(data_dir: str, fn, *args):
    """Run `fn(db, *args)` on a read-only connection to the request log (in a thread)."""
    db = logdb.open_db(data_dir, readonly=True)
    try:
        return fn(db, *args)
    finally:
        db.close()


def recorded_body(tape: list | None) -> bytes | None:
    """The response body a `Reply.tape` recorded: the body, or a stream's event payloads one per
    line (None when nothing was recorded: a failure before the answer)."""
    if not tape:
        return None
    body = [item[1] for item in tape if item[0] == "body"]
    if body:
        return body[0]
    return b"\n".join(payload for item in tape if item[0] == "chunks" for _, payload in item[1])


def converse_frames(ev: StreamEvent):
    et, payload = converse.stream_payload(ev)
    return [(et, dumps(payload))]


def native_frames(call: Call, d: dict, tracker, elapsed_ms):
    """A native stream event passed through as an InvokeModelWithResponseStream chunk; the last
    one (message_stop) gets the invocation metrics Bedrock adds. Keep-alive pings are dropped
    (Bedrock does not send them)."""
    if d.get("type") == "ping":
        return []
    if d.get("type") == "message_stop":
        d = dict(d)
        d[families.METRICS_KEY] = families.invocation_metrics(
            {"usage": tracker.usage, "latencyMs": elapsed_ms(call), "firstByteLatencyMs": call.first_byte_ms})
    return [("chunk", dumps({"bytes": base64.b64encode(dumps(d)).decode()}))]


def invoke_frames(encoder, ev: StreamEvent):
    return [("chunk", dumps({"bytes": base64.b64encode(dumps(d)).decode()})) for d in encoder.feed(ev)]
