"""The observer actor (workers/observe/actor.py) driven through handle() and tick(), as its loop
drives it: rows into the request log (SQLite), the metrics for /metrics, retention, restarts."""
from __future__ import annotations

import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from finops.shared import config as configmod
from finops.shared.rundir import RESTARTS_FILE
from finops.workers.observe import actor as actormod
from finops.workers.observe import logdb
from finops.workers.observe.actor import PRUNE_SECONDS, ObserverActor
from tests.helpers.logrows import row

DAY = 86400.0
NOW = 1_800_000_000.0


NODE = "node-a"


class Clock:
    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        return self.t


def values(**kw) -> list:
    """A row as the workers send it: its values in logdb.NAMES order."""
    r = row(**kw)
    return [r[n] for n in logdb.NAMES]


def make_cfg(data_dir, **observability) -> configmod.Config:
    return configmod.build({"server": {"data_dir": str(data_dir), "node_name": NODE},
                            "observability": observability}, "test")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def observers(tmp_path, clock):
    """Make observers on tmp_path; every one not closed by the test is closed at the end."""
    made = []

    def make(**observability):
        a = ObserverActor(make_cfg(tmp_path, **observability), clock=clock)
        made.append(a)
        return a

    yield make
    for a in made:
        try:
            a.close()
        except Exception:
            pass        # closed by the test


def logged(data_dir) -> dict:
    """{id: row dict} of what a reader sees in the request log (every row names this node, which
    the dicts then leave out, as the workers' rows have no node)."""
    db = logdb.open_db(str(data_dir), readonly=True)
    try:
        rows = {r["id"]: dict(r) for r in db.execute("SELECT * FROM requests")}
    finally:
        db.close()
    assert all(r.pop("node") == NODE for r in rows.values())
    return {i: {**r, "node": ""} for i, r in rows.items()}


