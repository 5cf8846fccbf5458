"""The cache actor (workers/cache/actor.py) driven through handle(), as the workers drive it over
ZeroMQ, plus its file: entries survive a restart, expired ones do not, and a change of embedding
model drops the old vectors without losing exact matches."""
from __future__ import annotations

import os
import sqlite3
import stat

import numpy as np
import pytest

from finops.shared import config as configmod
from finops.workers.cache import persist
from finops.workers.cache.actor import CacheActor

DIM = 8
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def unit(*xs, dim: int = DIM) -> bytes:
    v = np.zeros(dim, dtype=np.float32)
    v[:len(xs)] = xs
    return (v / np.linalg.norm(v)).astype(np.float32).tobytes()


def make_cfg(data_dir, **cache) -> configmod.Config:
    return configmod.build({"providers": {"mock": {"kind": "mock"}}, "default_route": {"provider": "mock"},
                            "server": {"data_dir": str(data_dir)}, "cache": cache}, "test")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def actors(tmp_path, clock):
    """Start actors on one data dir; every one still open is closed at the end."""
    made = []

    def start(**cache):
        a = CacheActor(make_cfg(tmp_path, **cache), clock=clock)
        made.append(a)
        return a

    yield start
    for a in made:
        try:
            a.close()
        except sqlite3.ProgrammingError:
            pass        # closed by the test


def put(actor, exact, scope="s1", vec=None, emb="emb-a", owner="key:a", model="m1", ttl=300.0, answer=None,
        ns=None, ns_max=100, saved=0.02):
    msg = {"k": "put", "scope": scope, "exact": exact, "ns": ns or f"r|{owner}", "ns_max": ns_max,
           "owner": owner, "model": model, "question": f"q:{exact}", "answer": answer or f"A:{exact}".encode(),
           "ttl": ttl, "saved": saved}
    if vec is not None:
        msg["vec"], msg["emb"] = vec, emb
    assert actor.handle(msg) is None          # no reply: workers do not wait for a put
    return msg


def get(actor, exact, final=True):
    return actor.handle({"k": "get", "exact": exact, "final": final})


def search(actor, vec, scope="s1", emb="emb-a", threshold=0.9):
    return actor.handle({"k": "search", "scope": scope, "vec": vec, "emb": emb, "threshold": threshold})


def rows(tmp_path):
    db = sqlite3.connect(tmp_path / persist.FILENAME)
    try:
        return (dict(db.execute("SELECT k, v FROM meta")),
                {r[0]: r[1:] for r in db.execute("SELECT exact, vector IS NOT NULL, hits FROM entries")})
    finally:
        db.close()


# --- messages -------------------------------------------------------------------------------------------

def test_put_then_get_exact(actors):
    a = actors()
    put(a, "e1", answer=b"the answer", saved=0.5)
    assert get(a, "e1") == {"hit": "exact", "answer": b"the answer", "saved": 0.5}
    assert get(a, "nope") == {"hit": ""}
    s = a.handle({"k": "stats"})
    assert (s["entries"], s["hits_exact"], s["misses"], s["stores"]) == (1, 1, 1, 1)


def test_a_non_final_miss_is_not_counted(actors):
    """The semantic search that follows counts the miss (once)."""
    a = actors()
    assert get(a, "nope", final=False) == {"hit": ""}
    assert a.handle({"k": "stats"})["misses"] == 0
    put(a, "e1", vec=unit(1))
    search(a, unit(0, 1))
    assert a.handle({"k": "stats"})["misses"] == 1


def test_semantic_search_is_scoped(actors):
    a = actors()
    put(a, "mine", scope="s1", vec=unit(1, 0.3), answer=b"mine")
    put(a, "theirs", scope="s2", vec=unit(1), answer=b"theirs", owner="key:b")
    out = search(a, unit(1), scope="s1", threshold=0.9)
    assert out["hit"] == "semantic" and out["answer"] == b"mine"
    assert out["sim"] == pytest.approx(1 / np.sqrt(1.09), abs=1e-5) and out["saved"] == 0.02
    out = search(a, unit(1), scope="s1", threshold=0.99)
    assert out["hit"] == "" and out["best"] == pytest.approx(1 / np.sqrt(1.09), abs=1e-5)
    assert search(a, unit(1), scope="s3", threshold=0.1) == {"hit": "", "best": 0.0}
    s = a.handle({"k": "stats"})
    assert (s["hits_semantic"], s["misses"], s["vectors"], s["embedding_model"], s["dim"]) == \
        (1, 2, 2, "emb-a", DIM)


