"""One request, start to finish: `Pipeline.handle()` tells its story.

    identify the key -> route and authorize -> parse the body once -> the cache's plan (a hit is
    replayed here) -> reserve once -> the attempts -> charge and settle -> the request-log row,
    which goes out with the answer's last message -> cache store, trace

Each step is someone else's job, and the story only connects them: governance
(governance/governor.py: identify, authorize, admit, charge, settle), the response cache
(cache/service.py), the attempt planner (routing/planner.py: which target and key next, and what a
failure means), the operations (operations.py: what each Bedrock operation does with one
provider, format conversions included), the providers (providers/), and the request log
(observe/requestlog.py). The records they pass along are in request.py: an immutable `Request`,
one immutable `Attempt` per try, the pipeline's own `Progress`, and the `Outcome`.

Errors: any `GatewayError` becomes the client's AWS error (before the head) or an exception
frame (after it). Anything else is a bug: it is logged with the request id, and the client gets
InternalServerException. Whatever happens, the request ends with `finish`: its charge is settled,
and its final reply carries its log row and settle (finops.shared.envelope).
"""
from __future__ import annotations

import dataclasses
import logging
import time

import trio

from finops.shared import envelope, errors
from finops.shared.config import Config, RouteConfig, TargetConfig

from . import operations
from .admin.api import Admin
from .formats.bedrock import guardrail
from .cache.service import CACHEABLE_OPS, Cache, hit_headers
from .governance.governor import Governor
from .governance.money import MICRO
from .observe.client import ObserverClient
from .observe import tagging
from .observe.requestlog import RequestLog
from .observe.tracing import Tracing
from .providers import build_provider
from .reply import Reply, recorded_body
from .request import Attempt, Outcome, Progress, Request
from .routing import backoff, router
from .routing.planner import AttemptPlan

log = logging.getLogger("finops.pipeline")
FINISH_SECONDS = 1.0     # the final reply's send may wait this long for the frontend's socket


