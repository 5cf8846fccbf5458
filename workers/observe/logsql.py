"""The request log's two SQL dialects: SQLite (one node, logdb.py) and PostgreSQL (the fleet,
pglog.py). Pure.

The reports (report.py, dashboard.py, focus.py, chargeback.py) are written once, in SQL both
engines run (COALESCE, CASE WHEN, ordinal GROUP BY / ORDER BY, `?` placeholders), over one
relation, `source()`: one row per group of requests with the same labels, with their counts and
sums (`n` requests, `errs`, `hits`, tokens, `cost_m` / `saved_m` whole micro-dollars, latency sum
and count, sum of `ts`). What differs is here:

* SQLite's source is the `requests` table itself, one row per request (n = 1, each cost rounded
  to the micro-dollar with ROUND, half away from zero, as the ledger charges it).
* PostgreSQL's source is the rollups pglog.py keeps in the same transaction as the rows: the
  daily one (`finops_requests_daily`, per UTC day) for the whole days of the period, the hourly one
  (`finops_requests_hourly`) for the whole hours around them, and the rows of `finops_requests`
  only in the partial hours at the two ends; a period given in days (the dashboard) reads the
  daily rollup only (its `day` label is the local day). A report grouped by hour (FOCUS) reads no
  daily row. Money is already whole micro-dollars there (stored generated columns
  computed per row as SQLite's ROUND does; PostgreSQL's ROUND of a double rounds half to even, so
  it is spelled `SIGN(x) * FLOOR(ABS(x) + 0.5)`). So the same rows give the same report, to the
  micro-dollar and the token, from either engine (tests/unit/test_pglog.py).
* PostgreSQL's SUM of an integer is NUMERIC (psycopg: Decimal), so sums are cast to BIGINT
  (`int_sum`); its CAST to an integer rounds where SQLite's truncates (`trunc_int`); psycopg
  takes `%s` (`PgLogReader.execute` turns each `?` into one: no report's SQL has a `?` or a `%`
  anywhere else).
"""
from __future__ import annotations

from typing import NamedTuple

from finops.workers.governance.money import MICRO

CLIENT_LEFT = ("cancelled", "client_gone")
ERROR_COND = "COALESCE(error, '') NOT IN ('', " + ", ".join(f"'{c}'" for c in CLIENT_LEFT) + ")"
HIT_COND = "cache IN ('hit-exact', 'hit-semantic')"
HOUR = 3600
DAY = 86400

# the source's label columns, in order (NULL reads as '' / 0 everywhere, as the reports always did)
LABELS = ("day", "node", "vk", "team", "customer", "env", "model", "provider", "op", "error", "cache", "tags")
MEASURES = ("n", "errs", "hits", "in_t", "out_t", "cr_t", "cw_t", "cost_m", "saved_m", "psaved_m", "lat_sum",
            "lat_n", "ts_sum")
SOURCE_COLUMNS = ("hour", *LABELS, "status", "vk_name", *MEASURES)


