"""The goals of the performance issues ("cheaper per request than Portkey", and what the ledger on
Redis may add for several nodes), checked on the points of
one scripts/bench.py run: each as a ratio within the run with `ok` or `MISS`, or `not measured`
with the bench flags that would measure it. Pure: points and gateway records in, rows and
markdown out (absolute figures on a shared machine move by up to 2x between days; ratios within
one run are what count).
"""
from __future__ import annotations

CONVERSE, STREAM = "converse", "converse-stream"
IDLE_RSS_MIB = 150.0
READY_S = 1.0
REDIS_CPU_MS = 0.3      # the several-nodes issue: what the ledger on Redis may add per request
REDIS_P50_MS = 0.5
# the gateway scenario whose memory, start time and stream cost are checked, in order of preference
MAIN_SCENARIOS = ("production", "bedrock", "mock", "production-redis", "governed", "openai")


def _flags(scenarios, routes=(CONVERSE,), conns=(16,)) -> str:
    return (f"--scenarios {','.join(scenarios)} --routes {','.join(routes)} "
            f"--connections {','.join(str(c) for c in conns)}")


def _row(goal: str, measured: str | None, ratio: str | None, ok: bool | None, needs: str = "") -> dict:
    verdict = "not measured" if ok is None else "ok" if ok else "MISS"
    return {"goal": goal, "measured": measured, "ratio": ratio, "ok": ok, "verdict": verdict,
            "needs": needs if ok is None else ""}


def evaluate(points: list[dict], gateways: list[dict], first_event: dict | None = None) -> list[dict]:
    """One row per goal. `points` are bench.py's summarised points (with added_p50_ms set);
    `gateways` its per-target records (scenario, ready_s, idle_rss_mib); `first_event` the median
    ms to a stream's first event by target (with "direct", and "direct-slow" for "-slow" targets)."""
    first_event = first_event or {}
    by = {(p["target"], p["route"], p["connections"]): p for p in points}

    def val(target, route, conns, key):
        p = by.get((target, route, conns))
        return None if p is None else p.get(key)

    rows = []

    def compare(goal, a, b, key, conns, limit, at_most, unit, needs, route=CONVERSE):
        x, y = val(a, route, conns, key), val(b, route, conns, key)
        if x is None or y is None or y <= 0:
            rows.append(_row(goal, None, None, None, needs))
            return
        r = x / y
        ok = r <= limit if at_most else r >= limit
        rows.append(_row(goal, f"{x:.3f} vs {y:.3f} {unit}" if unit != "rps" else f"{x:,.0f} vs {y:,.0f} rps",
                         f"{r:.2f}x ({'<=' if at_most else '>='} {limit:.2f}x)", ok))

    compare("production CPU per request <= 0.7x Portkey's (Converse, 16 connections)",
            "production", "portkey", "cpu_ms_per_req", 16, 0.7, True, "ms", _flags(("portkey", "production")))
    # added latency: the difference, not a ratio (Portkey's added p50 can be near zero)
    x, y = val("production", CONVERSE, 1, "added_p50_ms"), val("portkey", CONVERSE, 1, "added_p50_ms")
    if x is None or y is None:
        rows.append(_row("production added p50 at 1 connection <= Portkey's (Converse)", None, None, None,
                         _flags(("portkey", "production"), conns=(1,))))
    else:
        rows.append(_row("production added p50 at 1 connection <= Portkey's (Converse)",
                         f"{x:+.3f} vs {y:+.3f} ms", f"{x - y:+.3f} ms (<= +0.000)", x <= y))
    for c in (16, 64):
        compare(f"production rps at {c} connections >= 2x Portkey's (Converse)", "production", "portkey", "rps",
                c, 2.0, False, "rps", _flags(("portkey", "production"), conns=(c,)))
    compare("production-redis CPU per request <= 0.8x Portkey's (Converse, 16 connections)",
            "production-redis", "portkey", "cpu_ms_per_req", 16, 0.8, True, "ms",
            _flags(("portkey", "production-redis")))
    compare("mock CPU per request <= 1.3x the bare path's (Converse, 16 connections)",
            "mock", "bare", "cpu_ms_per_req", 16, 1.3, True, "ms", _flags(("bare", "mock")))

    both = [s for s in MAIN_SCENARIOS if (s, CONVERSE, 16) in by and (s, STREAM, 16) in by]
    s = both[0] if both else "production"
    x, y = val(s, STREAM, 16, "cpu_ms_per_req"), val(s, CONVERSE, 16, "cpu_ms_per_req")
    goal = f"ConverseStream CPU per request <= 1.3x Converse's ({s}, 16 connections)"
    if x is None or y is None or y <= 0:
        rows.append(_row(goal, None, None, None, _flags((s,), routes=(CONVERSE, STREAM))))
    else:
        rows.append(_row(goal, f"{x:.3f} vs {y:.3f} ms", f"{x / y:.2f}x (<= 1.30x)", x / y <= 1.3))

    rec = next((g for name in MAIN_SCENARIOS for g in gateways if g["scenario"] == name and not g.get("peer")), None)
    if rec is None:
        for goal in (f"idle memory <= {IDLE_RSS_MIB:.0f} MiB RSS, every process (no embedder)",
                     f"ready in <= {READY_S:.1f} s"):
            rows.append(_row(goal, None, None, None, "--scenarios production"))
    else:
        rss, ready = rec["idle_rss_mib"], rec["ready_s"]
        rows.append(_row(f"idle memory <= {IDLE_RSS_MIB:.0f} MiB RSS, every process (no embedder; {rec['scenario']})",
                         f"{rss:.1f} MiB", f"{rss / IDLE_RSS_MIB:.2f}x of the limit", rss <= IDLE_RSS_MIB))
        rows.append(_row(f"ready in <= {READY_S:.1f} s ({rec['scenario']})", f"{ready:.2f} s",
                         f"{ready / READY_S:.2f}x of the limit", ready <= READY_S))
    x, y = val("bedrock-slow", CONVERSE, 64, "rps"), val("direct-slow", CONVERSE, 64, "rps")
    goal = "50 ms upstream, 64 connections: bedrock rps >= 98% of direct's (Converse; nothing serialises)"
    if x is None or y is None or y <= 0:
        rows.append(_row(goal, None, None, None, _flags(("bedrock-slow",), conns=(64,))))
    else:
        rows.append(_row(goal, f"{x:,.0f} vs {y:,.0f} rps", f"{100 * x / y:.1f}% (>= 98%)", x / y >= 0.98))
    fe_targets = ([s for s in MAIN_SCENARIOS if s in first_event][:1]
                  + (["bedrock-slow"] if "bedrock-slow" in first_event else []))
    for s in fe_targets:
        base = "direct-slow" if s.endswith("-slow") else "direct"
        goal = f"ConverseStream first event <= {base} + 1 ms ({s}, 1 connection)"
        if base not in first_event:
            rows.append(_row(goal, None, None, None, _flags((s,), routes=(STREAM,), conns=(1,))))
            continue
        d = first_event[s] - first_event[base]
        rows.append(_row(goal, f"{first_event[s]:.3f} vs {first_event[base]:.3f} ms", f"{d:+.3f} ms (<= +1.000)",
                         d <= 1.0))
    if not fe_targets:
        rows.append(_row("ConverseStream first event <= direct + 1 ms (1 connection)", None, None, None,
                         _flags(("production",), routes=(STREAM,), conns=(1,))))
    rows += redis_rows(val)
    return rows