def families(text: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def value(fams: dict, name: str, sample: str, **labels):
    found = [s.value for s in fams[name].samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1
    return found[0] if found else None


def test_rows_are_written_on_flush(observers, tmp_path):
    obs = observers()
    assert logged(tmp_path) == {}                   # the file exists (readers can open it) and is empty
    out = obs.handle({"k": "rows", "rows": [values(id="a", vk="vk-1", cost_usd=0.5, request_body=b"{}"),
                                            values(id="b", env="prod", ttft_ms=12.5, stream=1)]})
    assert out is None
    assert logged(tmp_path) == {}                   # not committed yet
    assert obs.handle({"k": "flush"}) == {"rows": 2}
    rows = logged(tmp_path)
    assert set(rows) == {"a", "b"}
    assert rows["a"] == row(id="a", vk="vk-1", cost_usd=0.5, request_body=b"{}")
    assert rows["b"]["env"] == "prod" and rows["b"]["ttft_ms"] == 12.5 and rows["b"]["stream"] == 1
    obs.handle({"k": "rows", "rows": [values(id="c")]})
    assert obs.handle({"k": "flush"}) == {"rows": 3}          # rows written so far
    assert obs.handle({"k": "flush"}) == {"rows": 3}
    assert set(logged(tmp_path)) == {"a", "b", "c"}


def test_tick_commits(observers, tmp_path):
    obs = observers()
    obs.handle({"k": "rows", "rows": [values(id="a", ts=NOW - 60)]})
    obs.tick()
    assert set(logged(tmp_path)) == {"a"}
    assert obs.written == 1


def test_commit_after_commit_rows(observers, tmp_path, monkeypatch):
    monkeypatch.setattr(actormod, "COMMIT_ROWS", 3)
    obs = observers()
    obs.handle({"k": "rows", "rows": [values(id="a"), values(id="b")]})
    assert logged(tmp_path) == {}
    obs.handle({"k": "rows", "rows": [values(id="c"), values(id="d")]})
    assert set(logged(tmp_path)) == {"a", "b", "c", "d"}       # the batch that crossed the threshold, whole
    assert obs.pending == [] and obs.written == 4


def test_a_row_of_the_wrong_length_is_dropped(observers, tmp_path, caplog):
    obs = observers()
    good = values(id="ok-1", cost_usd=0.25)
    obs.handle({"k": "rows", "rows": [good, values(id="short")[:-1], values(id="ok-2"),
                                      values(id="long") + ["extra"], []]})
    assert obs.handle({"k": "flush"}) == {"rows": 2}
    assert set(logged(tmp_path)) == {"ok-1", "ok-2"}
    assert "dropping a row of 35 fields (expected 36)" in caplog.text
    fams = families(obs.handle({"k": "scrape"})["text"])
    assert value(fams, "finops_request_log_rows", "finops_request_log_rows_total") == 2     # only the kept ones
    assert value(fams, "finops_requests", "finops_requests_total") == 2


def test_scrape_has_the_rows_metrics(observers):
    obs = observers()
    obs.handle({"k": "rows", "rows": [
        values(vk="vk-1", env="prod", cost_usd=0.25, input_tokens=10, output_tokens=5, latency_ms=250.0),
        values(vk="vk-1", env="prod", error="ThrottlingException", error_origin="governance", status=429),
        values(cache="hit-exact", saved_usd=0.125, env="prod"),
    ]})
    out = obs.handle({"k": "scrape"})
    assert set(out) == {"text", "type"} and isinstance(out["text"], bytes)
    assert out["type"].startswith("text/plain; version=")     # the worker serves it as is
    fams = families(out["text"])
    assert value(fams, "finops_requests", "finops_requests_total", virtual_key="vk-1", status="200") == 1
    assert value(fams, "finops_cost_usd", "finops_cost_usd_total", virtual_key="vk-1") == 0.25
    assert value(fams, "finops_tokens", "finops_tokens_total", type="output") == 5
    assert value(fams, "finops_governance_rejections", "finops_governance_rejections_total",
                 reason="ThrottlingException", virtual_key="vk-1") == 1
    assert value(fams, "finops_cache_saved_usd", "finops_cache_saved_usd_total") == 0.125
    assert value(fams, "finops_request_duration_seconds", "finops_request_duration_seconds_count",
                 op="converse") == 3
    # rows not yet written show as the observer's own queue
    assert value(fams, "finops_queue_depth", "finops_queue_depth", queue="observer_rows") == 3
    obs.handle({"k": "flush"})
    fams = families(obs.handle({"k": "scrape"})["text"])
    assert value(fams, "finops_queue_depth", "finops_queue_depth", queue="observer_rows") == 0
    assert value(fams, "finops_request_log_rows", "finops_request_log_rows_total") == 3


def test_gauges_reported_by_processes(observers):
    obs = observers()
    assert obs.handle({"k": "gauges", "proc": "worker-1", "kind": "worker",
                       "g": {"inflight": 2, "queues": {"requestlog_rows": 4}}}) is None
    obs.handle({"k": "gauges", "proc": "worker-2", "kind": "worker", "g": {"inflight": 3, "semantic": 1}})
    obs.handle({"k": "gauges", "proc": "frontend-9", "kind": "frontend", "g": {"inflight": 5}})
    obs.handle({"k": "gauges", "proc": "worker-3"})                      # kind defaults to worker, no gauges
    fams = families(obs.handle({"k": "scrape"})["text"])
    assert value(fams, "finops_requests_in_flight", "finops_requests_in_flight", process="worker") == 5
    assert value(fams, "finops_requests_in_flight", "finops_requests_in_flight", process="frontend") == 5
    assert value(fams, "finops_queue_depth", "finops_queue_depth", queue="requestlog_rows") == 4
    assert value(fams, "finops_cache_semantic_enabled", "finops_cache_semantic_enabled") == 1


def test_unknown_message_is_ignored(observers, caplog):
    obs = observers()
    assert obs.handle({"k": "nope"}) is None
    assert obs.handle({}) is None
    assert "unknown message kind 'nope'" in caplog.text


def test_retention_prunes_old_rows_on_tick(observers, tmp_path, clock):
    obs = observers(log_retention_days=7)
    obs.handle({"k": "rows", "rows": [values(id="old", ts=NOW - 8 * DAY), values(id="edge", ts=NOW - 7 * DAY + 1),
                                      values(id="new", ts=NOW - 60)]})
    obs.tick()                      # commits, then prunes (the first tick prunes at once)
    assert set(logged(tmp_path)) == {"edge", "new"}
    # a row older than retention arriving now stays until the next prune, an hour later
    obs.handle({"k": "rows", "rows": [values(id="late", ts=NOW - 30 * DAY)]})
    clock.t += PRUNE_SECONDS - 1
    obs.tick()
    assert set(logged(tmp_path)) == {"edge", "new", "late"}
    clock.t += 1
    obs.tick()
    assert set(logged(tmp_path)) == {"new"}          # "edge" is now older than 7 days too


def test_retention_zero_keeps_everything(observers, tmp_path):
    obs = observers(log_retention_days=0)
    obs.handle({"k": "rows", "rows": [values(id="ancient", ts=1_000_000.0), values(id="new", ts=NOW)]})
    obs.tick()
    assert set(logged(tmp_path)) == {"ancient", "new"}


def test_restarts_file_shows_in_metrics(observers, tmp_path):
    obs = observers()
    fams = families(obs.handle({"k": "scrape"})["text"])
    assert fams["finops_process_restarts"].samples == []            # no file yet
    os.makedirs(obs.cfg.run_dir, exist_ok=True)
    path = os.path.join(obs.cfg.run_dir, RESTARTS_FILE)
    with open(path, "w") as f:
        json.dump({"worker": 2, "frontend": 1}, f)
    fams = families(obs.handle({"k": "scrape"})["text"])
    assert value(fams, "finops_process_restarts", "finops_process_restarts_total", kind="worker") == 2
    assert value(fams, "finops_process_restarts", "finops_process_restarts_total", kind="frontend") == 1
    with open(path, "w") as f:
        f.write("{not json")                                         # half-written: no crash, no numbers
    fams = families(obs.handle({"k": "scrape"})["text"])
    assert fams["finops_process_restarts"].samples == []


def test_close_commits_pending_rows(observers, tmp_path):
    obs = observers()
    obs.handle({"k": "rows", "rows": [values(id="a"), values(id="b")]})
    obs.close()
    assert set(logged(tmp_path)) == {"a", "b"}
    # and a new observer on the same directory adds to the same log
    again = observers()
    again.handle({"k": "rows", "rows": [values(id="c")]})
    again.close()
    assert set(logged(tmp_path)) == {"a", "b", "c"}


def test_the_log_file_is_private(observers, tmp_path):
    observers()
    assert os.stat(logdb.path_in(str(tmp_path))).st_mode & 0o077 == 0


# --- the ledger's charges ----------------------------------------------------------------

def test_a_ledger_charge_sets_the_rows_cost_and_fills_its_key(observers, tmp_path):
    """A row the frontend wrote for a dead worker's request (no key, cost 0) gets the ledger's
    charge of its reservation, its key and env; a later correction (the real settle arrived)
    replaces the cost; the cost metric moves with it."""
    obs = observers()
    obs.handle({"k": "rows", "rows": [values(id="dead-1", vk="", env="", model="m", provider="", cost_usd=0.0),
                                      values(id="ok-1", vk="vk-9", env="dev", model="m", cost_usd=0.25)]})
    obs.handle({"k": "charges", "c": [["dead-1", "vk-1", "prod", 0.75], ["ok-1", "vk-1", "prod", 0.125]]})
    got = logged(tmp_path)
    assert (got["dead-1"]["cost_usd"], got["dead-1"]["vk"], got["dead-1"]["env"]) == (0.75, "vk-1", "prod")
    assert (got["ok-1"]["cost_usd"], got["ok-1"]["vk"], got["ok-1"]["env"]) == (0.125, "vk-9", "dev")  # its own key kept
    fams = families(obs.handle({"k": "scrape"})["text"])
    assert value(fams, "finops_cost_usd", "finops_cost_usd_total", virtual_key="vk-1") == 0.75
    assert value(fams, "finops_cost_usd", "finops_cost_usd_total", virtual_key="vk-9") == 0.125


def test_a_charge_before_its_row_waits_for_it(observers, tmp_path):
    obs = observers()
    obs.handle({"k": "charges", "c": [["late", "vk-1", "prod", 0.5]]})
    assert "late" not in logged(tmp_path)
    obs.handle({"k": "rows", "rows": [values(id="late", vk="", cost_usd=0.0)]})
    obs.handle({"k": "flush"})
    assert logged(tmp_path)["late"]["cost_usd"] == 0.5 and not obs.unmatched


def test_a_charge_whose_row_never_comes_becomes_a_row(observers, tmp_path, clock):
    obs = observers()
    obs.handle({"k": "charges", "c": [["gone", "vk-1", "prod", 0.5]]})
    clock.t += actormod.ORPHAN_SECONDS - 1
    obs.tick()
    assert "gone" not in logged(tmp_path)
    clock.t += 2
    obs.tick()
    r = logged(tmp_path)["gone"]
    assert (r["cost_usd"], r["vk"], r["env"], r["error"], r["error_origin"]) == (
        0.5, "vk-1", "prod", "reservation_expired", "gateway")
