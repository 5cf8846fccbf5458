"""Cache keys: what makes two requests "the same question in the same context". Pure.

A request is split into its **context** and its **question**:

- the question is the text of the last user message (what the semantic layer embeds);
- the context is everything else: the operation, the modelId, the system prompt, every earlier
  turn, the last message's non-text blocks (images, documents, tool results), the tools and
  toolChoice, the inference parameters and any model-specific fields, plus the scope owner (the
  virtual key, unless the route shares its cache).

`scope_key()` hashes the context: a cached answer is only ever served to a request with the same
scope key, so a paraphrase can only hit an answer given in an identical context, and one virtual
key never sees another's answers. `exact_key()` hashes scope and normalised question together:
the exact layer. Both are sha256 over a canonical JSON form (sorted keys, blobs by their own
sha256), so they are the same in every process and after a restart (Python's `hash()` is salted
per process, which is how Bifrost-style in-process hashing loses its cache on restart).

The canonical form of a request is its fields by name; a content block's is the Converse-shaped
object the canonical model held before its blocks were typed (`{"image": {"format", "bytes"}}` ...,
`_FORMS`), and a tool choice's `ToolChoice.to_dict()`. Changing either changes every key: that is
a new VERSION, since stored entries would otherwise never be found again
(tests/unit/test_cache_keys.py pins the keys of parsed requests).
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata

import msgspec

from finops.shared.model import (ChatRequest, DocumentBlock, ImageBlock, JsonBlock, ReasoningBlock,
                                 RedactedReasoningBlock, TextBlock, ToolChoice, ToolResultBlock, ToolUseBlock)

VERSION = "1"          # bump when the canonical form changes: old entries then simply miss
_WS = re.compile(r"\s+")
_dumps = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


def _document(d: DocumentBlock) -> dict:
    doc = {"format": d.format, "name": d.name}
    if d.data is not None:
        doc["bytes"] = d.data
    else:
        doc["text"] = d.text
    if d.context is not None:
        doc["context"] = d.context
    return {"document": doc}


_FORMS = {
    TextBlock: lambda b: {"text": b.text},
    ImageBlock: lambda b: {"image": {"format": b.format, "bytes": b.data}},
    DocumentBlock: _document,
    ToolUseBlock: lambda b: {"toolUse": {"toolUseId": b.tool_use_id, "name": b.name, "input": b.input}},
    ToolResultBlock: lambda b: {"toolResult": {"toolUseId": b.tool_use_id, "content": b.content,
                                               "status": b.status}},
    JsonBlock: lambda b: {"json": b.value},
    ReasoningBlock: lambda b: {"reasoningContent": {"text": b.text, "signature": b.signature}},
    RedactedReasoningBlock: lambda b: {"reasoningContent": {"redactedContent": b.data}},
    ToolChoice: ToolChoice.to_dict,
}


# Fields that do not change what the answer says: a request's service tier (how fast, at what price).
_NOT_CONTEXT = frozenset({"service_tier"})


def _canonical(obj):
    form = _FORMS.get(type(obj))
    if form is not None:
        return _canonical(form(obj))
    if isinstance(obj, msgspec.Struct):
        return {name: _canonical(getattr(obj, name)) for name in obj.__struct_fields__ if name not in _NOT_CONTEXT}
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$sha256": hashlib.sha256(bytes(obj)).hexdigest()}
    return obj


def owner(key_id: str | None, shared_route: str | None = None) -> str:
    """Whose entries these are: "shared:<route>" on a route that shares its cache, else
    "key:<virtual key id>", or "anonymous" for requests without a key."""
    if shared_route is not None:
        return f"shared:{shared_route}"
    return f"key:{key_id}" if key_id else "anonymous"


def owner_named(name: str | None) -> str | None:
    """The owner an operator names (`finops cache clear --key`, `?key=`): a virtual key id,
    "anonymous", or "shared:ROUTE"; None stays None (every owner)."""
    if name is None or name == "anonymous" or name.startswith("shared:"):
        return name
    return owner(name)


def split(req: ChatRequest) -> tuple[dict, str]:
    """(context, question): the request without the last user message's text, and that text.
    When the last message is not the user's (an assistant prefill, say), the question is "" and
    the whole request is context."""
    ctx = _canonical(req)
    del ctx["cache_points"]         # prompt-cache checkpoints do not change the answer
    msgs = ctx["messages"]
    question = ""
    if msgs and msgs[-1]["role"] == "user":
        last = msgs[-1]
        question = "".join(b["text"] for b in last["content"] if "text" in b)
        last["content"] = [b for b in last["content"] if "text" not in b]
    return ctx, question


def normalise(text: str) -> str:
    """The question as the exact layer compares it: NFC, whitespace runs collapsed, trimmed.
    Case is kept (it matters in code and names)."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def scope_key(op: str, model_id: str, owner: str, context: dict) -> str:
    """Hash of the context a cached answer is valid in. `owner`: "key:<virtual key id>",
    "anonymous", or "shared:<route>" for a route that shares its cache across keys."""
    doc = {"v": VERSION, "op": op, "model": model_id, "owner": owner, "ctx": context}
    return hashlib.sha256(_dumps(doc).encode()).hexdigest()


def exact_key(scope: str, question: str) -> str:
    return hashlib.sha256(f"{scope}\x00{normalise(question)}".encode()).hexdigest()


def explicit_key(op: str, model_id: str, owner: str, key: str) -> str:
    """The exact key for a client-chosen `x-bf-cache-key`: the client says which requests are
    the same; the scope owner, operation and modelId still separate them."""
    doc = {"v": VERSION, "op": op, "model": model_id, "owner": owner, "explicit": key}
    return hashlib.sha256(_dumps(doc).encode()).hexdigest()