def redis_rows(val) -> list[dict]:
    """The several-nodes issue's goals: the ledger on Redis (`governed-redis`) against the local
    one (`governed`) in the same run adds at most REDIS_CPU_MS of the node's CPU per request (at
    each connection count measured) and at most REDIS_P50_MS to p50 at one connection."""
    needs = _flags(("governed", "governed-redis"), conns=(1, 16, 64))
    rows = []
    for c in (1, 16, 64):
        x, y = val("governed-redis", CONVERSE, c, "cpu_ms_per_req"), val("governed", CONVERSE, c, "cpu_ms_per_req")
        if x is not None and y is not None:
            d = x - y
            rows.append(_row(f"ledger on Redis adds <= {REDIS_CPU_MS} ms of node CPU per request (governed-redis "
                             f"vs governed, Converse, {c} connection{'s' if c > 1 else ''})",
                             f"{x:.3f} vs {y:.3f} ms", f"{d:+.3f} ms (<= +{REDIS_CPU_MS:.3f})", d <= REDIS_CPU_MS))
    if not rows:
        rows.append(_row(f"ledger on Redis adds <= {REDIS_CPU_MS} ms of node CPU per request (governed-redis vs "
                         "governed, Converse)", None, None, None, needs))
    x, y = val("governed-redis", CONVERSE, 1, "added_p50_ms"), val("governed", CONVERSE, 1, "added_p50_ms")
    goal = f"ledger on Redis adds <= {REDIS_P50_MS} ms to p50 at 1 connection (governed-redis vs governed, Converse)"
    if x is None or y is None:
        rows.append(_row(goal, None, None, None, _flags(("governed", "governed-redis"), conns=(1,))))
    else:
        rows.append(_row(goal, f"{x:+.3f} vs {y:+.3f} ms", f"{x - y:+.3f} ms (<= +{REDIS_P50_MS:.3f})",
                         x - y <= REDIS_P50_MS))
    return rows


def markdown(rows: list[dict]) -> list[str]:
    out = ["Goals of the performance issues: ratios and differences within this run (only they count: absolute figures move by "
           "up to 2x between days on a shared machine).", "",
           "| goal | measured | ratio | verdict |", "|---|---|---:|---|"]
    for r in rows:
        needs = r["needs"]
        verdict = r["verdict"] + (f": run with `{needs}`" if needs.startswith("--") else f": {needs}" if needs else "")
        out.append(f"| {r['goal']} | {r['measured'] or '–'} | {r['ratio'] or '–'} | {verdict} |")
    return out