def test_search_without_a_model_id_is_a_miss(actors):
    a = actors()
    put(a, "e1", vec=unit(1))
    assert search(a, unit(1), emb="") == {"hit": "", "best": 0.0}
    assert a.handle({"k": "stats"})["vectors"] == 1      # and no rebuild


def test_put_without_vector_is_exact_only(actors):
    a = actors()
    put(a, "e1")
    assert a.handle({"k": "stats"})["vectors"] == 0
    assert get(a, "e1")["hit"] == "exact"


def test_ns_max_bounds_each_namespace(actors):
    a = actors()
    for i in range(4):
        put(a, f"e{i}", ns_max=2)
    assert [get(a, f"e{i}")["hit"] for i in range(4)] == ["", "", "exact", "exact"]


def test_clear_by_owner_and_by_model(actors, tmp_path):
    a = actors()
    put(a, "a1", owner="key:a", model="m1", vec=unit(1))
    put(a, "a2", owner="key:a", model="m2")
    put(a, "b1", owner="key:b", model="m1", vec=unit(0, 1))
    put(a, "b2", owner="key:b", model="m2")
    assert a.handle({"k": "clear", "owner": "key:a"}) == {"removed": 2}
    assert get(a, "a1") == get(a, "a2") == {"hit": ""}
    assert a.handle({"k": "clear", "owner": None, "model": "m1"}) == {"removed": 1}
    assert get(a, "b1") == {"hit": ""} and get(a, "b2")["hit"] == "exact"
    assert a.handle({"k": "stats"})["vectors"] == 0
    # clear writes at once: the file agrees without waiting for a tick
    assert set(rows(tmp_path)[1]) == {"b2"}
    assert a.handle({"k": "clear"}) == {"removed": 1}
    assert rows(tmp_path)[1] == {}


def test_unknown_message_kind_is_ignored(actors):
    assert actors().handle({"k": "frobnicate"}) is None


def test_ttl_with_the_clock(actors, clock):
    a = actors()
    put(a, "short", ttl=10)
    put(a, "long", ttl=1000)
    clock.t += 10
    assert get(a, "short") == {"hit": ""}
    assert get(a, "long")["hit"] == "exact"


def test_tick_sweeps_and_writes(actors, clock, tmp_path):
    a = actors()
    put(a, "short", ttl=10)
    put(a, "long", ttl=1000)
    a.tick()
    assert set(rows(tmp_path)[1]) == {"short", "long"}
    clock.t += 11
    a.tick()
    assert set(rows(tmp_path)[1]) == {"long"}
    assert a.handle({"k": "stats"})["expired"] == 1


# --- persistence ----------------------------------------------------------------------------------------

def test_entries_hits_and_vectors_survive_a_restart(actors, clock, tmp_path):
    a = actors()
    put(a, "e1", scope="s1", vec=unit(1), answer=b"one")
    put(a, "e2", scope="s1", vec=unit(0, 1), answer=b"two")
    put(a, "e3", scope="s2", answer=b"three")           # exact only
    get(a, "e1")
    get(a, "e1")
    a.tick()
    get(a, "e3")                                        # a hit after the last tick: saved by close()
    a.close()

    clock.t += 60
    b = actors()
    s = b.handle({"k": "stats"})
    assert (s["entries"], s["vectors"], s["embedding_model"], s["dim"]) == (3, 2, "emb-a", DIM)
    assert s["stores"] == 0
    assert {e.exact: e.hits for e in b.index.entries.values()} == {"e1": 2, "e2": 0, "e3": 1}
    assert get(b, "e1") == {"hit": "exact", "answer": b"one", "saved": 0.02}
    assert get(b, "e3")["answer"] == b"three"
    out = search(b, unit(0.1, 1), scope="s1")
    assert out["hit"] == "semantic" and out["answer"] == b"two"
    assert search(b, unit(1), scope="s2", threshold=0.1)["hit"] == ""
    # new ids do not collide with restored ones
    put(b, "e4")
    assert len({e.id for e in b.index.entries.values()}) == 4
    b.close()
    assert set(rows(tmp_path)[1]) == {"e1", "e2", "e3", "e4"}


