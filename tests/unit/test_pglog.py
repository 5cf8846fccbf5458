"""The request log on PostgreSQL (workers/observe/pglog.py, pgsink.py) against a real PostgreSQL
(tests/helpers/postgres_server.py): COPY batches, daily partitions made on demand and dropped by
retention, the spool through an outage, no duplicate on a retried batch, and the reports giving
the same answers from PostgreSQL as from SQLite for the same rows."""
from __future__ import annotations

import os

import psycopg
import pytest

from finops.workers.governance.store import StoreUnavailable
from finops.workers.observe import chargeback, dashboard, focus, logdb, report
from finops.workers.observe.pglog import DAY, PgLogReader, PgLogWriter, Spool, partition_name
from finops.workers.observe.pgsink import PgSink
from tests.helpers.logrows import insert, row
from tests.unit.test_report import NOW, make_rows


def wire(r: dict) -> list:
    """A row as the observer hands it to the writer: logdb.DB_NAMES order (the node last)."""
    return [r[n] for n in logdb.DB_NAMES]


def rows_for(n: int, ts: float = NOW, node: str = "a", **kw) -> list[list]:
    return [wire(row(ts=ts + i, node=node, cost_usd=0.000001 * (i + 1), input_tokens=i, **kw)) for i in range(n)]


@pytest.fixture
def writer(postgres_url):
    w = PgLogWriter(postgres_url, "a")
    w.open()
    yield w
    w.close()


def count(url: str, where: str = "") -> int:
    with psycopg.connect(url) as c:
        return c.execute(f"SELECT count(*) FROM finops_requests {where}").fetchone()[0]


