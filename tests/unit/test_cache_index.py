"""The cache actor's state (workers/cache/index.py): exact map, FAISS index searched only within a
scope, TTL, LRU per namespace and overall, and rebuilds on an embedding-model change. Vectors are
hand-made unit vectors of 8 dimensions, so every similarity is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from finops.workers.cache.index import CacheIndex, Entry

DIM = 8
NOW = 1_000_000.0


def unit(*xs) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[:len(xs)] = xs
    return v / np.linalg.norm(v)


def at(cos: float) -> np.ndarray:
    """A unit vector with cosine `cos` to unit(1)."""
    return unit(cos, math.sqrt(max(0.0, 1 - cos * cos)))


E1 = unit(1)


def entry(exact: str, scope: str = "s1", ns: str = "r|key:a", owner: str = "key:a", model: str = "m1",
          ttl: float = 300.0, created: float = NOW, answer: bytes | None = None) -> Entry:
    return Entry(id=0, scope=scope, exact=exact, ns=ns, owner=owner, model=model, question=exact,
                 answer=answer if answer is not None else f"answer:{exact}".encode(), created=created,
                 expires=created + ttl, saved_usd=0.01)


def consistent(ix: CacheIndex) -> None:
    """Every structure agrees: what a wrong remove or replace would break."""
    assert set(ix.exact.values()) == set(ix.entries)
    assert all(ix.entries[i].exact == k for k, i in ix.exact.items())
    assert set().union(*ix.scopes.values()) == set(ix.entries)
    assert all(ids for ids in ix.scopes.values())          # no empty scope left behind
    assert set(ix.lru) == set(ix.entries)
    assert set().union(*(set(o) for o in ix.ns_lru.values())) == set(ix.entries)
    assert all(o for o in ix.ns_lru.values())
    assert all(ix.entries[i].ns == ns for ns, o in ix.ns_lru.items() for i in o)
    with_vec = {i for i, e in ix.entries.items() if e.has_vector}
    if ix.index is not None:
        assert ix.index.ntotal == len(with_vec)
        for i in with_vec:
            ix.index.reconstruct(i)         # IndexIDMap2: raises for an id it does not hold


@pytest.fixture
def ix():
    return CacheIndex("emb-1", DIM, max_total=1000)


# --- exact layer ------------------------------------------------------------------------------------

def test_exact_hit_and_miss_and_stats(ix):
    e = ix.put(entry("q1"), E1, ns_max=100)
    assert e.id == 1
    got = ix.get_exact("q1", NOW + 1)
    assert got is e and got.answer == b"answer:q1" and got.hits == 1
    assert ix.get_exact("q2", NOW + 1) is None
    ix.miss()
    s = ix.summary()
    assert (s["hits_exact"], s["misses"], s["stores"], s["entries"], s["vectors"]) == (1, 1, 1, 1, 1)
    assert s["bytes"] == len(b"answer:q1") and s["embedding_model"] == "emb-1" and s["dim"] == DIM
    assert s["by_owner"] == {"key:a": 1} and s["by_model"] == {"m1": 1}


def test_ids_increase(ix):
    ids = [ix.put(entry(f"q{i}"), None, 100).id for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]


# --- semantic layer ---------------------------------------------------------------------------------

def test_search_finds_the_nearest_in_scope(ix):
    a = ix.put(entry("a"), unit(1, 0.1), 100)
    ix.put(entry("b"), unit(0, 1), 100)
    got, sim = ix.search("s1", E1, 0.9, NOW)
    assert got is a and sim == pytest.approx(float(unit(1, 0.1) @ E1), abs=1e-5)
    assert ix.stats["hits_semantic"] == 1 and a.hits == 1


def test_search_never_returns_another_scope(ix):
    """A closer vector of another key (or another context) is never served, nor compared."""
    mine = ix.put(entry("mine", scope="s1"), at(0.9), 100)
    ix.put(entry("theirs", scope="s2", owner="key:b", ns="r|key:b"), E1, 100)   # identical vector
    got, sim = ix.search("s1", E1, 0.5, NOW)
    assert got is mine and sim == pytest.approx(0.9, abs=1e-5)
    # a scope with no entries: nothing, even though an identical vector exists elsewhere
    assert ix.search("s3", E1, 0.1, NOW) == (None, 0.0)
    # a scope whose only entry is far: miss, and the best similarity is of that entry, not s2's 1.0
    ix.put(entry("far", scope="s4"), unit(0, 1), 100)
    got, best = ix.search("s4", E1, 0.5, NOW)
    assert got is None and best == pytest.approx(0.0, abs=1e-5)


def test_threshold_boundary(ix):
    e = ix.put(entry("a"), at(0.8), 100)
    sim = float(at(0.8) @ E1)               # what FAISS computes, to the float
    got, s = ix.search("s1", E1, sim, NOW)  # exactly at the threshold: a hit
    assert got is e and s == pytest.approx(sim)
    got, best = ix.search("s1", E1, sim + 1e-4, NOW)
    assert got is None and best == pytest.approx(0.8, abs=1e-5)
    got, best = ix.search("s1", E1, 0.95, NOW)
    assert got is None and best == pytest.approx(0.8, abs=1e-5)
    assert ix.stats["hits_semantic"] == 1


def test_search_returns_the_best_of_several(ix):
    for i, c in enumerate([0.7, 0.95, 0.85, 0.9, 0.6, 0.99, 0.5]):
        ix.put(entry(f"q{c}"), at(c), 100)
    got, sim = ix.search("s1", E1, 0.8, NOW)
    assert got.exact == "q0.99" and sim == pytest.approx(0.99, abs=1e-5)


def test_entries_without_vectors_are_skipped_by_search_but_served_exactly(ix):
    novec = ix.put(entry("novec"), None, 100)
    assert not novec.has_vector
    assert ix.search("s1", E1, 0.1, NOW) == (None, 0.0)
    with_vec = ix.put(entry("vec"), at(0.5), 100)
    got, sim = ix.search("s1", E1, 0.1, NOW)
    assert got is with_vec
    assert ix.get_exact("novec", NOW) is novec
    consistent(ix)


def test_wrong_dimension_is_not_added(ix):
    e = ix.put(entry("a"), np.ones(DIM + 1, dtype=np.float32) / 3, 100)
    assert not e.has_vector and ix.index.ntotal == 0
    assert ix.get_exact("a", NOW) is e
    # a query of the wrong dimension is a miss, not an error
    ix.put(entry("b"), E1, 100)
    assert ix.search("s1", np.ones(4, dtype=np.float32), 0.1, NOW) == (None, 0.0)
    consistent(ix)


def test_index_without_model_takes_no_vectors():
    ix = CacheIndex("", 0)
    e = ix.put(entry("a"), E1, 100)
    assert not e.has_vector and ix.index is None
    assert ix.search("s1", E1, 0.1, NOW) == (None, 0.0)
    assert ix.get_exact("a", NOW) is e
    assert ix.summary()["vectors"] == 0


# --- TTL ----------------------------------------------------------------------------------------------

def test_expired_entries_are_not_served_and_removed_on_sight(ix):
    e = ix.put(entry("a", ttl=10), E1, 100)
    assert ix.get_exact("a", NOW + 9.9) is e
    assert ix.get_exact("a", NOW + 10) is None          # expires <= now: gone
    assert e.id not in ix.entries and ix.index.ntotal == 0
    assert ix.stats["expired"] == 1
    assert ix.take_removed() == [e.id]
    consistent(ix)


def test_expired_entry_is_not_served_by_search(ix):
    old = ix.put(entry("old", ttl=10), E1, 100)
    live = ix.put(entry("live", ttl=1000), at(0.9), 100)
    got, sim = ix.search("s1", E1, 0.5, NOW + 20)
    assert got is live and sim == pytest.approx(0.9, abs=1e-5)
    assert old.id not in ix.entries and ix.stats["expired"] == 1
    consistent(ix)
    # only expired candidates: a miss, and they are gone
    ix.put(entry("x", scope="s2", ttl=5), E1, 100)
    got, _ = ix.search("s2", E1, 0.5, NOW + 6)
    assert got is None and "s2" not in ix.scopes
    consistent(ix)


def test_sweep_removes_every_expired_entry(ix):
    short = [ix.put(entry(f"s{i}", ttl=10), unit(1, i), 100) for i in range(3)]
    long = ix.put(entry("long", ttl=100), E1, 100)
    assert ix.sweep(NOW + 5) == 0
    assert ix.sweep(NOW + 10) == 3
    assert list(ix.entries) == [long.id] and ix.index.ntotal == 1
    assert sorted(ix.take_removed()) == sorted(e.id for e in short)
    assert ix.stats["expired"] == 3
    consistent(ix)


# --- LRU ----------------------------------------------------------------------------------------------

def test_namespace_limit_evicts_the_least_recently_used(ix):
    a = ix.put(entry("a"), unit(1), 3)
    b = ix.put(entry("b"), unit(0, 1), 3)
    c = ix.put(entry("c"), unit(0, 0, 1), 3)
    assert ix.get_exact("a", NOW) is a            # a is now the most recently used
    d = ix.put(entry("d"), unit(0, 0, 0, 1), 3)   # evicts b, the least recently used
    assert set(ix.entries) == {a.id, c.id, d.id}
    assert ix.get_exact("b", NOW) is None
    assert ix.stats["evicted_lru"] == 1
    # a semantic hit refreshes too
    got, _ = ix.search("s1", unit(0, 0, 1), 0.9, NOW)
    assert got is c
    ix.put(entry("e"), None, 3)                   # use order is now a, d, c: evicts a
    assert set(ix.entries) == {c.id, d.id, ix.exact["e"]}
    consistent(ix)


def test_namespace_limit_is_per_namespace(ix):
    for i in range(3):
        ix.put(entry(f"a{i}", ns="r|key:a"), None, 2)
        ix.put(entry(f"b{i}", ns="r|key:b", owner="key:b"), None, 2)
    assert sorted(e.exact for e in ix.entries.values()) == ["a1", "a2", "b1", "b2"]
    assert ix.stats["evicted_lru"] == 2


def test_global_limit_evicts_the_least_recently_used_of_any_namespace():
    ix = CacheIndex("emb-1", DIM, max_total=3)
    a = ix.put(entry("a", ns="n1"), unit(1), 100)
    b = ix.put(entry("b", ns="n2"), unit(0, 1), 100)
    c = ix.put(entry("c", ns="n3"), unit(0, 0, 1), 100)
    ix.get_exact("a", NOW)
    ix.put(entry("d", ns="n4"), None, 100)
    assert set(ix.entries) == {a.id, c.id, ix.exact["d"]}
    assert b.id not in ix.entries and ix.index.ntotal == 2
    assert "n2" not in ix.ns_lru
    consistent(ix)


def test_put_with_the_same_exact_key_replaces(ix):
    old = ix.put(entry("q", answer=b"old"), E1, 100)
    new = ix.put(entry("q", answer=b"new"), unit(0, 1), 100)
    assert new.id != old.id
    assert ix.get_exact("q", NOW).answer == b"new"
    assert len(ix.entries) == 1 and ix.index.ntotal == 1
    # the old vector is gone from FAISS: searching near it finds the new entry's similarity only
    got, best = ix.search("s1", E1, 0.5, NOW)
    assert got is None and best == pytest.approx(0.0, abs=1e-5)
    assert ix.take_removed() == [old.id]
    consistent(ix)
    # replacing an entry with a vector by one without
    ix.put(entry("q", answer=b"newer"), None, 100)
    assert ix.index.ntotal == 0
    consistent(ix)


# --- remove / clear / rebuild -----------------------------------------------------------------------

def test_remove_is_idempotent_and_complete(ix):
    e = ix.put(entry("a"), E1, 100)
    ix.remove(e.id)
    ix.remove(e.id)
    ix.remove(12345)
    assert ix.entries == {} and ix.exact == {} and ix.scopes == {} and not ix.lru and ix.ns_lru == {}
    assert ix.index.ntotal == 0
    assert ix.take_removed() == [e.id]
    assert ix.take_removed() == []


def test_clear_by_owner_and_model(ix):
    ix.put(entry("a1", owner="key:a", model="m1"), unit(1), 100)
    ix.put(entry("a2", owner="key:a", model="m2"), unit(0, 1), 100)
    ix.put(entry("b1", owner="key:b", ns="r|key:b", model="m1"), unit(0, 0, 1), 100)
    ix.put(entry("s1", owner="shared:r", ns="r|shared:r", model="m2"), None, 100)
    assert ix.clear(owner="key:a", model="m2") == 1
    assert sorted(e.exact for e in ix.entries.values()) == ["a1", "b1", "s1"]
    assert ix.clear(model="m1") == 2
    assert [e.exact for e in ix.entries.values()] == ["s1"]
    assert ix.clear(owner="key:nobody") == 0
    assert ix.clear() == 1
    assert ix.entries == {} and ix.index.ntotal == 0
    assert len(ix.take_removed()) == 4
    consistent(ix)


def test_clear_by_owner_only(ix):
    ix.put(entry("a1"), unit(1), 100)
    ix.put(entry("a2"), unit(0, 1), 100)
    ix.put(entry("b1", owner="key:b", ns="r|key:b"), unit(0, 0, 1), 100)
    assert ix.clear(owner="key:a") == 2
    assert [e.exact for e in ix.entries.values()] == ["b1"] and ix.index.ntotal == 1
    consistent(ix)


def test_rebuild_drops_vectors_but_keeps_exact(ix):
    a = ix.put(entry("a"), E1, 100)
    ix.put(entry("b"), None, 100)
    assert ix.rebuild("emb-2", 4) == 1
    assert (ix.model_id, ix.dim, ix.index.ntotal) == ("emb-2", 4, 0)
    assert not a.has_vector
    assert ix.get_exact("a", NOW) is a and ix.get_exact("b", NOW) is not None
    assert ix.search("s1", np.array([1, 0, 0, 0], dtype=np.float32), 0.1, NOW) == (None, 0.0)
    # old entries can be removed after the rebuild (no stale remove_ids on the new index)
    ix.remove(a.id)
    # new answers get vectors of the new model
    n = ix.put(entry("c"), np.array([1, 0, 0, 0], dtype=np.float32), 100)
    assert n.has_vector and ix.index.ntotal == 1
    got, sim = ix.search("s1", np.array([1, 0, 0, 0], dtype=np.float32), 0.9, NOW)
    assert got is n
    # a vector of the old dimension is refused now
    assert not ix.put(entry("d"), E1, 100).has_vector
    consistent(ix)


def test_rebuild_to_no_model():
    ix = CacheIndex("emb-1", DIM)
    ix.put(entry("a"), E1, 100)
    assert ix.rebuild("", 0) == 1
    assert ix.index is None and ix.summary()["vectors"] == 0
    ix.clear()
    assert ix.entries == {}


def test_restoring_keeps_ids_and_moves_next_id(ix):
    e = entry("restored")
    e.id = 41
    ix.put(e, E1, 100)
    assert ix.put(entry("new"), None, 100).id == 42
    assert ix.index.reconstruct(41) is not None


# --- scale ----------------------------------------------------------------------------------------------

def test_search_in_a_small_scope_of_a_large_index():
    dim = 64
    rng = np.random.default_rng(7)
    ix = CacheIndex("emb", dim, max_total=20_000)
    vecs = rng.standard_normal((10_000, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i in range(10_000):
        ix.put(Entry(id=0, scope=f"s{i % 2500}", exact=f"e{i}", ns=f"n{i % 50}", owner="key:a", model="m",
                     question="", answer=b"x", created=NOW, expires=NOW + 60), vecs[i], 10_000)
    assert ix.index.ntotal == 10_000 and len(ix.scopes["s17"]) == 4
    # a query equal to a vector of another scope must not find it; its own scope's nearest wins
    target_scope_ids = sorted(ix.scopes["s17"])
    q = vecs[target_scope_ids[2] - 1] + 0.05 * rng.standard_normal(dim).astype(np.float32)
    q /= np.linalg.norm(q)
    got, sim = ix.search("s17", q, 0.5, NOW)
    assert got.id == target_scope_ids[2]
    assert got.scope == "s17"
    # an exact copy of a vector from another scope is not found in s17
    other = vecs[0]                         # entry id 1, scope s0
    got, best = ix.search("s17", other, 0.99, NOW)
    assert got is None and best < 0.99