class Pipeline:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.providers = {name: build_provider(p) for name, p in cfg.providers.items()}
        self.keys_of = {name: p.keys for name, p in cfg.providers.items()}
        self.gov = Governor(cfg)
        self.requestlog = RequestLog(cfg, customer_of=self.gov.customer_of)
        self.observer = ObserverClient(cfg.run_dir, cfg.server.transport)
        o = cfg.observability
        self.tracing = Tracing(o.otlp_endpoint, o.service_name, o.otlp_headers, o.trace_sample_ratio)
        self.cache = Cache(cfg) if cfg.caching else None
        self.circuits = router.Circuits(cfg.providers)
        self.guardrail_provider = router.guardrail_provider(cfg)
        self.admin = Admin(cfg, self.gov, self.observer, self.cache, self.circuits)

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()
        self.observer.close()
        self.admin.close()
        self.gov.close()
        await trio.to_thread.run_sync(self.tracing.shutdown)
        if self.cache is not None:
            self.cache.close()

    async def handle(self, msg: envelope.Request, reply: Reply) -> None:
        """Serve the request of a `request` envelope, writing its answer to `reply`."""
        if msg.op == "admin":
            try:
                return await self.admin.handle(msg, reply)
            finally:
                await finish(reply)
        request = Request.of(msg, time.monotonic())
        span = self.tracing.request(request.rid, request.op, request.model_id, request.headers.get("traceparent", ""))
        progress = Progress()
        usage: dict = {}
        route = parsed = plan = hit = vec = adm = None
        status, error, origin = 200, "", ""
        try:
            ident = self.gov.identify(request)
            request = dataclasses.replace(request, key=ident.key, key_label=ident.label)
            route, targets = self.route(request, ident)
            parsed = operations.parse(request)
            guarded = operations.guardrail_of(request, parsed)
            targets = router.guardrail_targets(targets, lambda p: self.providers[p].native_bedrock,
                                               guarded, route)
            plan = self.cache_plan(request, route, parsed)
            if plan is not None:
                hit, vec = await self.cache.lookup(plan)
                if hit is not None:
                    return await self.cache.replay(hit, reply, hit_headers(hit))
                if plan.store:
                    reply.tape = []
            if route.log_bodies and reply.tape is None:
                reply.tape = []
            if request.op == operations.APPLY_GUARDRAIL:
                adm = await self.gov.admit(request, None, bound_micros=self.gov.guardrail_prices.max_cost_micros(
                    *guardrail.text_units(parsed.doc)))
            elif request.op != "count-tokens":
                adm = await self.gov.admit(request, parsed.req, self.vendors(request, targets), len(request.body),
                                           guard_units=guardrail.call_units(parsed.req, len(request.body))
                                           if guarded else None)
            usage = await self.attempts(request, route, targets, parsed, adm, plan, reply, progress, span)
        except errors.GatewayError as e:
            status, error, origin = 200 if reply.head_sent else e.status, e.code, e.origin or "client"
            span.error(e.code, e.message)
            await reply.error(e)
        except trio.TooSlowError:
            error, origin = "client_gone", "client"     # no stream credit for the idle timeout
        except Exception:
            log.exception("request %s failed", request.rid)
            e = errors.internal()
            status, error, origin = 200 if reply.head_sent else e.status, e.code, "gateway"
            await reply.error(e)
        finally:
            if not error and not reply.done:            # the frontend stopped waiting and cancelled us
                status, error, origin = Outcome.cancelled(reply.why, status)
            # one charge: the ledger's settle, the log's cost and x-bf-cost-usd are the same figure
            last = progress.last
            charge = self.gov.charge(adm, usage, last.upstream_model if last else "", parsed and parsed.req,
                                     progress.produced_tokens, started=reply.head_sent)
            settle = self.gov.settle_hit(request, hit.saved_usd) if hit else self.gov.settle(request, adm, charge)
            outcome = Outcome(status, error, origin, charge.usage or usage, charge.usd, progress,
                              **cache_result(plan, hit), prompt_saved_usd=charge.prompt_saved_micros / MICRO,
                              tags=tagging.tags_of(request, parsed and parsed.doc, self.cfg))
            tape, reply.tape = reply.tape, None
            bodies = (request.body, recorded_body(tape)) if route is not None and route.log_bodies else (None, None)
            await finish(reply, self.requestlog.row(request, outcome, reply, *bodies), settle)
            if hit is None and plan is not None and plan.store and not error and tape:
                self.cache.store(plan, request, tape, vec, outcome.cost_usd)
            self.tracing.finish(span, request, outcome)

    def route(self, request: Request, ident) -> tuple:
        """The route serving the modelId and the targets this request may try, in order (those the
        key's providers allow); raises ResourceNotFoundException, or governance's refusal."""
        if request.op == operations.APPLY_GUARDRAIL:
            return self.guardrail_route(request, ident)
        route = self.cfg.route_for(request.model_id)
        if route is None:
            raise errors.not_found(
                f"modelId {request.model_id!r}: no route serves it. Add a [[routes]] entry whose "
                "models glob matches it, or a [default_route], to the gateway config.")
        targets = router.plan(route)
        if request.key is not None:
            allowed = [t for t in targets if request.key.allows_provider(t.provider)]
            self.gov.authorize(ident, request.model_id, (allowed or targets)[0].provider)
            targets = allowed
        return route, targets

    def guardrail_route(self, request: Request, ident) -> tuple:
        """ApplyGuardrail: one target, the bedrock provider guardrails go to (router.guardrail_provider).
        The key must be enabled, unexpired and allowed that provider; its models list does not apply
        (no model is called)."""
        if not self.guardrail_provider:
            raise errors.validation(
                "ApplyGuardrail: this gateway has no bedrock provider to apply guardrails with. Add a "
                "[providers.NAME] table with kind = \"bedrock\" (and [guardrails] provider = \"NAME\").")
        target = TargetConfig(provider=self.guardrail_provider)
        route = RouteConfig(models=[request.model_id], provider=self.guardrail_provider, targets=[target],
                            name="guardrail")
        self.gov.authorize(ident, request.model_id, self.guardrail_provider, check_model=False)
        return route, [target]

    def vendors(self, request: Request, targets: list) -> list[tuple[str, str]]:
        """(provider kind, upstream model) of every target: whose token formulas bound the reservation."""
        return [(self.providers[t.provider].kind, t.model or request.model_id) for t in targets]

    def cache_plan(self, request: Request, route, parsed):
        """The cache's plan for this request, or None (no caching on this route and key, an
        operation or body that is not cached, a request that asks for a guardrail: a stored
        answer would skip it)."""
        if (self.cache is None or request.op not in CACHEABLE_OPS or parsed.req is None
                or self.cache.policy(route, request.key) is None):
            return None
        if operations.guardrail_of(request, parsed):    # never answered around its guardrail
            return None
        return self.cache.plan(request, route, parsed.req)

    async def attempts(self, request: Request, route, targets: list, parsed, adm, plan, reply: Reply,
                       progress: Progress, span) -> dict:
        """Try the route's targets as the planner says, all within the request's deadline; returns
        the usage of the attempt that answered. A stream is retried or falls back only before its
        first byte went to the client. When every attempt failed, the client gets the last
        failure's AWS error."""
        deadline = trio.current_time() + (route.deadline_seconds or self.cfg.server.request_timeout_seconds)
        planner = AttemptPlan(targets, route, request.model_id, self.keys_of, self.circuits)
        cap = self.gov.output_cap(adm)
        cache_result = "" if plan is None else "miss"
        last = None
        step = planner.next()
        while step is not None:
            attempt = Attempt.of(request, step, self.keys_of)
            progress.attempts, progress.last = step.number, attempt
            child = self.tracing.upstream(span, attempt.provider, attempt.upstream_model, step.number, step.name)
            try:
                usage = await self.attempt(attempt, parsed, request.body, reply, progress, deadline,
                                           lambda u: self.response_headers(attempt, adm, cache_result, u), cap)
            except errors.GatewayError as e:
                e.origin = e.origin or "upstream"
                child.error(e.code, e.message)
                child.end()
                last = e
                decision = planner.failed(step, e, reply.head_sent)
                self.circuits.record(decision.outcomes)
                if decision.action == router.STOP or (decision.action == router.RETRY and not backoff.fits(
                        deadline, trio.current_time(), decision.delay)):
                    raise
                if trio.current_time() >= deadline:
                    break
                if decision.delay:
                    await trio.sleep(decision.delay)
                step = planner.next(same_target=decision.action != router.NEXT)
            else:
                child.end()
                self.circuits.record(planner.succeeded(step))
                return usage
        raise last or planner.blocked or errors.unavailable("no target of this route can serve the request now.")

    async def attempt(self, attempt: Attempt, parsed, body: bytes, reply: Reply, progress: Progress,
                      deadline: float, headers_for, cap: int | None) -> dict:
        """One attempt on one target, under the provider's total timeout and the request's deadline."""
        provider = self.providers[attempt.provider]
        limit = deadline - trio.current_time()
        total = provider.cfg.total_timeout_seconds
        if total and total < limit:
            limit = total
        with trio.move_on_after(max(0.0, limit)) as scope:
            return await operations.run(provider, attempt, body, parsed, reply, progress, headers_for, cap)
        what = (f"provider {provider.name!r}: the attempt took over {total:g}s (total_timeout_seconds)"
                if total and limit == total else "the request's deadline passed (routes.deadline_seconds)")
        raise errors.model_timeout(f"{what}.")

    def response_headers(self, attempt: Attempt, adm, cache_result: str, usage: dict | None) -> list:
        """The gateway's own response headers: which target served the answer, after how many
        attempts, the cache's verdict (a miss here), and governance's cost and budget headers."""
        h = [["x-bf-target", attempt.target], ["x-bf-attempts", str(attempt.number)]]
        if cache_result:
            h.append(["x-bf-cache", cache_result])
        charge = None if usage is None else self.gov.charge(adm, usage, attempt.upstream_model)
        return h + self.gov.headers(adm, charge)


def cache_result(plan, hit) -> dict:
    """The cache's part of the outcome: what it did, and what a hit saved."""
    if hit is not None:
        return {"cache": hit.kind, "similarity": hit.similarity, "saved_usd": hit.saved_usd}
    return {"cache": "" if plan is None else "miss"}


async def finish(reply: Reply, row: bytes | None = None, settle: list | None = None) -> None:
    """Send the request's final reply with its outcome, whatever cancelled the request (shielded,
    and bounded by FINISH_SECONDS)."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(FINISH_SECONDS):
            await reply.finish(row, settle)
