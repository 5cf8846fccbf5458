"""The request log's two SQL dialects: SQLite (one node, logdb.py) and PostgreSQL (the fleet,
pglog.py). Pure.

The reports (report.py, dashboard.py, focus.py, chargeback.py) are written once, in SQL both
engines run: COALESCE, CASE WHEN, ordinal GROUP BY / ORDER BY, `?` placeholders. What differs is
here, and a report asks the connection it was given for its dialect (`dialect_of(db)`):

* the table: `requests` (SQLite) or `finops_requests` (PostgreSQL, partitioned by day);
* whole micro-dollars of a USD column: PostgreSQL keeps them in a stored generated column
  (`cost_usd_micros`, `saved_usd_micros`, pglog.py), computed once per row as SQLite's
  ROUND(x * 1e6) computes them (half away from zero: PostgreSQL's ROUND of a double rounds half to
  even, so it is spelled `SIGN(x) * FLOOR(ABS(x) + 0.5)`), and sums them as BIGINT (a SUM of BIGINT
  is NUMERIC there); SQLite rounds per row in the query;
* truncating a non-negative number to an integer (buckets, hours): SQLite's CAST truncates,
  PostgreSQL's CAST rounds, so PostgreSQL uses TRUNC;
* placeholders: psycopg takes `%s`; `PgLogReader.execute` turns each `?` into one (no report's SQL
  has a `?` or a `%` anywhere else).
"""
from __future__ import annotations

from typing import NamedTuple

from finops.workers.governance.money import MICRO


class Dialect(NamedTuple):
    name: str
    table: str

    def micros(self, column: str) -> str:
        """SUM of a USD column as integer micro-dollars (`column` is one of ours, never input)."""
        if self.name == "postgres":           # a stored generated column per money column (pglog.py)
            return f"COALESCE(CAST(SUM({column}_micros) AS BIGINT), 0)"
        v = f"COALESCE({column}, 0) * {MICRO}"
        return f"COALESCE(SUM(CAST(ROUND({v}) AS INTEGER)), 0)"

    def trunc_int(self, expr: str) -> str:
        """`expr` (non-negative) truncated to an integer."""
        if self.name == "postgres":
            return f"CAST(TRUNC({expr}) AS BIGINT)"
        return f"CAST({expr} AS INTEGER)"

    def int_sum(self, expr: str) -> str:
        """SUM of an integer expression, 0 when no row, as an integer in both engines."""
        if self.name == "postgres":
            return f"COALESCE(CAST(SUM({expr}) AS BIGINT), 0)"
        return f"COALESCE(SUM({expr}), 0)"


SQLITE = Dialect("sqlite", "requests")
POSTGRES = Dialect("postgres", "finops_requests")


def dialect_of(db) -> Dialect:
    """The dialect of a log connection: a PgLogReader says so; anything else is sqlite3."""
    return getattr(db, "dialect", SQLITE)
