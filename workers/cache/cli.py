"""`finops cache stats | clear [--key VK] [--model M]`: look at or empty the response cache.

With the gateway running, the command asks the cache actor (the one owner of the index), so a
clear takes effect at once in every worker. With the gateway stopped, it reads or edits the
cache file (<data_dir>/cache.sqlite) directly. The admin API has the same: GET and DELETE
/admin/cache?key=VK&model=M.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import msgpack

from finops.shared import transport
from finops.shared.config import Config
from finops.shared.transport import zmq

from . import keys, persist, replication

TIMEOUT_MS = 5000        # the running cache actor answers stats/clear within this, or the CLI says it is not running


def ask_actor(cfg: Config, msg: dict) -> dict | None:
    """One request to the running cache actor; None when none is running."""
    found = transport.discover(cfg.run_dir, "cache")
    if not found:
        return None
    pull = transport.make_socket(zmq.PULL)
    push = transport.make_socket(zmq.PUSH)
    reply_to = ""
    try:
        reply_to = transport.bind(pull, transport.endpoint_for("cache-cli", cfg.run_dir, cfg.server.transport))
        push.connect(found[max(found)])
        push.send(msgpack.packb({**msg, "i": 1, "r": reply_to}, use_bin_type=True))
        if not pull.poll(TIMEOUT_MS):
            raise SystemExit("finops cache: the cache actor did not answer within 5 s")
        out = msgpack.unpackb(pull.recv(), raw=False)
        out.pop("i", None)
        return out
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        if reply_to.startswith("ipc://"):
            try:
                os.unlink(reply_to[6:])
            except OSError:
                pass


def offline_stats(cfg: Config) -> dict:
    db = persist.open_db(cfg.server.data_dir)
    try:
        meta = dict(db.execute("SELECT k, v FROM meta"))
        n, size, vectors = db.execute("SELECT count(*), coalesce(sum(length(answer)), 0), count(vector) "
                                      "FROM entries").fetchone()
        by_model = dict(db.execute("SELECT model, count(*) FROM entries GROUP BY model"))
        by_owner = dict(db.execute("SELECT owner, count(*) FROM entries GROUP BY owner"))
        return {"entries": n, "vectors": vectors, "bytes": size, "embedding_model": meta.get("embedding_model", ""),
                "by_model": by_model, "by_owner": by_owner, "running": False}
    finally:
        db.close()


def offline_clear(cfg: Config, owner: str | None, model: str | None) -> dict:
    db = persist.open_db(cfg.server.data_dir)
    try:
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if model is not None:
            where.append("model = ?")
            args.append(model)
        cur = db.execute("DELETE FROM entries" + (" WHERE " + " AND ".join(where) if where else ""), args)
        return {"removed": cur.rowcount}
    finally:
        db.close()


def main(argv: list[str], cfg: Config) -> int:
    ap = argparse.ArgumentParser(prog="finops cache", description="Look at or empty the response cache.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stats", help="entries, vectors, hits and misses, by model and owner")
    st.add_argument("--json", action="store_true", help="print JSON")
    cl = sub.add_parser("clear", help="remove entries (all of them unless --key or --model)")
    cl.add_argument("--key", help="only this virtual key's entries (or anonymous, or shared:ROUTE)")
    cl.add_argument("--model", help="only entries for this modelId")
    args = ap.parse_args(argv)
    if args.cmd == "stats":
        out = ask_actor(cfg, {"k": "stats"})
        if out is None:
            out = offline_stats(cfg)
        else:
            out["running"] = True
        if args.json:
            print(json.dumps(out, indent=2, sort_keys=True))
        else:
            print_stats(out)
        return 0
    msg = {"k": "clear", "owner": keys.owner_named(args.key), "model": args.model}
    out = ask_actor(cfg, msg)
    if out is None:
        out = offline_clear(cfg, msg["owner"], msg["model"])
        if cfg.cache.replication == "redis":      # the running actor tells the other nodes itself
            try:
                replication.publish_clear(cfg, msg["owner"], msg["model"])
            except Exception as e:
                print(f"removed {out['removed']} cache entries on this node only: the other nodes could not be "
                      f"told ({replication.where(replication.redis_target(cfg)[0])}: {e}); run the same command "
                      "again when Redis answers", file=sys.stderr)
                return 1
    print(f"removed {out['removed']} cache entries")
    return 0


def print_stats(s: dict) -> None:
    state = "running" if s.get("running") else "gateway stopped; from the cache file"
    print(f"cache ({state}): {s['entries']} entries, {s['vectors']} vectors, {s['bytes'] / 1024:.1f} KiB of answers")
    print(f"embedding model: {s.get('embedding_model') or 'none yet (exact matches only)'}")
    if "hits_exact" in s:
        total = s["hits_exact"] + s["hits_semantic"] + s["misses"]
        rate = (s["hits_exact"] + s["hits_semantic"]) / total if total else 0.0
        print(f"since start: {s['hits_exact']} exact hits, {s['hits_semantic']} semantic hits, {s['misses']} misses "
              f"(hit rate {rate:.0%}); {s['stores']} stored, {s['evicted_lru']} evicted, {s['expired']} expired")
    r = s.get("replication")
    if r:
        print(f"replication ({r['redis']}, node {r['node']}, {'connected' if r['connected'] else 'NOT CONNECTED'}): "
              f"{r['published']} published, {r['queued']} queued, {r['dropped']} dropped; {r['applied']} applied from "
              f"other nodes ({r['expired_skipped']} expired skipped), {r['clears_applied']} clears; stream id "
              f"{r['position']}" + (f"; last error: {r['last_error']}" if r["last_error"] and not r["connected"] else ""))
    for title, d in (("by model", s.get("by_model", {})), ("by owner", s.get("by_owner", {}))):
        if d:
            print(f"{title}:")
            for k, v in sorted(d.items(), key=lambda kv: -kv[1]):
                print(f"  {v:8d}  {k}")


if __name__ == "__main__":      # pragma: no cover
    sys.exit(main(sys.argv[1:], Config()))
