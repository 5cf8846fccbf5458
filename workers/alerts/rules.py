"""When an alert fires, and what a delivery does next. Pure: numbers and dicts in, decisions out;
the clock is an argument.

    budget_alerts(usage, thresholds_for)            -> [Alert]  every threshold a budget has reached
    forecast_alerts(usage, forecasts)               -> [Alert]  budgets projected past 100 %
    anomaly(last_hour, history, factor, floor, active) -> "fire" | "clear" | None
    after_attempt(delivery, ok, error, now, created_at, retry_seconds, backoff) -> Delivery

An `Alert`'s `dedupe` key says what makes it one event: (kind, budget scope, period start,
threshold) for budgets and forecasts, (kind, scope, hour it started) for anomalies. The outbox
stores it under a UNIQUE constraint, and the alert's id (its idempotency id) is a hash of it, so an
event detected twice, or by two processes, is recorded once and always has the same id. Detection
can therefore be stateless: every check recomputes every crossing of the current periods and
the outbox keeps the first.

Choices:
* A budget has reached a threshold when its settled spend (`spent_usd`, the ledger's; reservations
  in flight are not counted: they may be released) is at least that percentage of its limit.
  Every threshold reached fires its own alert, once per period: a burst from 0 to 100 % sends
  50, 80 and 100. A budget of $0 (a block) never alerts.
* A forecast alert fires when the projection at the period's end passes the limit while the spend
  has not reached it yet (once it has, the 100 % alert says more).
* Anomaly: the last hour's spend against the median of the same hour of day on each of the last
  7 days (a day without spend counts as 0, so a key's first busy hour can fire when it passes
  the floor). Anomalous = at least `floor` USD and more than `factor` x the median. It fires once
  when it becomes anomalous, then stays quiet (the outbox remembers the episode) until an hour
  that is not anomalous clears it.
* Delivery: after a failed attempt, the next is `backoff x 2^(attempts-1)` later (at most
  MAX_BACKOFF), never later than the deadline `created_at + retry_seconds`; a failure at or past
  the deadline gives up (status "failed"). A 2xx is "delivered".
"""
from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Literal

MAX_BACKOFF = 300.0          # seconds between two attempts, at most
KINDS = ("budget", "forecast", "anomaly")


@dataclass(frozen=True)
class Alert:
    dedupe: str              # what makes it one event (the outbox's unique key)
    kind: str                # "budget" | "forecast" | "anomaly"
    level: str               # key | team | customer
    owner: str
    period: str              # the budget's period; "hour" for anomalies
    env: str
    period_start: str        # ISO UTC: the budget period (or the anomaly's hour) it belongs to
    threshold: float         # % of the budget (100 for forecasts); the factor for anomalies
    message: str
    data: dict               # the figures: spent_usd, limit_usd, forecast_usd, ...

    @property
    def id(self) -> str:
        return alert_id(self.dedupe)


def alert_id(dedupe: str) -> str:
    """The stable idempotency id of an event: the same however often, or by whom, it is detected."""
    return "al_" + hashlib.sha256(dedupe.encode()).hexdigest()[:24]


def scope_of(u: dict) -> str:
    return f"{u['level']}|{u['owner']}|{u['period']}|{u.get('env', '')}"


def _budget_name(u: dict) -> str:
    return u.get("label") or f"{u['level']} {u['owner']!r} {u['period']} budget"


def budget_alerts(usage: Iterable[dict], thresholds_for: Callable[[dict], Iterable[float]]) -> list[Alert]:
    """An Alert for every threshold (percent) that each budget entry of the ledger's usage report
    has reached this period; `thresholds_for(entry)` gives the entry's thresholds."""
    out = []
    for u in usage:
        if u.get("kind") != "budget" or not u.get("limit_usd", 0) > 0:
            continue
        limit, spent = float(u["limit_usd"]), float(u["spent_usd"])
        pct = spent / limit * 100
        for t in sorted(set(float(x) for x in thresholds_for(u))):
            if pct + 1e-9 >= t:
                out.append(Alert(
                    dedupe=f"budget|{scope_of(u)}|{u['period_start']}|{t:g}", kind="budget",
                    level=u["level"], owner=u["owner"], period=u["period"], env=u.get("env", ""),
                    period_start=u["period_start"], threshold=t,
                    message=(f"{_budget_name(u)}: {pct:.0f} % spent (${spent:.6f} of ${limit:g}), "
                             f"passing the {t:g} % threshold; it resets at {u['resets_at']}"),
                    data={"spent_usd": round(spent, 6), "limit_usd": round(limit, 6),
                          "percent": round(pct, 2), "resets_at": u["resets_at"]}))
    return out


