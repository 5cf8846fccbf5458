"""Settled spend in PostgreSQL (pg_spend.py): batches written idempotently, read back per period
start for the Redis ledger's rebuild. A real PostgreSQL (tests/helpers/postgres_server.py)."""
from __future__ import annotations

import threading

import pytest

from finops.workers.governance.pg_spend import SettledCharge, SettledSpend, SpendTotal, micros
from finops.workers.governance.store import StoreUnavailable
from tests.helpers.postgres_server import PostgresServer

T0 = 1_800_000_000.0


def charge(i: int, key: str = "vk-1", env: str = "", cost: int = 1000, at: float = T0, **kw) -> SettledCharge:
    return SettledCharge(f"req-{i}", key, env, cost, 10 * i, i, at, **kw)


@pytest.fixture
def spend(postgres_url):
    s = SettledSpend.open(postgres_url)
    yield s
    s.close()


def test_a_settle_written_twice_counts_once(spend):
    batch = [charge(i) for i in range(1, 6)]
    assert spend.write(batch) == 5
    assert spend.write(batch) == 0                                       # the whole batch again
    assert spend.write([charge(3), charge(6), charge(6, cost=99)]) == 1  # old, new, new repeated in the batch
    assert spend.write([]) == 0
    rows = spend.since(0)
    assert [r.request_id for r in rows] == [f"req-{i}" for i in range(1, 7)] and spend.count() == 6
    assert rows[5].cost_micro == 1000                                    # the first of the repeated rid won
    assert spend.totals_since(0) == [SpendTotal("vk-1", "", "", "", 6000, 210, 21, 6)]


def test_rows_round_trip_and_totals_per_period_start(spend):
    rows = [
        charge(1, "vk-1", "", 1_500_000, T0 - 86400, team="t1", customer="acme"),     # yesterday
        charge(2, "vk-1", "", 250_000, T0 - 60, team="t1", customer="acme"),
        charge(3, "vk-1", "prod", 125, T0, team="t1", customer="acme"),
        charge(4, "vk-2", "", 7, T0 + 30),
        ("req-5", "vk-2", "", micros(0.000_002_5), 1, 0, T0 + 31),                      # a plain tuple
    ]
    assert spend.write(rows) == 5
    assert spend.since(T0 - 60) == [SettledCharge(*r) for r in rows[1:]]
    assert spend.totals_since(T0 - 3600) == [
        SpendTotal("vk-1", "", "t1", "acme", 250_000, 20, 2, 1),
        SpendTotal("vk-1", "prod", "t1", "acme", 125, 30, 3, 1),
        SpendTotal("vk-2", "", "", "", 9, 41, 4, 2),
    ]
    assert spend.totals_since(T0 - 86400)[0] == SpendTotal("vk-1", "", "t1", "acme", 1_750_000, 30, 3, 2)
    assert spend.totals_since(T0 + 3600) == []
    assert spend.prune(T0 - 3600) == 1 and spend.count() == 4


def test_concurrent_writers_with_overlapping_batches_record_each_request_once(postgres_url):
    """Two nodes sending the same settles (a retry racing the original): every rid once, and
    the rows each writer reports as new add up to the total."""
    rows = [charge(i, cost=i) for i in range(2000)]
    new = []
    go = threading.Barrier(4)

    def writer(part):
        with SettledSpend.open(postgres_url) as s:
            go.wait()
            n = 0
            for i in range(0, len(part), 100):
                n += s.write(part[i:i + 100])
            new.append(n)

    ts = [threading.Thread(target=writer, args=(p,)) for p in (rows, rows[::-1], rows[500:1500], rows[::2])]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    with SettledSpend.open(postgres_url) as s:
        assert s.count() == 2000 and sum(new) == 2000
        assert s.totals_since(0)[0].cost_micro == sum(range(2000))


def test_the_database_down_then_back(tmp_path):
    with PostgresServer() as pg:
        url = pg.create_database()
        s = SettledSpend.open(url)
        try:
            assert s.write([charge(1)]) == 1
            pg.stop()
            with pytest.raises(StoreUnavailable, match=r"settled spend postgresql://.*:\*\*\*@"):
                s.write([charge(2)])
            pg.start()
            assert s.write([charge(1), charge(2)]) == 1                 # the caller's retry: only the new one
            pg.terminate_connections(url.rsplit("/", 1)[1])
            assert s.write([charge(3)]) == 1                             # a cut connection: replaced
            assert [r.request_id for r in s.since(0)] == ["req-1", "req-2", "req-3"]
        finally:
            s.close()