def partitions(url: str) -> list[str]:
    with psycopg.connect(url) as c:
        return sorted(r[0] for r in c.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'finops_requests'::regclass"))


def test_batches_are_copied_in_and_a_retried_batch_adds_nothing(writer, postgres_url):
    batch = rows_for(500)
    assert writer.write(batch) == 500
    assert writer.write(batch) == 0                       # the same batch again (an ambiguous failure's retry)
    assert writer.write(batch[:10] + rows_for(5, ts=NOW + 1000)) == 5
    assert count(postgres_url) == 505
    with psycopg.connect(postgres_url) as c:
        got = c.execute("SELECT id, node, cost_usd, input_tokens FROM finops_requests WHERE id = %s",
                        (batch[7][0],)).fetchone()
    assert got == (batch[7][0], "a", 0.000008, 7)


def test_a_batch_whose_commit_answer_was_lost_is_written_once(writer, postgres, postgres_url):
    """The connection dies after the batch committed: the writer reconnects and the retry of
    the same batch (what pgsink does) leaves every row once."""
    batch = rows_for(50)
    writer.write(batch)
    postgres.terminate_connections(postgres_url.rsplit("/", 1)[1])
    with pytest.raises(StoreUnavailable):
        writer.write(rows_for(3, ts=NOW + 500))           # finds the connection dead
    assert writer.write(batch + rows_for(3, ts=NOW + 500)) == 3
    assert count(postgres_url) == 53


def test_partitions_are_made_per_day_on_demand_and_retention_drops_whole_days(writer, postgres_url):
    days = [NOW - 3 * DAY, NOW - 2 * DAY, NOW - DAY, NOW]
    for i, t in enumerate(days):
        writer.write(rows_for(10 + i, ts=t, node="a"))
    want = sorted(partition_name(int(t // DAY)) for t in days)
    assert partitions(postgres_url) == want
    # the cut-off inside the day before yesterday: that day stays whole, the two before it go
    cut = (int((NOW - 2 * DAY) // DAY) * DAY) + 3600
    assert writer.drop_before(cut) == 1
    assert partitions(postgres_url) == want[1:]
    assert count(postgres_url) == 11 + 12 + 13
    assert writer.drop_before(cut) == 0
    # a late row for a dropped day makes its partition again rather than failing the batch
    assert writer.write(rows_for(2, ts=NOW - 3 * DAY + 7200)) == 2


def test_partitions_ahead_are_made_by_the_sink(writer, postgres_url, tmp_path):
    sink = PgSink(writer, Spool(str(tmp_path / "spool"), 1 << 20), clock=lambda: NOW)
    sink.step()
    assert partitions(postgres_url) == sorted([partition_name(int(NOW // DAY)), partition_name(int(NOW // DAY) + 1)])


def test_rows_wait_in_the_spool_while_postgres_is_down_then_all_arrive(writer, postgres, postgres_url, tmp_path):
    t = [NOW]
    sink = PgSink(writer, Spool(str(tmp_path / "spool"), 1 << 22), clock=lambda: t[0])
    sink.take({"rows": rows_for(20, ts=NOW)})
    postgres.stop()
    try:
        for k in range(1, 6):
            sink.take({"rows": rows_for(20, ts=NOW + 100 * k)})
            t[0] += 0.1
            sink.step()                                    # retries fail: the batches stay on disk
        assert not sink.up and sink.spooled == 5
        assert len(os.listdir(tmp_path / "spool")) == 5
        # an observer restarted meanwhile finds the spool as it was
        assert len(Spool(str(tmp_path / "spool"), 1 << 22)) == 5
    finally:
        postgres.start()
    sink.take({"rows": rows_for(20, ts=NOW + 1000)})     # queued behind the spool, in order
    assert sink.spooled == 6
    t[0] += 5
    sink.step()
    assert sink.up and sink.spooled == 0 and sink.dropped == 0
    assert count(postgres_url) == 20 * 7
    assert os.listdir(tmp_path / "spool") == []


def test_a_full_spool_drops_and_counts(writer, postgres, tmp_path):
    one = len(__import__("msgpack").packb({"rows": rows_for(10)}, use_bin_type=True))
    sink = PgSink(writer, Spool(str(tmp_path / "spool"), int(one * 2.5)), clock=lambda: NOW)
    postgres.stop()
    try:
        for k in range(4):
            sink.take({"rows": rows_for(10, ts=NOW + 100 * k)})
    finally:
        postgres.start()
    assert sink.spooled == 2 and sink.dropped == 20


def test_the_ledgers_charge_updates_the_row_on_any_node(writer, postgres_url, tmp_path):
    writer.write([wire(row(id="r1", ts=NOW, node="b", cost_usd=0.0, vk="", env="", model="m", provider="p"))])
    sink = PgSink(writer, Spool(str(tmp_path / "spool"), 1 << 20), clock=lambda: NOW)
    sink.take({"charges": [["r1", "vk-9", "prod", 0.25, None], ["r2", "vk-9", "", 0.5, None]]})
    assert list(sink.results) == [("charged", ("m", "p", "prod", "vk-9", 0.0), 0.25),
                                  ("missing", "r2", "vk-9", "", 0.5)]
    with psycopg.connect(postgres_url) as c:
        assert c.execute("SELECT cost_usd, vk, env FROM finops_requests WHERE id = 'r1'").fetchone() == (0.25, "vk-9", "prod")


# --- the reports: the same answers from PostgreSQL as from SQLite ----------------------------------

@pytest.fixture
def both(tmp_path, writer, postgres_url):
    rows = make_rows()
    for i, r in enumerate(rows):
        r["node"] = ("gw-a", "gw-b", "gw-c")[i % 3]
        r["tags"] = ('{"project":"atlas"}', '{"cc":"42","project":"borealis"}', "", "")[i % 4]
        r["prompt_saved_usd"] = round(i * 0.0000131, 8) if i % 5 == 2 else 0.0
    db = logdb.open_db(str(tmp_path))
    insert(db, rows)
    writer.write([wire(r) for r in rows])
    pg = PgLogReader(postgres_url)
    yield db, pg
    db.close()
    pg.close()


GROUPINGS = [[], ["key"], ["team"], ["customer", "team"], ["model", "provider"], ["day"], ["status"],
             ["env", "op"], ["node"], ["node", "model"], ["day", "node"], ["tag:project"], ["tag:cc", "node"]]


@pytest.mark.parametrize("by", GROUPINGS, ids=lambda b: ",".join(b) or "none")
def test_reports_are_equal_on_sqlite_and_postgres(both, by):
    db, pg = both
    since, until = NOW - 30 * DAY, NOW + 1
    lite = report.summarize(db, by, since, until)
    assert lite and report.summarize(pg, by, since, until) == lite
    for where in ({"env": "prod", "status": "ok"}, {"tag:project": "atlas", "node": "gw-b"}, {"key": ""}):
        assert report.summarize(pg, by, since, until, where) == report.summarize(db, by, since, until, where)


def test_node_grouping_adds_up(both):
    db, pg = both
    by_node = report.summarize(pg, ["node"], NOW - 30 * DAY, NOW + 1)
    assert {r["node"] for r in by_node} == {"gw-a", "gw-b", "gw-c"}
    assert report.total(by_node) == report.summarize(pg, [], NOW - 30 * DAY, NOW + 1)[0] | {
        "avg_latency_ms": report.total(by_node)["avg_latency_ms"]}


@pytest.mark.parametrize("grain", ["hour", "day"])
def test_focus_export_is_equal(both, grain):
    db, pg = both
    assert focus.focus_rows(pg, NOW - 30 * DAY, NOW + 1, "UTC", grain=grain) == \
        focus.focus_rows(db, NOW - 30 * DAY, NOW + 1, "UTC", grain=grain)


def test_chargeback_and_dashboard_are_equal(both):
    db, pg = both
    assert chargeback.chargeback(pg, NOW - 30 * DAY, NOW + 1) == chargeback.chargeback(db, NOW - 30 * DAY, NOW + 1)
    usage = [{"kind": "budget", "level": "key", "owner": "vk-a", "env": "", "label": "key vk-a day",
              "period": "month", "limit_usd": 1.0, "spent_usd": 0.05, "remaining_usd": 0.95,
              "period_start": "2026-11-01T00:00:00Z", "resets_at": "2026-12-01T00:00:00Z"}]
    assert dashboard.dashboard_data(pg, usage, 14, "UTC", now=NOW) == dashboard.dashboard_data(db, usage, 14, "UTC", now=NOW)


# --- the observer actor with log_store = "postgres" -----------------------------------------------

def test_the_observer_writes_the_fleet_log_with_its_node_and_applies_charges(postgres_url, tmp_path):
    from finops.shared import config as configmod
    from finops.workers.observe.actor import ObserverActor
    from tests.unit.test_observer import families, value, values

    cfg = configmod.build({"server": {"data_dir": str(tmp_path), "node_name": "gw-b"},
                           "observability": {"log_store": "postgres", "log_postgres_url": postgres_url}}, "test")
    obs = ObserverActor(cfg, clock=lambda: NOW)
    try:
        obs.handle({"k": "rows", "rows": [values(id="dead-1", ts=NOW, vk="", env="", model="m", provider="",
                                                 cost_usd=0.0),
                                          values(id="ok-1", ts=NOW, vk="vk-9", env="dev", model="m", cost_usd=0.25)]})
        obs.handle({"k": "charges", "c": [["dead-1", "vk-1", "prod", 0.75]]})      # still pending: in place
        assert obs.handle({"k": "flush"}) == {"rows": 2}
        obs.handle({"k": "charges", "c": [["ok-1", "vk-1", "prod", 0.125]]})       # written: an UPDATE
        obs.handle({"k": "flush"})
        with psycopg.connect(postgres_url) as c:
            got = {r[0]: r[1:] for r in c.execute("SELECT id, node, cost_usd, vk, env FROM finops_requests")}
        assert got == {"dead-1": ("gw-b", 0.75, "vk-1", "prod"), "ok-1": ("gw-b", 0.125, "vk-9", "dev")}
        assert not os.path.exists(tmp_path / "requests.sqlite")
        fams = families(obs.handle({"k": "scrape"})["text"])
        assert value(fams, "finops_cost_usd", "finops_cost_usd_total", virtual_key="vk-1", node="gw-b") == 0.75
        assert value(fams, "finops_cost_usd", "finops_cost_usd_total", virtual_key="vk-9", node="gw-b") == 0.125
    finally:
        obs.close()


def test_the_report_cli_reads_the_fleet_log(both, postgres_url, tmp_path, capsys):
    from finops.shared.config import build
    from finops.workers.observe import report_cli

    cfg = build({"server": {"data_dir": str(tmp_path / "elsewhere")},
                 "observability": {"log_store": "postgres", "log_postgres_url": postgres_url}}, "test")
    assert report_cli.main(["--by", "node", "--since", "2026-11-01", "--until", "2026-11-30", "--format", "json"],
                           cfg) == 0
    doc = __import__("json").loads(capsys.readouterr().out)
    db, _ = both
    period = report.parse_period("2026-11-01", "2026-11-30", "UTC")
    assert doc["rows"] == report.summarize(db, ["node"], *period) and len(doc["rows"]) == 3
    assert report_cli.main(["--by", "model", "--node", "gw-c", "--since", "2026-11-01", "--until", "2026-11-30",
                            "--format", "json"], cfg) == 0
    assert __import__("json").loads(capsys.readouterr().out)["rows"] == \
        report.summarize(db, ["model"], *period, {"node": "gw-c"})
    assert "***" in doc["meta"]["log"] and postgres_url.split(":")[2].split("@")[0] not in doc["meta"]["log"]


@pytest.mark.parametrize("by", [["key"], ["node", "model"], ["day"], []], ids=lambda b: ",".join(b) or "none")
def test_periods_that_cut_hours_read_the_rollup_and_the_rows_at_both_ends(both, by):
    """Whole days come from the daily rollup, whole hours around them from the hourly one, the
    partial hours at each end from the rows."""
    db, pg = both
    for since, until in [(NOW - 5 * DAY - 1234.5, NOW - 2 * DAY + 777), (NOW - 3 * DAY - 3000, NOW - 3 * DAY - 10),
                         (NOW - 7 * DAY + 0.25, NOW - 7 * DAY + 3600.75), (NOW - 30 * DAY, NOW + 1),
                         (NOW - 6 * DAY - 43200, NOW - DAY + 7200)]:
        assert report.summarize(pg, by, since, until) == report.summarize(db, by, since, until)
    for grain in ("hour", "day"):
        assert focus.focus_rows(pg, NOW - 5 * DAY - 1234.5, NOW - 2 * DAY + 777, "UTC", grain=grain) == \
            focus.focus_rows(db, NOW - 5 * DAY - 1234.5, NOW - 2 * DAY + 777, "UTC", grain=grain)


def rollup_vs_rows(url: str, table: str = "finops_requests_hourly") -> tuple[list, list]:
    with psycopg.connect(url) as c:
        rolled = c.execute(f"SELECT vk, env, sum(n)::bigint, sum(cost_m)::bigint FROM {table} "
                           "GROUP BY 1, 2 HAVING sum(n) > 0 ORDER BY 1, 2").fetchall()
        rows = c.execute("SELECT coalesce(vk, ''), coalesce(env, ''), count(*), sum(cost_usd_micros)::bigint "
                         "FROM finops_requests GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        zero = c.execute(f"SELECT count(*) FROM {table} WHERE n = 0").fetchone()[0]
    assert zero == 0
    return rolled, rows


def test_the_rollup_follows_charges_retries_and_retention(writer, postgres_url, tmp_path):
    batch = [wire(row(id=f"r{i}", ts=NOW - (i % 3) * DAY, vk="" if i % 4 == 0 else "vk-1", env="",
                      cost_usd=0.0 if i % 4 == 0 else 0.001)) for i in range(40)]
    writer.write(batch)
    writer.write(batch)                                    # a retry: the rollup counts nothing twice
    sink = PgSink(writer, Spool(str(tmp_path / "spool"), 1 << 20), clock=lambda: NOW)
    sink.take({"charges": [["r0", "vk-2", "prod", 0.5, None], ["r4", "vk-2", "prod", 0.25, None],
                                  ["r5", "vk-9", "", 0.002, None]]})
    for table in ("finops_requests_hourly", "finops_requests_daily"):
        rolled, rows = rollup_vs_rows(postgres_url, table)
        assert rolled == rows and ("vk-2", "prod", 2, 750000) in rows
    writer.drop_before(int(NOW // DAY) * DAY - DAY)        # the oldest of the three days goes
    for table in ("finops_requests_hourly", "finops_requests_daily"):
        rolled, rows = rollup_vs_rows(postgres_url, table)
        assert rolled == rows and sum(r[2] for r in rows) == 40 - 13


def test_reading_the_fleet_log_with_postgres_down_says_so_without_the_password(postgres_url):
    from finops.shared.config import build
    from finops.workers.observe import pglog
    from tests.helpers.postgres_server import free_port

    url = f"postgresql://u:secret-pw@127.0.0.1:{free_port()}/db"
    cfg = build({"observability": {"log_store": "postgres", "log_postgres_url": url}}, "test")
    with pytest.raises(StoreUnavailable) as e:
        pglog.open_reader(cfg)
    assert "request log" in str(e.value) and "secret-pw" not in str(e.value)
    with pytest.raises(FileNotFoundError):          # reachable, but no node has written there yet
        pglog.open_reader(build({"observability": {"log_store": "postgres", "log_postgres_url": postgres_url}}, "t"))
