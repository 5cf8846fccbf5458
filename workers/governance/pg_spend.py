"""Settled spend, durably, in PostgreSQL: the truth the Redis ledger's counters are rebuilt from
after Redis loses its data (FLUSHALL, a failover to an empty replica).

One row per settled request in `finops_settled` (schema in pg_schema.py): request id (primary key),
key, env, the key's team and customer when it was charged, cost and cache savings in integer
micro-dollars (USD x 1e6, as the ledgers count), tokens, and `settled_at` (epoch seconds: the time
whose calendar periods the charge counts in).

* `write(rows)` records a batch in one statement and one transaction: a multi-row
  `INSERT ... SELECT FROM unnest(arrays) ON CONFLICT (request_id) DO NOTHING`, so a settle written
  twice (a batch retried after a lost connection, a settle sent again by the frontend after a
  worker died) counts once. It returns how many rows were new. Batching is the caller's: a write
  per request costs a durable commit each (~600-1,600 rows/s here); 64 rows or more a write reach
  25,000-33,000 rows/s on one connection (scripts/pg_bench.py, fsync on). COPY into a temp table
  then INSERT ... SELECT was measured too: slower below ~256 rows a batch, up to ~1.7x faster from
  1,024; the statement form is kept (simpler, no session-bound temp table, works through a pooler).
* `totals_since(t)` sums the rows settled at or after `t` per (key, env, team, customer): what a
  rebuild needs for one period start (one call per period start in force: minute, hour, day, ...).
* `since(t)` returns the rows themselves, oldest first (for a rebuild that replays charges, and
  for tests).
* `prune(before)` deletes rows older than `before` (no current period reaches back further than
  the start of the current year, so that is the oldest a rebuild reads).

Failures to reach the server raise `StoreUnavailable`: the caller keeps the batch and writes it
again later (idempotent).
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

from . import pg_schema
from .money import MICRO, micros


class SettledCharge(NamedTuple):
    request_id: str
    key_id: str
    env: str
    cost_micro: int
    tokens: int
    saved_micro: int
    settled_at: float           # epoch seconds
    team: str = ""
    customer: str = ""


class SpendTotal(NamedTuple):
    key_id: str
    env: str
    team: str
    customer: str
    cost_micro: int
    tokens: int
    saved_micro: int
    requests: int


_COLUMNS = "request_id, key_id, env, cost_micro, tokens, saved_micro, settled_at, team, customer"
_INSERT = (f"INSERT INTO finops_settled ({_COLUMNS}) "
           "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], "
           "%s::float8[], %s::text[], %s::text[]) "
           "ON CONFLICT (request_id) DO NOTHING")
_REPLACE = _INSERT.replace("DO NOTHING", "DO UPDATE SET cost_micro = EXCLUDED.cost_micro, tokens = EXCLUDED.tokens, "
                           "saved_micro = EXCLUDED.saved_micro")


class SettledSpend:
    """One connection to the shared database for settled spend. Not shared between threads. Every
    statement is one transaction, a read or an idempotent write (so `Link.run` may send it again
    after a lost connection)."""

    def __init__(self, url: str):
        self.url = url
        self.link = pg_schema.Link(url, what="settled spend", application_name="finops-spend")
        self.path = self.link.path

    @classmethod
    def open(cls, url: str) -> "SettledSpend":
        """Connect and migrate the schema (pg_schema.migrate: safe when several nodes start at once)."""
        s = cls(url)
        s.link.open()
        return s

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> "SettledSpend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing --------------------------------------------------------------------------------

    def write(self, rows: Iterable[SettledCharge | tuple], replace: bool = False) -> int:
        """Record settled charges (see the module doc); returns how many were not recorded before.
        A request id repeated within the batch counts once too (the first one wins).

        `replace=True`: corrections. A request already recorded gets these cost, tokens and
        savings (its settled_at stays: the charge stays in its periods), e.g. a reservation the
        ledger charged in full at its TTL whose real settle came later. Still idempotent.

        Rows go in in request-id order: two nodes writing overlapping batches (a settle sent again
        racing the original) then take their row locks in the same order and cannot deadlock."""
        first: dict[str, SettledCharge] = {}
        for r in rows:
            r = SettledCharge(*r)
            first.setdefault(r.request_id, r)
        if not first:
            return 0
        cols: list[list] = [[] for _ in range(9)]
        for rid in sorted(first):
            for i, v in enumerate(first[rid]):
                cols[i].append(v)
        return self.link.run(_REPLACE if replace else _INSERT, cols).rowcount

    def prune(self, before: float) -> int:
        """Delete the rows settled before `before` (epoch seconds); returns how many."""
        return self.link.run("DELETE FROM finops_settled WHERE settled_at < %s", (before,)).rowcount

    # --- reading --------------------------------------------------------------------------------

    def since(self, t: float) -> list[SettledCharge]:
        """The rows settled at or after `t` (epoch seconds), oldest first."""
        cur = self.link.run(f"SELECT {_COLUMNS} FROM finops_settled WHERE settled_at >= %s "
                        "ORDER BY settled_at, request_id", (t,))
        return [SettledCharge(*r) for r in cur.fetchall()]

    def totals_since(self, t: float) -> list[SpendTotal]:
        """Per (key, env, team, customer): the sums of the rows settled at or after `t`."""
        cur = self.link.run("SELECT key_id, env, team, customer, sum(cost_micro)::bigint, sum(tokens)::bigint, "
                        "sum(saved_micro)::bigint, count(*) FROM finops_settled WHERE settled_at >= %s "
                        "GROUP BY key_id, env, team, customer ORDER BY key_id, env, team, customer", (t,))
        return [SpendTotal(*r) for r in cur.fetchall()]

    def count(self) -> int:
        return self.link.run("SELECT count(*) FROM finops_settled").fetchone()[0]


__all__ = ["SettledSpend", "SettledCharge", "SpendTotal", "micros", "MICRO"]
