"""Prometheus metrics of the whole gateway, kept by the observer actor. No I/O.

Every request's log row reaches the observer (observe/actor.py), so the metrics are aggregated
over every worker by construction: each row updates the counters and histograms here once, and a
scrape of `/metrics` anywhere renders them. Processes also report gauges (requests in flight,
queue depths) every second; a process that stops reporting drops out after GAUGE_TTL seconds.

Names and labels follow Prometheus conventions (`finops_` prefix, `_total` counters, base units:
`_seconds`, `_usd`). Label values that clients choose (modelId, `x-bf-env`) are bounded: past
`MAX_VALUES` distinct values a label reads "other", so a client cannot blow up the series count.
Virtual keys are labelled by key id (never the secret); requests without a key by "".
"""
from __future__ import annotations

import time

from .exposition import CONTENT_TYPE, Counter, Gauge, Histogram, Registry  # noqa: F401  (CONTENT_TYPE: actor.py)

MAX_VALUES = 200           # distinct values per client-chosen label
GAUGE_TTL = 10.0           # seconds a process's gauges count after its last report
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Bounded:
    """Label values as they come, until MAX_VALUES distinct ones; then "other"."""

    def __init__(self, limit: int = MAX_VALUES):
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return "other"
        self.seen.add(value)
        return value


