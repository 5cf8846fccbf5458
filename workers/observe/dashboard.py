"""The dashboard's data: one JSON-able dict over the request log and the ledger's usage. Pure:
SQL queries on a sqlite3 connection, no other I/O.

    dashboard_data(db, usage, days=30, tz="Europe/Paris") -> {"since", "until", "days", "totals",
        "spend_by_env", "spend_by_key", "spend_by_model", "top_models", "requests_by_day",
        "errors_by_day", "cache_hits_by_day", "saved_usd_by_day", "budgets"}

Every per-day array has one value per entry of `days` (the last `days` calendar days in `tz`,
ending today, oldest first). Rows are placed by the log's `day` column (the request's calendar day
in governance.timezone when it was written), so the totals are exactly the sums of the per-day
arrays. Money is summed as integer micro-dollars and reported as USD rounded to 6 decimals.

Choices worth knowing:
* Errors exclude "cancelled" and "client_gone" (the client left; see report.py's CLIENT_LEFT).
* Series: envs ("" -> "(none)"), keys (named by vk_name, else the id; "" -> "(anonymous)"; two
  keys with one name are told apart as "name (id)") and models are ranked by spend over the
  window; beyond the top TOP the rest are summed into "(other)", which comes last. Envs are
  folded too, since clients choose them.
* top_models: the TOP models by spend (then requests), no "(other)" entry.
* budgets: the ledger's entries with kind "budget", in its order. limit/spent/remaining, the
  period bounds and the label come from the ledger (the source of truth; period_start and
  resets_at are passed through as it formats them). `burn` is the log's cumulative spend per day
  over the current period, from its first day to today (or its last day if it has ended), for the
  budget's owner (key -> vk, team, customer) and env when it has one; it is monotonic, and may
  differ from spent_usd (reservations in flight, rows not yet written, a log pruned by retention).
* forecast: forecast.py's projection of the budget's spend at its reset, made from the ledger's
  spent_usd and the shape of the log's spend this period (summed in BUCKETS buckets at most, each
  placed at its requests' mean time): projected_usd, rate_usd_per_hour, crosses_at (ISO UTC, when
  spend reaches the limit, past or projected; null if not this period), model, and the projection
  at the end of each remaining day of the period (`days`, `cumulative_usd`: the local days after
  the burn's last one; empty for minute and hour budgets). `budget_forecasts` is the same for any
  ledger usage entries (the admin API's /admin/usage `forecast_usd`).
"""
from __future__ import annotations

import sqlite3
import time
from datetime import date, datetime, timedelta, timezone

from .forecast import Forecast, forecast, projected_at
from .report import ERROR_SQL, HIT_SQL, day_bounds, days_between, micros_sql, usd, zone

TOP = 8         # keys and models the dashboard charts by name; the rest are "other"
OTHER = "(other)"
NO_ENV = "(none)"
ANONYMOUS = "(anonymous)"
OWNER_COLUMN = {"key": "vk", "team": "team", "customer": "customer"}
BUCKETS = 744   # at most this many spend points per budget forecast (a month's hours)