def test_replaced_entry_is_replaced_in_the_file(actors, clock):
    a = actors()
    put(a, "e1", answer=b"old", vec=unit(1))
    a.tick()
    put(a, "e1", answer=b"new", vec=unit(0, 1))
    a.close()
    b = actors()
    assert get(b, "e1")["answer"] == b"new"
    assert b.handle({"k": "stats"})["entries"] == 1
    assert search(b, unit(1), threshold=0.5)["hit"] == ""          # the old vector did not come back
    assert search(b, unit(0, 1), threshold=0.5)["answer"] == b"new"


def test_expired_entries_are_gone_after_a_restart(actors, clock, tmp_path):
    a = actors()
    put(a, "short", ttl=10, vec=unit(1))
    put(a, "long", ttl=1000, vec=unit(0, 1))
    a.close()
    clock.t += 11
    b = actors()
    assert get(b, "short") == {"hit": ""}
    assert search(b, unit(1), threshold=0.5)["hit"] == ""
    assert get(b, "long")["hit"] == "exact"
    assert b.handle({"k": "stats"})["entries"] == 1
    assert set(rows(tmp_path)[1]) == {"long"}              # deleted from the file at load


def test_entry_put_and_removed_between_ticks_is_not_written(actors, clock, tmp_path):
    a = actors()
    put(a, "e1", ttl=5)
    clock.t += 6
    assert get(a, "e1") == {"hit": ""}
    a.close()
    assert rows(tmp_path)[1] == {}


def test_new_embedding_model_rebuilds(actors, clock, tmp_path):
    a = actors()
    put(a, "e1", vec=unit(1), emb="emb-a")
    put(a, "e2", vec=unit(0, 1), emb="emb-a")
    a.tick()
    # a worker with another embedder (an operator changed cache.embedding_model); 4 dimensions
    out = search(a, unit(1, dim=4), emb="emb-b")
    assert out == {"hit": "", "best": 0.0}
    s = a.handle({"k": "stats"})
    assert (s["embedding_model"], s["dim"], s["vectors"], s["entries"]) == ("emb-b", 4, 0, 2)
    assert get(a, "e1")["hit"] == "exact"
    assert rows(tmp_path)[0] == {"embedding_model": "emb-b", "dim": "4"}
    assert all(not has_vec for has_vec, _ in rows(tmp_path)[1].values())
    # an old-model vector is now refused (it would rebuild back, so the worker's model wins)
    put(a, "e3", vec=unit(0, 0, 1, dim=4), emb="emb-b")
    assert search(a, unit(0, 0, 1, dim=4), emb="emb-b")["answer"] == b"A:e3"
    a.close()

    b = actors()
    s = b.handle({"k": "stats"})
    assert (s["embedding_model"], s["dim"], s["entries"], s["vectors"]) == ("emb-b", 4, 3, 1)
    assert rows(tmp_path)[0] == {"embedding_model": "emb-b", "dim": "4"}
    assert get(b, "e2")["hit"] == "exact"
    assert search(b, unit(0, 0, 1, dim=4), emb="emb-b")["answer"] == b"A:e3"


def test_rebuild_drops_vectors_not_yet_written(actors, clock, tmp_path):
    """A put of the old model still waiting for the tick must not reach the file with its vector:
    after a restart it would be searched as a vector of the new model (same dimension here)."""
    a = actors()
    put(a, "old", vec=unit(1), emb="emb-a")                  # not flushed yet
    search(a, unit(0, 1), emb="emb-b")                        # same dimension, another model
    a.close()
    assert rows(tmp_path)[0]["embedding_model"] == "emb-b"
    assert rows(tmp_path)[1]["old"][0] == 0                  # stored without its old-model vector
    b = actors()
    assert b.handle({"k": "stats"})["vectors"] == 0
    assert search(b, unit(1), emb="emb-b", threshold=0.5)["hit"] == ""
    assert get(b, "old")["hit"] == "exact"


def test_file_mode_is_0600(actors, tmp_path):
    a = actors()
    put(a, "e1", vec=unit(1))
    a.tick()
    path = tmp_path / persist.FILENAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for side in ("-wal", "-shm"):
        p = str(path) + side
        if os.path.exists(p):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    a.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_max_entries_config_bounds_the_whole_cache(actors):
    a = actors(max_entries=3)
    for i in range(5):
        put(a, f"e{i}", ns=f"n{i}")
    s = a.handle({"k": "stats"})
    assert (s["entries"], s["max_entries"], s["evicted_lru"]) == (3, 3, 2)
