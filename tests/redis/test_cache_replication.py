"""One cache for several nodes (workers/cache/replication.py): cache actors of different nodes, in one
process, on one real Redis, driven through handle() as the workers drive them. An entry stored on
one node is found on the other (exact and semantic), never by another scope; a node skips its own
records, does not apply expired ones, starts warm from the stream and resumes where it stopped;
clears replicate; Redis stopped: each node's cache keeps working and they catch up when it is back."""
from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from finops.shared import config as configmod
from finops.workers.cache import keys, persist, replication
from finops.workers.cache.actor import CacheActor

DIM = 8
WAIT = 20.0          # how long a test waits for records to arrive (it stops as soon as they have)


def unit(*xs) -> bytes:
    v = np.zeros(DIM, dtype=np.float32)
    v[:len(xs)] = xs
    return (v / np.linalg.norm(v)).astype(np.float32).tobytes()


def make_cfg(data_dir, node: str, url: str, **cache) -> configmod.Config:
    return configmod.build({"providers": {"mock": {"kind": "mock"}}, "default_route": {"provider": "mock"},
                            "server": {"data_dir": str(data_dir), "node_name": node},
                            "governance": {"redis_url": url},
                            "cache": {"replication": "redis", **cache}}, "test")


@pytest.fixture
def nodes(tmp_path, redis_db):
    """node("a") starts node a's cache actor (data dir tmp/a); every one still open is closed."""
    made = []

    def start(name: str, clock=time.time, **cache):
        a = CacheActor(make_cfg(tmp_path / name, name, redis_db.url, **cache), clock=clock)
        made.append(a)
        return a

    yield start
    for a in made:
        try:
            a.close()
        except sqlite3.ProgrammingError:
            pass        # closed by the test


def scope_of(owner: str) -> str:
    return keys.scope_key("converse", "m1", owner, {"system": "be brief"})


def put(actor, exact, scope="s1", vec=None, emb="emb-a", owner="key:a", model="m1", ttl=300.0, answer=None):
    msg = {"k": "put", "scope": scope, "exact": exact, "ns": f"r|{owner}", "ns_max": 100, "owner": owner,
           "model": model, "question": f"q:{exact}", "answer": answer or f"A:{exact}".encode(), "ttl": ttl,
           "saved": 0.02}
    if vec is not None:
        msg["vec"], msg["emb"] = vec, emb
    assert actor.handle(msg) is None
    return msg


def get(actor, exact):
    return actor.handle({"k": "get", "exact": exact, "final": True})


def search(actor, vec, scope="s1", emb="emb-a", threshold=0.9):
    return actor.handle({"k": "search", "scope": scope, "vec": vec, "emb": emb, "threshold": threshold})


def until(cond, what: str):
    """Apply nothing itself: wait (polling) until cond() holds, or fail naming what never came."""
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT} s: {what}")
        time.sleep(0.01)


def applied(actor, n: int, what: str = "records applied") -> None:
    """Let `actor` apply what arrived until it has applied `n` records in all."""
    def done():
        actor.apply_replicated()
        return actor.repl_counts["applied"] + actor.repl_counts["clears_applied"] >= n
    until(done, f"{n} {what} on node {actor.repl.node}")


def repl(actor) -> dict:
    return actor.handle({"k": "stats"})["replication"]


# --- an entry reaches the other node -----------------------------------------------------------------

def test_an_entry_stored_on_a_is_found_on_b_exact_and_semantic(nodes):
    a, b = nodes("a"), nodes("b")
    put(a, "e-sem", vec=unit(1, 0.2), answer=b"semantic answer")
    put(a, "e-exact", answer=b"exact-layer answer")          # no vector: the exact layer only
    assert get(b, "e-exact") == {"hit": ""}                  # not there before it is applied
    applied(b, 2)
    assert get(b, "e-exact") == {"hit": "exact", "answer": b"exact-layer answer", "saved": 0.02}
    out = search(b, unit(1, 0.25))
    assert out["hit"] == "semantic" and out["answer"] == b"semantic answer"
    s = b.handle({"k": "stats"})
    assert (s["entries"], s["vectors"], s["embedding_model"]) == (2, 1, "emb-a")
    assert s["replication"]["applied"] == 2 and s["replication"]["received"] == 2
    # a's own records come back to it through the stream and are skipped, not applied again
    until(lambda: a.repl.counts["own_skipped"] == 2, "a sees its own two records")
    a.apply_replicated()
    assert a.repl_counts["applied"] == 0 and a.handle({"k": "stats"})["entries"] == 2
    assert repl(a)["published"] == 2 and repl(a)["dropped"] == 0