class Dialect(NamedTuple):
    name: str
    table: str

    @property
    def pg(self) -> bool:
        return self.name == "postgres"

    def micros(self, column: str) -> str:
        """SUM of a USD column as integer micro-dollars (`column` is one of ours, never input)."""
        if self.pg:                               # a stored generated column per money column (pglog.py)
            return f"COALESCE(CAST(SUM({column}_micros) AS BIGINT), 0)"
        return f"COALESCE(SUM({self.row_micros(column)}), 0)"

    def row_micros(self, column: str) -> str:
        if self.pg:
            return f"{column}_micros"
        return f"CAST(ROUND(COALESCE({column}, 0) * {MICRO}) AS INTEGER)"

    def json_text(self, column: str, name: str) -> str:
        """The string member `name` of the JSON object in `column` (`name` is checked by the
        caller: no quote, no `?`, no `%`)."""
        if self.pg:
            return f"(CAST({column} AS jsonb) ->> '{name}')"
        return f"json_extract({column}, '$.\"{name}\"')"

    def trunc_int(self, expr: str) -> str:
        """`expr` (non-negative) truncated to an integer."""
        if self.pg:
            return f"CAST(TRUNC({expr}) AS BIGINT)"
        return f"CAST({expr} AS INTEGER)"

    def int_sum(self, expr: str) -> str:
        """SUM of an integer expression, 0 when no row, as an integer in both engines."""
        if self.pg:
            return f"COALESCE(CAST(SUM({expr}) AS BIGINT), 0)"
        return f"COALESCE(SUM({expr}), 0)"

    def _rows(self, table: str, daily: bool = False) -> str:
        """SELECT of the source's columns from the per-request table (one row per request);
        `daily`: `hour` is the first hour of the row's UTC day (the daily rollup's key)."""
        labels = ", ".join(f"COALESCE({c}, '') AS {c}" for c in LABELS)
        hour = self.trunc_int(f"ts / {DAY}") + " * 24" if daily else self.trunc_int(f"ts / {HOUR}")
        return (f"SELECT {hour} AS hour, {labels}, COALESCE(status, 0) AS status, "
                f"COALESCE(vk_name, '') AS vk_name, 1 AS n, CASE WHEN {ERROR_COND} THEN 1 ELSE 0 END AS errs, "
                f"CASE WHEN {HIT_COND} THEN 1 ELSE 0 END AS hits, COALESCE(input_tokens, 0) AS in_t, "
                f"COALESCE(output_tokens, 0) AS out_t, COALESCE(cache_read_tokens, 0) AS cr_t, "
                f"COALESCE(cache_write_tokens, 0) AS cw_t, {self.row_micros('cost_usd')} AS cost_m, "
                f"{self.row_micros('saved_usd')} AS saved_m, {self.row_micros('prompt_saved_usd')} AS psaved_m, "
                f"COALESCE(latency_ms, 0) AS lat_sum, "
                f"CASE WHEN latency_ms IS NULL THEN 0 ELSE 1 END AS lat_n, ts AS ts_sum FROM {table}")

    def source(self, since: float | None, until: float | None, filters: tuple[list[str], list],
               days: tuple[str, str] | None = None, hours: bool = False) -> tuple[str, list]:
        """(" FROM (...) src", params): the source relation (module doc) over [since, until) in
        epoch seconds, or over the calendar days `days` (first, last, inclusive), with `filters`
        (clauses on the log's columns, and their parameters) applied. `hours`: the caller groups
        by `hour`, so PostgreSQL reads no daily rollup row."""
        clauses, fparams = filters
        extra = "".join(f" AND {c}" for c in clauses)
        cols = ", ".join(SOURCE_COLUMNS)
        if days is not None:
            if self.pg and not hours:
                sql = f"SELECT {cols} FROM finops_requests_daily WHERE day >= ? AND day <= ?{extra}"
            elif self.pg:
                sql = f"SELECT {cols} FROM finops_requests_hourly WHERE day >= ? AND day <= ?{extra}"
            else:
                sql = f"{self._rows(self.table)} WHERE day >= ? AND day <= ?{extra}"
            return f" FROM ({sql}) src", [days[0], days[1], *fparams]
        since, until = float(since), float(until)
        if not self.pg:
            return f" FROM ({self._rows(self.table)} WHERE ts >= ? AND ts < ?{extra}) src", [since, until, *fparams]
        parts: list[str] = []
        params: list = []

        def rows(a: float, b: float) -> None:
            if a < b:
                parts.append(f"{self._rows(self.table)} WHERE ts >= ? AND ts < ?{extra}")
                params.extend([a, b, *fparams])

        def rollup(table: str, a: int, b: int) -> None:            # hours [a, b)
            if a < b:
                parts.append(f"SELECT {cols} FROM {table} WHERE hour >= ? AND hour < ?{extra}")
                params.extend([a, b, *fparams])

        h0, h1 = int(-(-since // HOUR)), int(until // HOUR)        # the whole hours inside the period
        if h0 >= h1:
            rows(since, until)
        else:
            rows(since, h0 * HOUR)
            d0, d1 = -(-h0 // 24) * 24, (h1 // 24) * 24              # ... and the whole UTC days inside those
            if not hours and d0 < d1:
                rollup("finops_requests_hourly", h0, d0)
                rollup("finops_requests_daily", d0, d1)
                rollup("finops_requests_hourly", d1, h1)
            else:
                rollup("finops_requests_hourly", h0, h1)
            rows(h1 * HOUR, until)
        return f" FROM ({' UNION ALL '.join(parts)}) src", params


SQLITE = Dialect("sqlite", "requests")
POSTGRES = Dialect("postgres", "finops_requests")


def dialect_of(db) -> Dialect:
    """The dialect of a log connection: a PgLogReader says so; anything else is sqlite3."""
    return getattr(db, "dialect", SQLITE)