def forecast_alerts(usage: Iterable[dict], forecasts: Iterable) -> list[Alert]:
    """An Alert for each budget whose forecast (observe/forecast.Forecast, or None) passes its
    limit at the period's end while its spend has not reached the limit yet."""
    out = []
    for u, f in zip(usage, forecasts):
        if f is None or u.get("kind") != "budget" or not u.get("limit_usd", 0) > 0:
            continue
        limit, spent = float(u["limit_usd"]), float(u["spent_usd"])
        if spent >= limit or not f.projected_usd > limit:
            continue
        out.append(Alert(
            dedupe=f"forecast|{scope_of(u)}|{u['period_start']}|100", kind="forecast",
            level=u["level"], owner=u["owner"], period=u["period"], env=u.get("env", ""),
            period_start=u["period_start"], threshold=100.0,
            message=(f"{_budget_name(u)}: forecast ${f.projected_usd:.2f} by {u['resets_at']} "
                     f"({f.projected_usd / limit * 100:.0f} % of the limit; ${spent:.6f} spent so far)"),
            data={"spent_usd": round(spent, 6), "limit_usd": round(limit, 6),
                  "forecast_usd": round(f.projected_usd, 6), "crosses_at": f.crosses_at,
                  "rate_usd_per_hour": round(f.rate_usd_per_hour, 6), "model": f.model,
                  "resets_at": u["resets_at"]}))
    return out


def anomaly(last_hour: float, history: list[float], *, factor: float, floor: float,
            active: bool) -> Literal["fire", "clear"] | None:
    """The decision for one key or team: "fire" when its last hour became anomalous, "clear" when
    an anomaly it had is over, None when nothing changes (see the module doc)."""
    usual = statistics.median(history) if history else 0.0
    anomalous = last_hour >= floor and last_hour > factor * usual
    if anomalous and not active:
        return "fire"
    if active and not anomalous:
        return "clear"
    return None


def anomaly_alert(level: str, owner: str, last_hour: float, history: list[float], factor: float,
                  hour_start: str) -> Alert:
    usual = statistics.median(history) if history else 0.0
    return Alert(
        dedupe=f"anomaly|{level}|{owner}|{hour_start}", kind="anomaly", level=level, owner=owner,
        period="hour", env="", period_start=hour_start, threshold=factor,
        message=(f"{level} {owner!r} spent ${last_hour:.2f} in the last hour, "
                 + (f"{last_hour / usual:.1f} x its median of ${usual:.4f}" if usual > 0 else "with no usual spend")
                 + " for that hour over the last 7 days"),
        data={"last_hour_usd": round(last_hour, 6), "median_usd": round(usual, 6),
              "history_usd": [round(h, 6) for h in history], "factor": factor})


# --- deliveries -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Delivery:
    status: str = "pending"      # pending | delivered | failed (given up)
    attempts: int = 0
    next_at: float = 0.0         # when the next attempt is due (pending)
    last_error: str = ""
    delivered_at: float | None = None


def after_attempt(d: Delivery, ok: bool, error: str, now: float, *, created_at: float,
                  retry_seconds: float, backoff: float) -> Delivery:
    """The delivery after one attempt at `now`: delivered on success; else retried with
    exponential backoff until the deadline, then given up."""
    attempts = d.attempts + 1
    if ok:
        return replace(d, status="delivered", attempts=attempts, last_error="", delivered_at=now)
    deadline = created_at + retry_seconds
    if now >= deadline:
        return replace(d, status="failed", attempts=attempts, last_error=error)
    wait = min(backoff * 2 ** (attempts - 1), MAX_BACKOFF)
    return replace(d, status="pending", attempts=attempts, last_error=error, next_at=min(now + wait, deadline))