def dashboard_data(db: sqlite3.Connection, usage: list[dict], days: int, tz: str,
                   now: float | None = None) -> dict:
    """The dashboard's JSON document for the last `days` days in `tz` (see the module doc)."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    now = time.time() if now is None else float(now)
    today = datetime.fromtimestamp(now, zone(tz)).date()
    axis = days_between(today - timedelta(days=days - 1), today)
    index = {d: i for i, d in enumerate(axis)}
    rng = " WHERE day >= ? AND day <= ?"
    span = [axis[0], axis[-1]]

    daily = {m: [0] * len(axis) for m in ("requests", "errors", "cache_hits", "cost", "saved", "in", "out")}
    sql = (f"SELECT day, COUNT(*), IFNULL(SUM({ERROR_SQL}), 0), IFNULL(SUM({HIT_SQL}), 0), "
           f"{micros_sql('cost_usd')}, {micros_sql('saved_usd')}, IFNULL(SUM(input_tokens), 0), "
           f"IFNULL(SUM(output_tokens), 0) FROM requests{rng} GROUP BY day")
    for day, *vals in db.execute(sql, span):
        i = index.get(day)
        if i is not None:
            for m, v in zip(daily, vals):
                daily[m][i] += v

    budgets = [u for u in usage if u.get("kind") == "budget"]
    env_series = _series(db, "IFNULL(env, '')", rng, span, index, len(axis))
    env_series = {(k or NO_ENV): v for k, v in env_series.items()}
    models = _model_stats(db, rng, span)
    requests = sum(daily["requests"])
    errors = sum(daily["errors"])
    return {
        "since": axis[0], "until": axis[-1], "days": axis,
        "totals": {"requests": requests, "errors": errors,
                   "error_rate": round(errors / requests, 6) if requests else 0.0,
                   "cost_usd": usd(sum(daily["cost"])), "saved_usd": usd(sum(daily["saved"])),
                   "cache_hits": sum(daily["cache_hits"]),
                   "input_tokens": sum(daily["in"]), "output_tokens": sum(daily["out"])},
        "spend_by_env": _fold(env_series),
        "spend_by_key": _fold(_key_series(db, rng, span, index, len(axis))),
        "spend_by_model": _fold(_series(db, "IFNULL(model, '')", rng, span, index, len(axis))),
        "top_models": models[:TOP],
        "requests_by_day": daily["requests"], "errors_by_day": daily["errors"],
        "cache_hits_by_day": daily["cache_hits"],
        "saved_usd_by_day": [usd(m) for m in daily["saved"]],
        "budgets": [_budget(db, u, tz, now, f) for u, f in zip(budgets, budget_forecasts(db, budgets, now))],
    }


def _series(db, expr: str, rng: str, params: list, index: dict, n: int) -> dict[str, list[int]]:
    """{value of `expr` (one of ours): [micro-dollars per day]}."""
    out: dict[str, list[int]] = {}
    sql = f"SELECT day, {expr}, {micros_sql('cost_usd')} FROM requests{rng} GROUP BY 1, 2"
    for day, name, m in db.execute(sql, params):
        i = index.get(day)
        if i is not None:
            out.setdefault(name, [0] * n)[i] += m
    return out


def _key_series(db, rng: str, params: list, index: dict, n: int) -> dict[str, list[int]]:
    """Spend per key per day, labelled by vk_name (else id); colliding names get "(id)"."""
    by_vk = _series(db, "IFNULL(vk, '')", rng, params, index, n)
    names = dict(db.execute(f"SELECT IFNULL(vk, ''), IFNULL(MAX(vk_name), '') FROM requests{rng} "
                            "GROUP BY 1", params).fetchall())
    label = {vk: (names.get(vk) or vk) if vk else ANONYMOUS for vk in by_vk}
    taken: dict[str, int] = {}
    for name in label.values():
        taken[name] = taken.get(name, 0) + 1
    return {(f"{label[vk]} ({vk})" if taken[label[vk]] > 1 and vk else label[vk]): s
            for vk, s in by_vk.items()}


def _fold(series: dict[str, list[int]]) -> dict[str, list[float]]:
    """The TOP series by spend (ties by name), then "(other)" summing the rest; USD per day."""
    ranked = sorted(series.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    out = {name: [usd(m) for m in s] for name, s in ranked[:TOP]}
    rest = [s for _, s in ranked[TOP:]]
    if rest:
        out[OTHER] = [usd(sum(col)) for col in zip(*rest)]
    return out


def _model_stats(db, rng: str, params: list) -> list[dict]:
    sql = (f"SELECT IFNULL(model, ''), COUNT(*), {micros_sql('cost_usd')}, IFNULL(SUM(input_tokens), 0), "
           f"IFNULL(SUM(output_tokens), 0) FROM requests{rng} GROUP BY 1 ORDER BY 3 DESC, 2 DESC, 1 ASC")
    return [{"model": m, "requests": n, "cost_usd": usd(c), "input_tokens": i, "output_tokens": o}
            for m, n, c, i, o in db.execute(sql, params)]


def _local_day(iso: str, tz: str) -> date:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(zone(tz)).date()


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _owner_filter(u: dict) -> tuple[str, list] | None:
    """(" AND ..." SQL, params) selecting a budget's owner (and env) in the log; None for a level
    the log cannot tell apart."""
    column = OWNER_COLUMN.get(u["level"])
    if column is None:
        return None
    sql, params = f" AND {column} = ?", [u["owner"]]
    if u.get("env"):
        sql += " AND env = ?"
        params.append(u["env"])
    return sql, params


def budget_forecasts(db: sqlite3.Connection, usage: list[dict], now: float) -> list[Forecast | None]:
    """forecast.py's projection for each ledger usage entry of kind "budget" (None for the
    others): the ledger's spent_usd and limit, the log's spend this period (up to `now`) as the
    shape. The log is read once per (level, period) for all the owners that share it, not once
    per budget: one query per level and period kind, however many keys have budgets."""
    out: list[Forecast | None] = [None] * len(usage)
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, u in enumerate(usage):
        if u.get("kind") == "budget":
            groups.setdefault((u["level"], u["period_start"], u["resets_at"]), []).append(i)
    for (level, p0, p1), idx in groups.items():
        start, end = _ts(p0), _ts(p1)
        buckets = _owner_buckets(db, OWNER_COLUMN.get(level), sorted({usage[i]["owner"] for i in idx}),
                                 start, end, now)
        for i in idx:
            u = usage[i]
            agg: dict[int, list] = {}
            for (owner, env, bucket), (n, ts_sum, m) in buckets.items():
                if owner == u["owner"] and (not u.get("env") or env == u["env"]):
                    a = agg.setdefault(bucket, [0, 0.0, 0])
                    a[0] += n
                    a[1] += ts_sum
                    a[2] += m
            points = [(ts_sum / n, usd(m)) for n, ts_sum, m in agg.values() if m]
            out[i] = forecast(points, start, end, now, limit=float(u["limit_usd"]), spent=float(u["spent_usd"]))
    return out


def _owner_buckets(db, column: str | None, owners: list[str], start: float, end: float,
                   now: float) -> dict[tuple[str, str, int], tuple[int, float, int]]:
    """{(owner, env, bucket): (requests, sum of their ts, micro-dollars)} over [start, min(end,
    now)], in at most BUCKETS buckets of the period; empty for a level the log cannot tell apart."""
    out: dict[tuple[str, str, int], tuple[int, float, int]] = {}
    if column is None or not owners:
        return out
    width = max(1.0, (end - start) / BUCKETS)
    for k in range(0, len(owners), 500):
        chunk = owners[k:k + 500]
        sql = (f"SELECT {column}, IFNULL(env, ''), CAST((ts - ?) / ? AS INTEGER), COUNT(*), SUM(ts), "
               f"{micros_sql('cost_usd')} FROM requests WHERE ts >= ? AND ts <= ? "
               f"AND {column} IN ({', '.join('?' * len(chunk))}) GROUP BY 1, 2, 3")
        for owner, env, bucket, n, ts_sum, m in db.execute(sql, [start, width, start, min(end, now), *chunk]):
            out[(owner, env, bucket)] = (n, ts_sum, m)
    return out


def usage_with_forecasts(db: sqlite3.Connection, usage: list[dict], now: float | None = None) -> list[dict]:
    """The ledger's usage entries, each budget with `forecast_usd` (its projected spend at the
    reset) and `forecast_crosses_at` (ISO UTC or null; see budget_forecasts)."""
    now = time.time() if now is None else float(now)
    out = []
    for u, f in zip(usage, budget_forecasts(db, usage, now)):
        if f is not None:
            u = {**u, "forecast_usd": f.projected_usd, "forecast_crosses_at": _iso(f.crosses_at)}
        out.append(u)
    return out


def _budget(db, u: dict, tz: str, now: float, f: Forecast) -> dict:
    """One ledger budget entry, with its burn-down from the log and its forecast `f`."""
    start, end = _ts(u["period_start"]), _ts(u["resets_at"])
    first = _local_day(u["period_start"], tz)
    last = datetime.fromtimestamp(max(start, min(now, end - 1)), zone(tz)).date()
    axis = days_between(first, last)
    index = {d: i for i, d in enumerate(axis)}
    spend = [0] * len(axis)
    owner = _owner_filter(u)
    if owner is not None:
        sql = f"SELECT day, {micros_sql('cost_usd')} FROM requests WHERE ts >= ? AND ts < ?{owner[0]}"
        for day, m in db.execute(sql + " GROUP BY day", [start, end, *owner[1]]):
            i = index.get(day)
            if i is not None:
                spend[i] += m
    cumulative, acc = [], 0
    for m in spend:
        acc += m
        cumulative.append(usd(acc))
    end_day = datetime.fromtimestamp(end - 1, zone(tz)).date()
    ahead = days_between(last + timedelta(days=1), end_day) if end_day > last else []
    return {"label": u["label"], "level": u["level"], "owner": u["owner"], "period": u["period"],
            "env": u.get("env", ""), "limit_usd": round(u["limit_usd"], 6),
            "spent_usd": round(u["spent_usd"], 6), "remaining_usd": round(u["remaining_usd"], 6),
            "period_start": u["period_start"], "resets_at": u["resets_at"],
            "burn": {"days": axis, "cumulative_usd": cumulative},
            "forecast": {"model": f.model, "projected_usd": f.projected_usd,
                         "rate_usd_per_hour": round(f.rate_usd_per_hour, 6), "crosses_at": _iso(f.crosses_at),
                         "days": ahead,
                         "cumulative_usd": [projected_at(f, day_bounds(date.fromisoformat(d), tz)[1])
                                            for d in ahead]}}