def test_both_ways_and_a_third_node(nodes):
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    put(a, "from-a")
    put(b, "from-b")
    applied(a, 1)
    applied(b, 1)
    applied(c, 2)
    for n in (a, b, c):
        assert get(n, "from-a")["hit"] == "exact" and get(n, "from-b")["hit"] == "exact"


def test_a_replicated_entry_never_crosses_a_scope(nodes):
    """The scope (a hash of the virtual key, modelId, operation and context) travels with the entry:
    on node b, another key's identical question and vector find nothing."""
    a, b = nodes("a"), nodes("b")
    mine, theirs = scope_of(keys.owner("vk-a")), scope_of(keys.owner("vk-b"))
    exact_mine = keys.exact_key(mine, "What is our launch codename?")
    put(a, exact_mine, scope=mine, vec=unit(1), owner="key:vk-a", answer=b"secret of vk-a")
    applied(b, 1)
    assert search(b, unit(1), scope=mine)["answer"] == b"secret of vk-a"
    assert search(b, unit(1), scope=theirs, threshold=0.01)["hit"] == ""
    assert get(b, keys.exact_key(theirs, "What is our launch codename?")) == {"hit": ""}
    assert b.handle({"k": "stats"})["by_owner"] == {"key:vk-a": 1}


def test_expired_records_are_not_applied(nodes):
    past = time.time() - 1000
    a = nodes("a", clock=lambda: past)          # its entries expired long ago by everyone's clock
    b = nodes("b")
    put(a, "stale", ttl=300)
    put(a, "stale-sem", vec=unit(1), ttl=300)
    until(lambda: b.repl.counts["received"] == 2, "b receives both records")
    b.apply_replicated()
    assert b.repl_counts == {"applied": 0, "expired_skipped": 2, "clears_applied": 0}
    assert get(b, "stale") == {"hit": ""} and b.handle({"k": "stats"})["entries"] == 0


def test_another_embedding_model_is_applied_for_exact_matches_only(nodes):
    a, b = nodes("a"), nodes("b")
    put(b, "b-own", vec=unit(1), emb="emb-b")             # b's index belongs to emb-b
    put(a, "a-sem", vec=unit(1), emb="emb-a")
    applied(b, 1)
    s = b.handle({"k": "stats"})
    assert (s["entries"], s["vectors"], s["embedding_model"]) == (2, 1, "emb-b")   # not rebuilt for a's model
    assert get(b, "a-sem")["hit"] == "exact"


# --- clears -------------------------------------------------------------------------------------------

def test_a_clear_replicates_but_not_to_later_entries(nodes):
    a, b = nodes("a"), nodes("b")
    put(a, "a1", owner="key:x")
    put(a, "a2", owner="key:y")
    applied(b, 2)
    assert a.handle({"k": "clear", "owner": "key:x", "model": None}) == {"removed": 1}
    applied(b, 3, "records and clears applied")
    assert get(b, "a1") == {"hit": ""} and get(b, "a2")["hit"] == "exact"
    put(b, "b-later", owner="key:x")                     # stored after the clear: kept everywhere
    applied(a, 1)
    assert get(a, "b-later")["hit"] == "exact" and get(b, "b-later")["hit"] == "exact"


# --- warm start and restart ---------------------------------------------------------------------------

def test_a_new_node_starts_warm_and_a_restarted_node_resumes(nodes, tmp_path):
    a = nodes("a")
    for i in range(3):
        put(a, f"old-{i}", vec=unit(1, i))
    put(a, "short-lived", ttl=0.2)
    gone = time.time() + 0.3
    b = nodes("b")
    until(lambda: b.repl.counts["received"] == 4, "b reads the four records")
    b.apply_replicated()                         # "short-lived" applied or, if b was slow, skipped
    b.tick()                                     # saves its entries and the stream id it reached
    position = b.position
    b.close()
    time.sleep(max(0.0, gone - time.time()))     # "short-lived" is now past its expiry

    c = nodes("c")                               # a new node: reads the stream from the beginning
    until(lambda: c.repl.counts["received"] == 4, "c reads the whole stream")
    c.apply_replicated()
    assert c.repl_counts["applied"] == 3 and c.repl_counts["expired_skipped"] == 1
    assert all(get(c, f"old-{i}")["hit"] == "exact" for i in range(3))
    assert search(c, unit(1, 2), threshold=0.999)["answer"] == b"A:old-2"

    put(a, "while-b-was-down")
    b2 = nodes("b")                              # b again, same data dir: from its saved position
    assert b2.position == position and b2.handle({"k": "stats"})["entries"] == 3   # its file kept them
    applied(b2, 1)
    assert b2.repl_counts["applied"] == 1 and b2.repl.counts["received"] == 1        # nothing read twice
    assert get(b2, "while-b-was-down")["hit"] == "exact"


