"""The response cache, as the request pipeline sees it: plan, look up, replay, store.

    plan()     is caching on for this route and key? the request's scope and exact keys, its
               question, and what the x-bf-cache-* headers ask for
    lookup()   exact layer (one actor round trip), then, on a miss, the semantic layer: embed the
               question here in the worker (a thread, off the trio loop) and search in the actor
    replay()   a hit goes out as the recorded answer: the same head, body or stream events, so
               boto3 cannot tell it from a live one; `x-bf-cache` says what happened
    store()    a complete, successful answer (recorded by `Reply.tape`) goes to the actor

The cache never fails a request: an actor that does not answer within `cache.lookup_timeout_seconds` is a miss,
and an answer it cannot take is not stored.

Per-request headers (all optional):
    x-bf-cache-key: K          an explicit key: the request is cached and looked up under K (exact only)
    x-bf-cache-ttl: 30s | 5m   this answer's time to live (s, m, h; a bare number is seconds)
    x-bf-cache-threshold: 0.9  a stricter similarity for this lookup (never looser than the route's)
    x-bf-cache-type: direct | semantic    one layer only
    x-bf-cache-no-store: true  look up, but do not store this answer
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import msgpack
import trio

from finops.shared import errors
from finops.shared.config import CachePolicy, Config
from finops.shared.model import ChatRequest

from . import keys
from .client import CacheClient

log = logging.getLogger("finops.cache")

MAX_TTL_SECONDS = 30 * 86400  # the longest x-bf-cache-ttl accepted (30 days)
CACHEABLE_OPS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream")
_pack = msgpack.Packer(use_bin_type=True).pack


@dataclass(slots=True)
class Plan:
    scope: str
    exact: str
    question: str
    owner: str
    ns: str
    policy: CachePolicy
    ttl: float
    threshold: float
    exact_layer: bool
    semantic_layer: bool
    store: bool


@dataclass(slots=True)
class Hit:
    kind: str                 # "hit-exact" | "hit-semantic"
    answer: dict              # the recorded reply
    similarity: float
    saved_usd: float


def parse_ttl(value: str) -> float:
    v = value.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(v[-1:], None)
    try:
        ttl = float(v[:-1] if mult else v) * (mult or 1)
    except ValueError:
        ttl = -1
    if not 0 < ttl <= MAX_TTL_SECONDS:
        raise errors.validation(f"x-bf-cache-ttl: {value!r} is not a duration; send seconds like 300, or "
                                f"30s, 5m, 2h (at most {MAX_TTL_SECONDS // 86400} days).")
    return ttl


def request_options(headers: dict, policy: CachePolicy) -> dict:
    """What the x-bf-cache-* headers ask for, checked (a bad value is a 400 naming the header)."""
    out = {"ttl": policy.ttl_seconds, "threshold": policy.threshold, "exact": True,
           "semantic": policy.semantic, "store": True, "key": headers.get("x-bf-cache-key", "")}
    if "x-bf-cache-ttl" in headers:
        out["ttl"] = parse_ttl(headers["x-bf-cache-ttl"])
    if "x-bf-cache-threshold" in headers:
        raw = headers["x-bf-cache-threshold"]
        try:
            t = float(raw)
        except ValueError:
            t = -1.0
        if not 0.0 < t <= 1.0:
            raise errors.validation(f"x-bf-cache-threshold: {raw!r} is not a similarity in (0, 1].")
        out["threshold"] = max(policy.threshold, t)     # may only make matching stricter
    kind = headers.get("x-bf-cache-type", "").strip().lower()
    if kind:
        if kind not in ("direct", "semantic"):
            raise errors.validation(f"x-bf-cache-type: {kind!r} is not a cache type; send direct or semantic.")
        out["exact"] = kind == "direct"
        out["semantic"] = kind == "semantic" and policy.semantic
    if headers.get("x-bf-cache-no-store", "").strip().lower() in ("1", "true", "yes"):
        out["store"] = False
    if out["key"]:
        out["semantic"], out["exact"] = False, True
    return out


class Cache:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.client = CacheClient(cfg.run_dir, cfg.server.transport, timeout=cfg.cache.lookup_timeout_seconds)
        self.embedder = None
        self.semantic_off_reason = ""
        self._limiter = trio.CapacityLimiter(1)
        self._warned = 0.0
        self._load_embedder()

    def _load_embedder(self) -> None:
        c = self.cfg.cache
        if c.embedding_model == "none":
            self.semantic_off_reason = "cache.embedding_model is \"none\""
            log.info("cache: exact matches only (%s)", self.semantic_off_reason)
            return
        from . import embedder
        try:
            self.embedder = embedder.load(c.embedding_model, c.embedding_tokenizer, c.embedding_pooling,
                                          c.embedding_sha256)
            log.info("cache: semantic layer on, embedder %s", self.embedder.model_id)
        except (embedder.EmbedderUnavailable, ValueError) as e:
            self.semantic_off_reason = str(e)
            log.warning("cache: the embedding model cannot load, so the cache matches exactly only: %s", e)

    async def run(self) -> None:
        await self.client.run()

    def close(self) -> None:
        self.client.close()

    # --- plan ---------------------------------------------------------------------------------
    def policy(self, route, key) -> CachePolicy | None:
        """The route's policy with the virtual key's overrides ([cache.keys."ID"]) applied, or None
        when this route and key do not cache. An override adjusts a route's cache (or turns it off
        for the key); it never turns one on: a route without an enabled [routes.cache] stays off."""
        base = route.cache
        if base is None or not base.enabled:
            return None
        over = self.cfg.cache.keys.get(key.id) if key is not None else None
        if over:
            merged = {f: getattr(base, f) for f in CachePolicy.__struct_fields__}
            merged.update(over)
            base = CachePolicy(**merged)
        return base if base.enabled else None

    def plan(self, call, route, req: ChatRequest) -> Plan | None:
        """Caching for this request, or None when the route and key do not cache it."""
        policy = self.policy(route, call.key)
        if policy is None or call.op not in CACHEABLE_OPS or not isinstance(req, ChatRequest):
            return None
        opts = request_options(call.headers, policy)
        owner = keys.owner(call.key.id if call.key is not None else None, route.name if policy.shared else None)
        context, question = keys.split(req)
        try:
            question.encode()       # stored and embedded as UTF-8 too, also under an explicit key
            scope = keys.scope_key(call.op, call.model_id, owner, context)
            exact = (keys.explicit_key(call.op, call.model_id, owner, opts["key"]) if opts["key"]
                     else keys.exact_key(scope, question))
        except UnicodeEncodeError:  # a lone surrogate (a JSON "\ud800" escape): not cached, not an error
            return None
        semantic = opts["semantic"] and self.embedder is not None and bool(question.strip())
        return Plan(scope=scope, exact=exact, question=question, owner=owner, ns=f"{route.name}|{owner}",
                    policy=policy, ttl=opts["ttl"], threshold=opts["threshold"], exact_layer=opts["exact"],
                    semantic_layer=semantic, store=opts["store"])

    # --- lookup -------------------------------------------------------------------------------
    async def lookup(self, plan: Plan) -> tuple[Hit | None, bytes | None]:
        """(hit, vector): the hit, or None; and the question's vector when one was computed (a
        miss stores it with the answer, so the question is embedded once)."""
        vec = None
        try:
            if plan.exact_layer:
                out = await self.client.get(plan.exact, final=not plan.semantic_layer)
                if out.get("hit"):
                    return Hit("hit-exact", msgpack.unpackb(out["answer"], raw=False), 1.0, out["saved"]), None
            if plan.semantic_layer:
                v = await trio.to_thread.run_sync(self.embedder.embed, plan.question, limiter=self._limiter)
                vec = v.tobytes()
                out = await self.client.search(plan.scope, vec, self.embedder.model_id, plan.threshold)
                if out.get("hit"):
                    return (Hit("hit-semantic", msgpack.unpackb(out["answer"], raw=False), out["sim"], out["saved"]),
                            vec)
        except errors.GatewayError as e:
            self._warn(f"cache lookup skipped: {e.message}")
        return None, vec

    def _warn(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._warned > 10:
            self._warned = now
            log.warning("%s", msg)

    # --- replay -------------------------------------------------------------------------------
    @staticmethod
    async def replay(hit: Hit, reply, extra_headers: list) -> dict:
        """Send the recorded answer; returns its usage (what the original answer reported)."""
        a = hit.answer
        await reply.head(a["status"], a["headers"] + extra_headers, stream=a["stream"])
        if not a["stream"]:
            await reply.body(a["body"])
            return a["usage"]
        for events in a["chunks"]:
            await reply.chunks([tuple(ev) for ev in events])
        await reply.end(a["usage"])
        return a["usage"]

    # --- store --------------------------------------------------------------------------------
    def store(self, plan: Plan, call, tape: list | None, vec: bytes | None, cost_usd: float) -> bool:
        """Send a complete, successful answer to the actor. Returns whether it was sent."""
        answer = recorded_answer(tape)
        if answer is None:
            return False
        blob = _pack(answer)
        if len(blob) > self.cfg.cache.max_entry_bytes:
            return False
        if vec is None and plan.semantic_layer:
            return False        # the lookup could not embed (actor down?): skip rather than embed again
        msg = {"scope": plan.scope, "exact": plan.exact, "ns": plan.ns, "ns_max": plan.policy.max_entries,
               "owner": plan.owner, "model": call.model_id, "question": plan.question[:2000], "answer": blob,
               "ttl": plan.ttl, "saved": cost_usd}
        if vec is not None:
            msg["vec"], msg["emb"] = vec, self.embedder.model_id
        return self.client.put(msg)


GATEWAY_HEADERS = ("x-bf-", "x-amzn-requestid")


def recorded_answer(tape: list | None) -> dict | None:
    """The answer a `Reply.tape` recorded, if it is complete and successful; else None.
    Headers of the gateway's own (x-bf-*: target, attempts, cost, budget) are left out: a replay
    gets its own."""
    if not tape or tape[0][0] != "head" or tape[0][1] != 200:
        return None
    _, status, headers, stream = tape[0]
    ans = {"status": status, "stream": stream, "usage": {},
           "headers": [list(h) for h in headers if not h[0].lower().startswith(GATEWAY_HEADERS)]}
    if not stream:
        if len(tape) != 2 or tape[1][0] != "body":
            return None
        ans["body"] = tape[1][1]
        return ans
    if tape[-1][0] != "end":
        return None
    ans["chunks"] = [[list(ev) for ev in item[1]] for item in tape[1:-1] if item[0] == "chunks"]
    ans["usage"] = tape[-1][1]
    return ans


def hit_headers(hit: Hit) -> list:
    """A cache hit's own headers: what happened, the similarity of a semantic hit, and what it
    cost (nothing) and saved."""
    h = [["x-bf-cache", hit.kind], ["x-bf-cost-usd", "0.000000"], ["x-bf-cache-saved-usd", f"{hit.saved_usd:.6f}"]]
    if hit.kind == "hit-semantic":
        h.append(["x-bf-cache-similarity", f"{hit.similarity:.4f}"])
    return h
