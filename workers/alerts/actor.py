"""The alerts actor: detects budget, forecast and anomaly alerts and delivers them to webhooks.

    python -m finops.workers.alerts.actor      (started by `finops serve` when [alerts] has a webhook)

Design, and why:
* **Its own process, one per node.** Detection needs the ledger's counters and the request log;
  delivery needs an HTTP client that may wait seconds on a slow receiver. Neither belongs on the
  request path (a worker must never wait on a webhook) nor in the ledger (which must answer a
  reserve in microseconds). So it is an actor of its own (shared/actors.BlockingActor), which
  asks the others as any admin request does: the ledger's `usage` message (the very reply
  `/admin/usage` shows) and a read-only connection to the request log.
* **Detection is stateless and repeated; the outbox makes it fire once.** Every
  `[alerts] check_seconds` (1 s) it reads every budget's current period from the ledger and
  computes every threshold reached (rules.budget_alerts); every `analysis_seconds` (60 s) it
  also projects each budget (observe/forecast.py, through dashboard.budget_forecasts, the same
  forecast /admin/usage and the dashboard show) and checks each key's and team's last hour
  (rules.anomaly). Each event has a dedupe key (scope, period start, threshold) under a UNIQUE
  constraint in the outbox (outbox.py), so it is recorded once, however many times or by however
  many processes it is detected, and a restart cannot fire it again. Concurrent traffic across
  workers needs nothing more: the ledger is the one place spend is counted, and the check reads
  its settled figure.
* **Delivery from the durable outbox, at least once.** Due deliveries are claimed one at a time
  and POSTed; one is marked delivered only after a 2xx, else retried with exponential backoff
  (`backoff_seconds`, doubling, at most 5 min apart) for `retry_seconds`, then marked failed.
  The outbox row's id is the idempotency id (header `X-FinOps-Idempotency-Key` and the body's
  `id`): a crash or restart between a POST and its mark re-sends the same id, and the receiver
  dedupes. Nothing is lost: a fired alert is in the outbox before any POST.
* **Delivery blocks the loop, by design:** the actor has nothing else urgent to do; each POST has
  the webhook's `timeout_seconds`, and a round of deliveries stops after DELIVER_SECONDS so a dead
  receiver cannot hold detection up for long (detection is durable anyway).
* **Metrics.** The outbox's counts (sent, failed per kind) are written to
  <run_dir>/alerts.json after each change; the observer renders them at a scrape as
  finops_alerts_sent_total and finops_alerts_failed_total. Being counts of rows in the outbox,
  they survive restarts of either process. On a fleet's outbox they are this node's share (the
  deliveries it sent or gave up on), so a sum over the nodes' /metrics is the fleet's.

Several nodes (`governance.store = "postgres"` or `governance.ledger = "redis"`): every node's
ledger reports the fleet's counters, so every node's alerts actor detects the same events; the
outbox is then the fleet's, on PostgreSQL (pg_outbox.py): each event is recorded once
fleet-wide, each delivery is claimed by one node with a lease (`[alerts] lease_seconds`) and sent
by it, and a node that dies holding one is taken over when the lease expires. A receiver gets
each alert once (again, with the same id, only after such a takeover or a lost acknowledgement).

PostgreSQL unreachable (a fleet's outbox): detection goes on; an alert it cannot record is kept
in memory (`waiting`, at most MAX_WAITING) and recorded when PostgreSQL answers; nothing is
claimed, so nothing is sent; a mark that cannot be written is kept (`unmarked`) and written
first when it answers (if the lease ran out meanwhile and another node took the delivery over,
the mark is refused and that node's outcome stands). A warning is logged when it goes away and
when it is back.
"""
from __future__ import annotations

import json
import logging
import math
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

import msgpack

from finops.shared import actors, transport
from finops.shared import config as configmod
from finops.shared.actors import BlockingActor
from finops.shared.rundir import ALERTS_FILE
from finops.shared.transport import zmq

from ..governance.directory import load_directory
from ..governance.money import micros
from ..governance.periods import iso
from ..governance.stores import open_directory, open_store, watched
from ..governance.store import StoreError
from ..observe import dashboard, pglog
from . import outbox, payload, rules
from .spend import same_hour_spend

log = logging.getLogger("finops.alerts")