def test_a_node_away_longer_than_the_stream_keeps_says_so(nodes):
    a, b = nodes("a", replication_maxlen=100), nodes("b")
    put(a, "first")
    applied(b, 1)
    b.tick()
    b.close()
    for i in range(2000):                        # far past the cap: "first" and many more trimmed
        put(a, f"e{i}")
    until(lambda: repl(a)["published"] == 2001, "a publishes")
    b2 = nodes("b")
    assert get(b2, "first")["hit"] == "exact"       # its own file kept what it had applied
    until(lambda: b2.repl.counts["received"] >= 1, "b reads what is left")
    assert repl(b2)["gaps"] == 1
    until(lambda: (b2.apply_replicated() or True) and get(b2, "e1999")["hit"] == "exact", "b has the newest entry")


def test_an_offline_clear_is_told_to_the_other_nodes(nodes, tmp_path, redis_db):
    """`finops cache clear` on a node whose gateway is stopped clears its file and writes the clear
    to the stream for the others."""
    from finops.workers.cache import cli
    a, b = nodes("a"), nodes("b")
    put(a, "x1", owner="key:x")
    put(a, "y1", owner="key:y")
    applied(b, 2)
    assert cli.main(["clear", "--key", "x"], make_cfg(tmp_path / "c", "c", redis_db.url)) == 0
    applied(b, 3, "records and clears applied")
    assert get(b, "x1") == {"hit": ""} and get(b, "y1")["hit"] == "exact"
    applied(a, 1, "clears applied")
    assert get(a, "x1") == {"hit": ""}


def test_the_stream_is_capped(nodes, redis_db):
    a = nodes("a", replication_maxlen=100)
    for i in range(2000):
        put(a, f"e{i}")
    until(lambda: repl(a)["published"] == 2000, "a publishes 2000 records")
    n = redis_db.client().xlen(replication.STREAM)
    assert n < 400          # MAXLEN ~ trims whole macro nodes: about the cap, never the 2000


# --- Redis down ---------------------------------------------------------------------------------------

def test_redis_down_each_node_keeps_its_cache_and_they_catch_up(nodes, redis_db):
    a, b = nodes("a"), nodes("b")
    put(a, "before")
    applied(b, 1)
    redis_db.stop()
    put(a, "during-sem", vec=unit(1))            # returns at once: queued for Redis
    put(a, "during")
    assert get(a, "during")["hit"] == "exact"    # a's own cache works locally
    assert search(a, unit(1))["hit"] == "semantic"
    put(b, "b-during")
    assert get(b, "b-during")["hit"] == "exact" and get(b, "during") == {"hit": ""}
    until(lambda: repl(a)["queued"] == 2 and not repl(a)["connected"], "a keeps its two records for Redis")
    until(lambda: not repl(b)["connected"], "b notices Redis is down")
    redis_db.start()                             # empty (no persistence): the stream starts again
    applied(b, 3)
    applied(a, 1)
    assert get(b, "during")["hit"] == "exact" and search(b, unit(1))["hit"] == "semantic"
    assert get(a, "b-during")["hit"] == "exact"
    until(lambda: repl(a)["connected"] and repl(b)["connected"], "both nodes reconnect")
    assert repl(a)["queued"] == 0 and repl(a)["dropped"] == 0


def test_publishing_never_blocks_and_drops_the_oldest_past_the_queue(tmp_path):
    """No Redis at all (a closed port): publish() returns at once; past the bound the oldest
    records are dropped and counted."""
    from tests.helpers.gateway import free_port
    rep = replication.Replicator(replication.client_factory(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2),
                                 "a", queue_max=10)
    rep.start()
    try:
        for i in range(25):
            rep.publish({"t": "put", "i": i})
        until(lambda: rep.counts["errors"] >= 1, "the writer fails to reach Redis")
        s = rep.stats()
        assert s["queued"] == 10 and s["dropped"] == 15 and not s["connected"]
        assert [r["i"] for r in rep.out] == list(range(15, 25))       # the newest are kept
    finally:
        rep.close(timeout=0.5)


def test_the_position_is_kept_in_the_cache_file(nodes, tmp_path):
    a, b = nodes("a"), nodes("b")
    put(a, "x")
    applied(b, 1)
    b.tick()
    db = persist.open_db(str(tmp_path / "b"))
    try:
        assert persist.load_position(db) == b.position != ""
    finally:
        db.close()