class Metrics:
    def __init__(self, clock=time.monotonic, node: str = ""):
        self.clock = clock
        self.node = node            # every sample gets node="..." (a fleet: README "Several nodes")
        self.registry = r = Registry()
        self.model, self.env = Bounded(), Bounded()
        self.vk = Bounded(10 * MAX_VALUES)        # key ids come from the directory, not from clients
        req = ["op", "model", "provider", "env", "virtual_key", "status", "error"]
        self.requests = Counter("finops_requests", "Requests answered, by outcome (error: the AWS error code, "
                                "'' when ok).", req, registry=r)
        self.latency = Histogram("finops_request_duration_seconds", "Time from the request reaching a worker to "
                                 "its answer's end.", ["op", "model", "provider"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.ttft = Histogram("finops_time_to_first_token_seconds", "Streams: time to the first event.",
                              ["model", "provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("finops_tokens", "Tokens the upstream reported, by type (input, output, "
                              "cache_read, cache_write).", ["model", "provider", "env", "virtual_key", "type"],
                              registry=r)
        self.cost = Counter("finops_cost_usd", "What requests cost, priced by the pricing table (USD).",
                            ["model", "provider", "env", "virtual_key"], registry=r)
        self.cache = Counter("finops_cache_requests", "Requests on routes with the response cache, by result.",
                             ["model", "result"], registry=r)
        self.saved = Counter("finops_cache_saved_usd", "What cache hits saved: the cost of the answers they "
                             "replayed (USD).", ["model", "env", "virtual_key"], registry=r)
        self.rejections = Counter("finops_governance_rejections", "Requests refused by governance, by reason "
                                  "(the AWS error code).", ["reason", "virtual_key"], registry=r)
        self.upstream_errors = Counter("finops_upstream_errors", "Failed answers from upstream providers, by "
                                       "the AWS error code the client got.", ["provider", "code"], registry=r)
        self.uncounted = Counter("finops_ledger_uncounted", "Requests served without a budget or rate-limit "
                                 "check because the ledger's Redis was unreachable (redis_failure = \"open\").",
                                 registry=r)
        self.ledger_dropped = Counter("finops_ledger_dropped", "Records the ledger had to drop: settles kept while "
                                      "Redis was unreachable (settle), settled-spend rows waiting for PostgreSQL "
                                      "(spend_row), past their bounded queues.", ["what"], registry=r)
        self.cache_repl = Counter("finops_cache_replication_records", "Cache replication between nodes "
                                  "([cache] replication = \"redis\"): records published, applied from other nodes, "
                                  "skipped as expired, dropped past the bounded queue while Redis was away.", ["what"],
                                  registry=r)
        self.rows = Counter("finops_request_log_rows", "Rows written to the request log.", registry=r)
        self.log_drops = Counter("finops_request_log_dropped", "Request-log rows dropped because PostgreSQL was "
                                 "unreachable and the node's spool was full (log_spool_max_mb).", registry=r)
        self.inflight = Gauge("finops_requests_in_flight", "Requests being served, by process kind.",
                              ["process"], registry=r)
        self.queue = Gauge("finops_queue_depth", "Items waiting in the gateway's internal queues.", ["queue"],
                           registry=r)
        self.restart_counts: dict[str, int] = {}
        r.register(_Restarts(self))
        self.alert_counts: dict = {}
        r.register(_Alerts(self))
        self.semantic = Gauge("finops_cache_semantic_enabled", "1 when the workers have the embedding model "
                              "loaded (semantic cache layer on), 0 when the cache matches exactly only.",
                              registry=r)
        self.reports: dict[str, tuple[float, str, dict]] = {}    # process -> (when, kind, gauges)
        self._pending: dict[tuple, float] = {}                     # (counter, label values) -> increment

    def observe(self, row: dict) -> None:
        """One request-log row (logdb column names). Counter increments are summed in a dict
        and applied to the Prometheus objects by `apply()` (every observer tick and before a
        scrape): a row costs a few dict updates instead of a labelled lookup per counter."""
        model, env = self.model(row["model"]), self.env(row["env"])
        provider, vk, op = row["provider"], self.vk(row["vk"]), row["op"]
        error = row["error"]
        add = self._add
        add(self.requests, (op, model, provider, env, vk, str(row["status"]), error), 1)
        self.latency.labels(op, model, provider).observe(row["latency_ms"] / 1000)
        if row["ttft_ms"] is not None:
            self.ttft.labels(model, provider).observe(row["ttft_ms"] / 1000)
        for kind in ("input", "output", "cache_read", "cache_write"):
            n = row[f"{kind}_tokens"]
            if n:
                add(self.tokens, (model, provider, env, vk, kind), n)
        if row["cost_usd"]:
            add(self.cost, (model, provider, env, vk), row["cost_usd"])
        if row["cache"]:
            add(self.cache, (model, row["cache"]), 1)
            if row["saved_usd"]:
                add(self.saved, (model, env, vk), row["saved_usd"])
        if error and row["error_origin"] == "governance":
            add(self.rejections, (error, vk), 1)
        elif error and row["error_origin"] == "upstream":
            add(self.upstream_errors, (provider, error), 1)
        add(self.rows, (), 1)

    def add_cost(self, row: dict, usd: float) -> None:
        """A change to the cost of a row already observed (the ledger charged it: actor.py)."""
        if usd:
            self._add(self.cost, (self.model(row["model"]), row["provider"], self.env(row["env"]),
                                  self.vk(row["vk"])), usd)

    def ledger_counts(self, counts: dict) -> None:
        """Increments from the ledger actor (its Redis backend)."""
        if counts.get("uncounted"):
            self._add(self.uncounted, (), counts["uncounted"])
        for what, name in (("settle", "settles_dropped"), ("spend_row", "spend_dropped")):
            if counts.get(name):
                self._add(self.ledger_dropped, (what,), counts[name])

    def log_dropped(self, n: int) -> None:
        self._add(self.log_drops, (), n)

    def cache_counts(self, counts: dict) -> None:
        """Increments from the cache actor's replication (workers/cache/replication.py)."""
        for what in ("published", "applied", "expired_skipped", "dropped"):
            if counts.get(what):
                self._add(self.cache_repl, (what,), counts[what])

    def _add(self, counter, labels: tuple, amount: float) -> None:
        key = (counter, labels)
        self._pending[key] = self._pending.get(key, 0) + amount

    def apply(self) -> None:
        """Move the summed counter increments into the Prometheus counters."""
        pending, self._pending = self._pending, {}
        for (counter, labels), amount in pending.items():
            (counter.labels(*labels) if labels else counter).inc(amount)

    def report(self, process: str, kind: str, gauges: dict) -> None:
        """A process's gauges: {"inflight": n, "queues": {name: n}, "semantic": 0|1}."""
        self.reports[process] = (self.clock(), kind, gauges)

    def set_alerts(self, counts: dict) -> None:
        """The alerts actor's outbox counts: {"sent": {kind: n}, "failed": {kind: n}, ...}."""
        self.alert_counts = counts

    def set_restarts(self, restarts: dict) -> None:
        """The supervisor's restart counts per process kind (it keeps them; see supervisor.py)."""
        self.restart_counts = {str(k): int(v) for k, v in restarts.items()}

    def render(self, own_queues: dict | None = None) -> bytes:
        """The exposition text. Gauges are summed over the processes that reported lately."""
        self.apply()
        now = self.clock()
        inflight: dict[str, float] = {}
        queues: dict[str, float] = dict(own_queues or {})
        semantic = None
        for proc, (when, kind, g) in list(self.reports.items()):
            if now - when > GAUGE_TTL:
                del self.reports[proc]
                continue
            inflight[kind] = inflight.get(kind, 0) + g.get("inflight", 0)
            for q, n in g.get("queues", {}).items():
                queues[q] = queues.get(q, 0) + n
            if "semantic" in g:
                semantic = min(semantic if semantic is not None else 1, g["semantic"])
        for kind in ("frontend", "worker"):
            self.inflight.labels(kind).set(inflight.get(kind, 0))
        self.queue.clear()          # a queue no process reports any more has no depth (not its last one)
        for q, n in queues.items():
            self.queue.labels(q).set(n)
        if semantic is not None:
            self.semantic.set(semantic)
        text = self.registry.render()
        return with_node(text, self.node) if self.node else text


def with_node(text: bytes, node: str) -> bytes:
    """The exposition `text` with node="..." added to every sample (first, before its own labels)."""
    esc = node.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    label = f'node="{esc}"'.encode()
    out = []
    for line in text.split(b"\n"):
        if line and not line.startswith(b"#"):
            name, sep, rest = line.partition(b"{")
            if sep:
                line = name + b"{" + label + (b"," if not rest.startswith(b"}") else b"") + rest
            else:
                name, _, value = line.partition(b" ")
                line = name + b"{" + label + b"} " + value
        out.append(line)
    return b"\n".join(out)


class _Restarts:
    """finops_process_restarts_total: a counter whose values the supervisor keeps."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        yield ("finops_process_restarts", "counter", "Times the supervisor restarted a process, by kind.",
               [("finops_process_restarts_total", {"kind": kind}, n)
                for kind, n in sorted(self.metrics.restart_counts.items())])


class _Alerts:
    """finops_alerts_sent_total and finops_alerts_failed_total: counts the alerts actor keeps in
    its outbox (deliveries acknowledged with a 2xx; given up after [alerts] retry_seconds)."""

    HELP = {"sent": "Alert deliveries a webhook acknowledged (2xx), by alert kind.",
            "failed": "Alert deliveries given up after [alerts] retry_seconds, by alert kind."}

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        for k, h in self.HELP.items():
            yield (f"finops_alerts_{k}", "counter", h,
                   [(f"finops_alerts_{k}_total", {"kind": kind}, n)
                    for kind, n in sorted((self.metrics.alert_counts.get(k) or {}).items())])