DELIVER_SECONDS = 10.0          # one round of deliveries stops after this long (the rest waits a tick)
LEDGER_TIMEOUT = 2.0            # the ledger's usage reply
MAX_WAITING = 10_000            # alerts detected while the outbox is unreachable, kept in memory
WARN_EVERY = 30.0               # seconds between two warnings that the outbox is still unreachable


def http_post(url: str, body: bytes, headers: dict, timeout: float) -> tuple[int, str]:
    """(HTTP status, error text); status 0 when no answer came."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        ctx = ssl.create_default_context() if url.startswith("https") else None
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            r.read(65536)
            return r.status, ""
    except urllib.error.HTTPError as e:
        return e.code, f"HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return 0, f"{type(e).__name__}: {getattr(e, 'reason', e)}"


class AlertsActor(BlockingActor):
    kind = "alerts"

    def __init__(self, cfg: configmod.Config, clock=time.time, post=http_post):
        super().__init__(cfg, clock)
        self.a = cfg.alerts
        self.TICK_SECONDS = self.a.check_seconds
        self.post = post
        self.webhooks = {w.name: w for w in self.a.webhooks}
        self.node = cfg.server.node
        self.box = outbox.open_outbox(cfg)     # SQLite in the data dir, or the fleet's on PostgreSQL (lazy)
        # governance on PostgreSQL: the directory comes from a watcher, which waits for PostgreSQL by itself
        self.store = None if watched(cfg) else open_store(cfg)
        self.directory = open_directory(cfg, self.store, must_load=False)
        self.version = None
        self.alert_at: dict[tuple, tuple[float, ...]] = {}
        self.seen: set[str] = set()            # dedupe keys known to be in the outbox
        self.waiting: dict[str, tuple[rules.Alert, str | None]] = {}   # detected, not recorded yet (outbox down)
        self.unmarked: list[tuple[outbox.Claim, rules.Delivery]] = []  # outcomes not written yet (outbox down)
        self.down_since: float | None = None   # the outbox has been unreachable since then
        self.warned = 0.0
        self.next_analysis = 0.0
        self.published = None
        self.counts_stale = True               # this actor changed a delivery since the counts were read
        self.ledger = actors.Peer(self.run_dir, "ledger")
        self.reply: zmq.Socket | None = None
        self.reply_endpoint = ""
        self.n = 0

    def handle(self, msg: dict) -> dict | None:
        return None

    # --- the periodic work --------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock()
        self.record_waiting(now)
        usage = self.ledger_usage()
        budgets = [u for u in usage or () if u.get("kind") == "budget"]
        if usage is not None:
            self.reload_thresholds()
            for alert in rules.budget_alerts(budgets, self.thresholds_for):
                self.fire(alert, now)
        if now >= self.next_analysis:
            self.next_analysis = now + self.a.analysis_seconds
            self.analyse(budgets if usage is not None else [], now)
        self.deliver()
        self.publish_counts()

    # --- the outbox, reachable or not (a fleet's is on PostgreSQL) -------------------------------
    def outbox_failed(self, e: StoreError, doing: str) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        if now - self.warned >= WARN_EVERY:
            self.warned = now
            log.warning("alerts: the outbox is unreachable (%s) while %s; detection goes on, delivery waits "
                        "(%d alerts and %d delivery outcomes kept until it answers)", e, doing,
                        len(self.waiting), len(self.unmarked))

    def outbox_answered(self) -> None:
        if self.down_since is not None:
            log.warning("alerts: the outbox answers again after %.0fs", time.monotonic() - self.down_since)
            self.down_since = None
            self.warned = 0.0

    def fire(self, alert: rules.Alert, now: float, anomaly_scope: str | None = None) -> None:
        """Record `alert` (an anomaly's: with its episode) unless known to be recorded; kept in
        `waiting` when the outbox cannot be reached."""
        if alert.dedupe in self.seen:
            return
        try:
            if anomaly_scope is None:
                new = self.box.record(alert, list(self.webhooks), now)
            else:
                new = self.box.start_anomaly(anomaly_scope, alert, list(self.webhooks), now)
        except StoreError as e:
            if alert.dedupe not in self.waiting and len(self.waiting) < MAX_WAITING:
                self.waiting[alert.dedupe] = (alert, anomaly_scope)
            elif alert.dedupe not in self.waiting:
                log.error("alerts: %d alerts already wait for the outbox; alert %s (%s) is dropped",
                          MAX_WAITING, alert.id, alert.message)
            self.outbox_failed(e, f"recording alert {alert.id}")
            return
        self.outbox_answered()
        self.waiting.pop(alert.dedupe, None)
        if new:
            log.warning("alert %s fired: %s", alert.id, alert.message)
        self.seen.add(alert.dedupe)

    def record_waiting(self, now: float) -> None:
        """The alerts detected while the outbox was unreachable, oldest first."""
        for alert, scope in list(self.waiting.values()):
            self.fire(alert, now, scope)
            if alert.dedupe in self.waiting:      # still unreachable
                return

    def analyse(self, budgets: list[dict], now: float) -> None:
        """Forecast and anomaly alerts, from the request log (when it is on and has rows)."""
        if not self.cfg.observability.request_log or not (self.a.forecast or self.a.anomaly):
            return
        try:
            db = pglog.open_reader(self.cfg)        # this node's SQLite log, or the fleet's on PostgreSQL
        except (FileNotFoundError, StoreError):     # no row yet, or PostgreSQL unreachable: next round
            return
        try:
            if self.a.forecast and budgets:
                for alert in rules.forecast_alerts(budgets, dashboard.budget_forecasts(db, budgets, now)):
                    self.fire(alert, now)
            if self.a.anomaly:
                self.anomalies(same_hour_spend(db, now), now)
        finally:
            db.close()

    def anomalies(self, spend: dict, now: float) -> None:
        try:
            active = self.box.anomaly_active()
        except StoreError as e:                     # which episodes are open is unknown: next round
            self.outbox_failed(e, "reading the anomalies in progress")
            return
        hour = iso(math.floor(now / 3600) * 3600)
        try:
            for (level, owner), (last, history) in spend.items():
                scope = f"{level}|{owner}"
                d = rules.anomaly(last, history, factor=self.a.anomaly_factor, floor=self.a.anomaly_min_usd,
                                  active=scope in active)
                if d == "fire":
                    self.fire(rules.anomaly_alert(level, owner, last, history, self.a.anomaly_factor, hour), now,
                              anomaly_scope=scope)
                elif d == "clear":
                    self.box.clear_anomaly(scope)
            for scope in set(active) - {f"{lv}|{o}" for lv, o in spend}:     # no spend at all any more
                self.box.clear_anomaly(scope)
        except StoreError as e:                     # a clear not written: the next round clears it
            self.outbox_failed(e, "clearing an anomaly")

    def deliver(self) -> None:
        """Send what is due: claim one delivery, POST it, mark it; until none is due or
        DELIVER_SECONDS have passed. The outbox unreachable: nothing is sent."""
        if not self.write_marks():
            return
        started = time.monotonic()
        while time.monotonic() - started <= DELIVER_SECONDS:
            try:
                claimed = self.box.claim(self.clock(), self.node, self.a.lease_seconds, limit=1)
            except StoreError as e:
                self.outbox_failed(e, "claiming due deliveries")
                return
            self.outbox_answered()
            if not claimed:
                return
            for c in claimed:
                self.mark(c, self.attempt(c))

    def attempt(self, c: outbox.Claim) -> rules.Delivery:
        """POST claim `c`'s alert to its webhook; the delivery's state after it."""
        alert, name, d = c.alert, c.webhook, c.delivery
        w = self.webhooks.get(name)
        if w is None:
            return rules.Delivery("failed", d.attempts, d.next_at, "this webhook is no longer in [alerts] webhooks")
        now = self.clock()
        status, error = self.send(w, alert, now)
        ok = 200 <= status < 300
        new = rules.after_attempt(d, ok, error or f"HTTP {status}", self.clock(), created_at=alert["created_at"],
                                  retry_seconds=self.a.retry_seconds, backoff=self.a.backoff_seconds)
        if not ok:
            log.warning("alert %s to %s: %s (attempt %d; %s)", alert["id"], name, new.last_error, new.attempts,
                        "giving up" if new.status == "failed" else f"retry in {new.next_at - now:.1f}s")
        return new

    def mark(self, c: outbox.Claim, d: rules.Delivery) -> None:
        """Write claim `c`'s outcome `d` (after any kept ones); kept while the outbox is unreachable."""
        self.unmarked.append((c, d))
        self.write_marks()

    def write_marks(self) -> bool:
        """The outcomes not written yet, in order (kept while the outbox was unreachable); False
        while it still is."""
        while self.unmarked:
            c, d = self.unmarked[0]
            try:
                ok = self.box.mark(c, d)
            except StoreError as e:
                self.outbox_failed(e, "writing the delivery outcomes kept")
                return False
            self.unmarked.pop(0)
            self.counts_stale = True
            if not ok:
                log.warning("alert %s to %s: %s here, not recorded: its lease had run out and another node "
                            "took the delivery over; that node's outcome stands", c.alert["id"], c.webhook, d.status)
        return True

    def send(self, w: configmod.WebhookConfig, alert: dict, now: float) -> tuple[int, str]:
        if w.format == "slack":
            body = payload.encode(payload.slack(alert))
            headers = {payload.IDEMPOTENCY_HEADER: alert["id"]}
        else:
            body = payload.encode(payload.event(alert))
            headers = payload.signed_headers(w.secret, alert["id"], body, now)
        headers.update({"Content-Type": "application/json", "User-Agent": "finops-gateway-alerts"})
        return self.post(w.url, body, headers, w.timeout_seconds)

    def publish_counts(self) -> None:
        """The outbox's counts (this node's share of a fleet's), for the observer's /metrics
        (read after this actor changed a delivery, written when they change)."""
        if not self.counts_stale:
            return
        try:
            counts = self.box.counts(self.node)
        except StoreError:                     # unreachable: the last counts stand
            return
        self.counts_stale = False
        if counts == self.published:
            return
        path = os.path.join(self.run_dir, ALERTS_FILE)
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(counts, f)
            os.replace(path + ".tmp", path)
            self.published = counts
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)

    # --- thresholds: [alerts] thresholds, or a budget's own alert_at -----------------------------
    def reload_thresholds(self) -> None:
        v = self.directory.data_version()
        if v == self.version:
            return
        self.version = v
        d = load_directory(self.directory, self.cfg)
        out = {}
        for level, owners in (("key", d.keys), ("team", d.teams), ("customer", d.customers)):
            for o in owners.values():
                for b in o.budgets:
                    if b.alert_at:
                        out[(level, o.id, b.period, b.env, micros(b.amount_usd))] = b.alert_at
        self.alert_at = out

    def thresholds_for(self, u: dict):
        return self.alert_at.get((u["level"], u["owner"], u["period"], u.get("env", ""), micros(u["limit_usd"])),
                                 self.a.thresholds)

    # --- the ledger's usage, asked as a worker asks it ------------------------------------------
    def ledger_usage(self) -> list[dict] | None:
        """The ledger's usage report for everyone (its "usage" message), or None when no ledger
        answers within LEDGER_TIMEOUT (it is restarting; the next tick asks again)."""
        ledger = self.ledger.socket()
        if ledger is None:
            return None
        if self.reply is None:
            self.reply = transport.make_socket(zmq.PULL)
            self.reply_endpoint = transport.bind(
                self.reply, transport.endpoint_for("alerts-reply", self.run_dir, self.cfg.server.transport))
        self.n += 1
        try:
            ledger.send(actors.pack({"k": "usage", "i": self.n, "r": self.reply_endpoint, "key": None}),
                             zmq.NOBLOCK)
        except zmq.Again:
            return None
        deadline = time.monotonic() + LEDGER_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            if self.reply.poll(int(left * 1000) + 1):
                msg = msgpack.unpackb(self.reply.recv(), raw=False)
                if msg.get("i") == self.n:
                    if "error" in msg:          # the ledger's backend (Redis) is unreachable
                        log.warning("alerts: the ledger has no usage now (%s); checking again next tick",
                                    msg["error"])
                        return None
                    return msg.get("usage", [])
        log.warning("alerts: the ledger did not answer its usage in %.0fs; checking again next tick", LEDGER_TIMEOUT)
        return None

    def close(self) -> None:
        self.ledger.close(linger=0)
        if self.reply is not None:
            self.reply.close(linger=0)
        self.box.close()
        self.directory.close()
        if self.store is not None:
            self.store.close()


if __name__ == "__main__":
    sys.exit(actors.main(AlertsActor))
