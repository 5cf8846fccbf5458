"""Cost-allocation tags of a request: what the request log's `tags` column holds. Pure.

A request's tags, later sources winning on the same name:

1. the virtual key's `tags` (config `[[governance.keys]] tags = {team = "search"}`, or the admin
   API's `tags` field of a key);
2. the application inference profile's `tags` (config `[[inference_profiles]]`), when the modelId
   is one of those ARNs;
3. the request's own `requestMetadata`: the Converse body field (validated by the Converse parser:
   1 to 16 entries), or for InvokeModel the `X-Amzn-Bedrock-Request-Metadata` header (a JSON
   object of strings, as boto3's `requestMetadata` parameter sends it; a header that is not one is
   ignored here, and relayed unchanged to a Bedrock upstream, which judges it).

So request tags win over key (and profile) tags: a key tagged team=search whose request says
team=ads is logged team=ads. Names and values are strings; `dumps` writes them as a compact JSON object with
sorted names, "" when there are none.
"""
from __future__ import annotations

import json
from types import MappingProxyType
from typing import Mapping

from finops.shared.profiles import application_profile

HEADER = "x-amzn-bedrock-request-metadata"
CONVERSE_OPS = ("converse", "converse-stream")
_EMPTY: Mapping = MappingProxyType({})


def _strings(d) -> dict:
    return {k: v for k, v in d.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(d, dict) else {}


def request_tags(op: str, doc, headers: Mapping[str, str]) -> dict:
    """The tags a request itself carries (requestMetadata), {} when none."""
    if op in CONVERSE_OPS:
        return _strings(doc.get("requestMetadata")) if isinstance(doc, dict) else {}
    raw = headers.get(HEADER)
    if not raw:
        return {}
    try:
        return _strings(json.loads(raw))
    except ValueError:
        return {}


def merge(*sources) -> Mapping:
    out: dict = {}
    for s in sources:
        if s:
            out.update(s)
    return MappingProxyType(out) if out else _EMPTY


def tags_of(request, doc, cfg) -> Mapping:
    """A request's tags: key, then application profile, then requestMetadata (see the module doc)."""
    key = request.key
    profile = application_profile(cfg, request.model_id)
    return merge(getattr(key, "tags", None) if key is not None else None,
                 profile.tags if profile is not None else None, request_tags(request.op, doc, request.headers))


def dumps(tags: Mapping) -> str:
    return json.dumps(dict(sorted(tags.items())), separators=(",", ":"), ensure_ascii=False) if tags else ""
