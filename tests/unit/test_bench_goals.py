"""The bench's goals block (scripts/bench_goals.py): each goal of the performance issues is a ratio
within one run with ok or MISS, and a goal the run has no data for says "not measured" and the
flags that would measure it. Also the bare path's frame splitting and Portkey's loopback preload."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts")
sys.path.insert(0, SCRIPTS)
import bench_goals  # noqa: E402

from finops.shared import eventstream  # noqa: E402


def point(target, route, conns, cpu=None, rps=100.0, added=None):
    p = {"target": target, "route": route, "connections": conns, "rps": rps, "added_p50_ms": added}
    if cpu is not None:
        p["cpu_ms_per_req"] = cpu
    return p


def row(rows, start):
    found = [r for r in rows if r["goal"].startswith(start)]
    assert len(found) == 1, [r["goal"] for r in rows]
    return found[0]


def test_production_against_portkey_ok_and_miss():
    pts = [point("portkey", "converse", 16, cpu=2.0, rps=600), point("production", "converse", 16, cpu=1.2, rps=1300),
           point("portkey", "converse", 64, cpu=2.0, rps=800), point("production", "converse", 64, cpu=1.2, rps=1500),
           point("portkey", "converse", 1, added=1.3), point("production", "converse", 1, added=1.1)]
    rows = bench_goals.evaluate(pts, [])
    cpu = row(rows, "production CPU")
    assert (cpu["verdict"], cpu["ratio"]) == ("ok", "0.60x (<= 0.70x)")
    assert row(rows, "production rps at 16")["verdict"] == "ok"            # 2.17x
    assert row(rows, "production rps at 64")["verdict"] == "MISS"          # 1.88x
    assert row(rows, "production added p50")["verdict"] == "ok"
    pts[1]["cpu_ms_per_req"] = 1.5                                          # 0.75x
    pts[5]["added_p50_ms"] = 1.4
    rows = bench_goals.evaluate(pts, [])
    assert row(rows, "production CPU")["verdict"] == "MISS"
    assert row(rows, "production added p50")["verdict"] == "MISS"


def test_a_goal_without_data_says_not_measured_and_how_to_measure_it():
    rows = bench_goals.evaluate([point("production", "converse", 16, cpu=1.0)], [])
    r = row(rows, "production CPU")
    assert r["ok"] is None and r["verdict"] == "not measured"
    assert r["needs"] == "--scenarios portkey,production --routes converse --connections 16"
    assert row(rows, "mock CPU")["needs"] == "--scenarios bare,mock --routes converse --connections 16"
    assert row(rows, "50 ms upstream")["needs"] == "--scenarios bedrock-slow --routes converse --connections 64"
    text = "\n".join(bench_goals.markdown(rows))
    assert "not measured: run with `--scenarios portkey,production --routes converse --connections 16`" in text


def test_mock_against_bare_and_stream_against_converse():
    pts = [point("bare", "converse", 16, cpu=1.0), point("mock", "converse", 16, cpu=1.25),
           point("mock", "converse-stream", 16, cpu=1.7)]
    rows = bench_goals.evaluate(pts, [])
    assert row(rows, "mock CPU")["verdict"] == "ok"
    stream = row(rows, "ConverseStream CPU")
    assert "(mock, 16 connections)" in stream["goal"] and stream["verdict"] == "MISS"   # 1.36x


def test_memory_and_start_come_from_the_gateway_not_from_a_peer():
    gateways = [{"scenario": "portkey", "peer": True, "idle_rss_mib": 80.0, "ready_s": 0.5},
                {"scenario": "production", "peer": False, "idle_rss_mib": 220.0, "ready_s": 0.9}]
    rows = bench_goals.evaluate([], gateways)
    mem, ready = row(rows, "idle memory"), row(rows, "ready in")
    assert "production" in mem["goal"] and mem["verdict"] == "MISS" and mem["measured"] == "220.0 MiB"
    assert ready["verdict"] == "ok"
    only_peers = bench_goals.evaluate([], gateways[:1])
    assert row(only_peers, "idle memory")["verdict"] == "not measured"


def test_slow_upstream_and_first_event():
    pts = [point("direct-slow", "converse", 64, rps=1250), point("bedrock-slow", "converse", 64, rps=1240)]
    rows = bench_goals.evaluate(pts, [], {"direct": 0.1, "production": 1.4, "direct-slow": 50.3,
                                          "bedrock-slow": 51.0})
    assert row(rows, "50 ms upstream")["verdict"] == "ok"                   # 99.2 %
    assert row(rows, "ConverseStream first event <= direct + 1 ms (production")["verdict"] == "MISS"
    assert row(rows, "ConverseStream first event <= direct-slow + 1 ms")["verdict"] == "ok"
    none = bench_goals.evaluate([], [], {})
    assert row(none, "ConverseStream first event")["verdict"] == "not measured"


def test_the_bare_path_cuts_an_event_stream_into_its_frames():
    import bare_path
    frames = [eventstream.event_frame("contentBlockDelta", b'{"i":%d}' % i) for i in range(3)]
    assert bare_path.split_frames(b"".join(frames)) == frames
    with pytest.raises(ValueError):
        bare_path.split_frames(b"".join(frames)[:-1])


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_portkeys_preload_binds_loopback_when_no_host_is_given():
    script = ("const http = require('http'); const s = http.createServer(() => {});"
              "s.listen(0, () => { console.log(s.address().address); s.close(); });")
    out = subprocess.run(["node", "--require", os.path.join(SCRIPTS, "bench", "portkey-loopback.js"), "-e", script],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "127.0.0.1"


def test_the_ledger_on_redis_is_judged_by_what_it_adds_to_the_local_ledger():
    pts = [point("governed", "converse", 1, cpu=2.70, added=2.30), point("governed-redis", "converse", 1, cpu=2.95,
                                                                          added=2.90),
           point("governed", "converse", 64, cpu=1.30), point("governed-redis", "converse", 64, cpu=1.70)]
    rows = bench_goals.evaluate(pts, [])
    one = row(rows, "ledger on Redis adds <= 0.3 ms of node CPU per request (governed-redis vs governed, Converse, 1 ")
    assert one["ok"] is True and one["ratio"] == "+0.250 ms (<= +0.300)"
    many = row(rows, "ledger on Redis adds <= 0.3 ms of node CPU per request (governed-redis vs governed, Converse, 64")
    assert many["ok"] is False and many["verdict"] == "MISS"
    assert not [r for r in rows if r["goal"].startswith("ledger on Redis") and "16 connections" in r["goal"]]
    p50 = row(rows, "ledger on Redis adds <= 0.5 ms to p50")
    assert p50["ok"] is False and p50["ratio"] == "+0.600 ms (<= +0.500)"
    none = bench_goals.evaluate([], [])
    assert row(none, "ledger on Redis adds <= 0.3 ms")["needs"] == \
        "--scenarios governed,governed-redis --routes converse --connections 1,16,64"
    assert row(none, "ledger on Redis adds <= 0.5 ms")["verdict"] == "not measured"
