"""Fake OpenAI, Anthropic and Mistral upstreams on loopback, for tests: the providers' own wire shapes.

Usage::

    with FakeOpenAI() as oa, FakeAnthropic() as an, FakeMistral() as mi:   # each on 127.0.0.1:<free port>
        r = httpx.post(oa.url + "/chat/completions", headers={"Authorization": "Bearer sk-test-openai"},
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]})
        r.json()["choices"][0]["message"]["content"]       # "fake-openai: hi there"
        oa.requests[-1].json["model"]                      # "gpt-4o-mini"
        oa.script("gpt-4o-mini", {"status": 429, "times": 1})

Like `tests.helpers.fake_bedrock.FakeBedrock`, each is a `tests.helpers.fake_server.FakeServer` (see
there for the lifecycle, ``.port``/``.url``, recording and scripting basics): a stdlib
``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive (one thread per connection), a context
manager, ``.url``, ``.requests`` and ``.script(model, behavior)`` / ``.clear_scripts()``. The three
fakes share `_FakeProvider`; only the routes, the auth, the validation and the JSON shapes differ. Shapes follow the providers' API
references (OpenAI Chat Completions, Anthropic Messages, Mistral chat completions); error bodies and
messages are the ones the real services send.

Servers
-------
``FakeOpenAI(api_keys=("sk-test-openai",), models=None, azure=False, *, cached_tokens=0)``
    ``.url`` = ``http://127.0.0.1:PORT/v1`` (the ``base_url`` an OpenAI client is given).
    ``POST /v1/chat/completions`` with ``Authorization: Bearer KEY``; answers report ``service_tier``
    (the one asked for when it is ``priority`` or ``flex``, else ``default``). ``POST /v1/embeddings``
    (``{"model", "input": str | [str], "dimensions"?}``) answers the documented list
    ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage":
    {"prompt_tokens", "total_tokens"}}``: deterministic vectors (1536 floats, or ``dimensions``),
    tokens counted as words. Other paths: 404 ``Invalid URL (POST /v1/x)``; other methods 405.
    ``azure=True``: ``.url`` = ``http://127.0.0.1:PORT`` (the Azure endpoint) and the route is
    ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` with an ``api-key: KEY``
    header. The deployment name (percent-decoded) is the model. No ``api-version`` query, or any
    other path: 404 ``{"error": {"code": "404", "message": "Resource not found"}}`` as Azure. Missing
    or wrong key: 401 ``{"error": {"code": "401", "message": "Access denied due to ..."}}``. A
    deployment outside ``models``: 404 ``DeploymentNotFound``. Answers carry Azure's
    ``prompt_filter_results`` / ``content_filter_results``, and a stream starts with Azure's
    prompt-filter chunk (``"choices": []``, empty id/model/object).
``FakeAnthropic(api_keys=("sk-ant-test",), models=None, *, cached_tokens=0, cache_creation_tokens=0, cache_min_tokens=0)``
    ``.url`` = ``http://127.0.0.1:PORT``; ``POST /v1/messages`` (a query such as ``?beta=true`` is
    allowed) with ``x-api-key: KEY`` and ``anthropic-version`` (missing: 400 ``anthropic-version:
    header is required``; its value is not checked). ``anthropic-beta`` is only recorded (it is in
    the recorded headers). Responses carry a ``request-id`` header and errors a ``request_id``.
    Also ``POST /v1/messages/count_tokens`` (same headers; fields ``ANTHROPIC_COUNT_FIELDS``, no
    ``max_tokens``; same message validation) -> ``{"input_tokens": N}``, N counted as below (no
    cached tokens). Scripts apply to it like to any request.
``FakeMistral(api_keys=("mistral-test-key",), models=None, *, cached_tokens=0)``
    ``.url`` = ``http://127.0.0.1:PORT/v1``; ``POST /v1/chat/completions`` with Bearer auth, and
    ``POST /v1/embeddings`` as OpenAI's (1024 floats, or ``output_dimension``; the answer adds ``id``
    and ``usage.completion_tokens: 0``).

``models``: when a set is given, other model names get the provider's "unknown model" error:
OpenAI 404 ``model_not_found`` ("The model `x` does not exist or you do not have access to it."),
Anthropic 404 ``not_found_error`` ("model: x"), Azure 404 ``DeploymentNotFound``; Mistral answers
400 ``{"object": "error", "message": "Invalid model: x", "type": "invalid_model", "code": "1500"}``
as the real API does (Mistral has no 404 for an unknown model).

Every request is recorded in ``fake.requests`` as a `RecordedRequest`: method, path (raw, query
included), headers (lower-case names), body bytes, ``json`` (parsed body or None), ``model`` (from the
body, or the Azure deployment), client_address (same tuple = same keep-alive connection),
received_at, plus request_id and the ``status`` answered (None: no answer, e.g. ``reset``).

Order of checks: route (404/405), key (401), Anthropic version header (400), script, JSON body,
validation (400/422), model list (404/400), answer.

Authentication errors
---------------------
* OpenAI: no/odd Authorization -> 401 "You didn't provide an API key. ..." (code null); unknown key ->
  401 ``invalid_api_key`` "Incorrect API key provided: sk-te*****enai. You can find your API key at
  https://platform.openai.com/account/api-keys." The key is echoed masked as OpenAI does it, see
  `mask_key` (a prefix, one ``*`` per hidden character, the last 4), so a test can check the gateway
  never passes it on.
* Anthropic: 401 ``authentication_error`` "x-api-key header is required" / "invalid x-api-key".
* Mistral: 401 ``{"detail": "Unauthorized"}``.

Validation (what the real APIs reject)
--------------------------------------
OpenAI (400, ``{"error": {"message", "type": "invalid_request_error", "param", "code"}}``):
unknown top-level fields ("Unrecognized request argument supplied: x"; see ``OPENAI_FIELDS``), no
``model`` (not in Azure mode), no or empty ``messages`` (``empty_array``), an unknown role, a
``tool`` message that does not answer the directly preceding assistant ``tool_calls`` ("messages with
role 'tool' must be a response to a preceeding message with 'tool_calls'", or "'tool_call_id' of 'x'
not found in 'tool_calls' of previous message"), assistant ``tool_calls`` left without tool answers
("An assistant message with 'tool_calls' must be followed by tool messages responding to each
'tool_call_id'. ..."), ``tool_calls[].function.arguments`` that is not a string (``invalid_type``),
both ``max_tokens`` and ``max_completion_tokens`` (``invalid_parameter_combination``),
``stream_options`` without ``stream``, ``tool_calls[].id`` over 40 chars, a tool function name over
64 chars or not ``^[a-zA-Z0-9_-]+$``, a tool description over 1024 chars (``string_above_max_length``),
a body that is not JSON.

Anthropic (400 ``invalid_request_error``): missing ``model`` / ``messages`` / ``max_tokens`` ("x: Field
required"), unknown top-level fields ("x: Extra inputs are not permitted"; see ``ANTHROPIC_FIELDS``),
``max_tokens`` < 1, empty ``messages``, a role other than user/assistant, a message without
``content``, a first message that is not
``user`` ('messages: first message must use the "user" role'), ``tool_result`` blocks whose
``tool_use_id`` is not a ``tool_use`` of the previous (assistant) turn ("messages.N.content.M:
unexpected `tool_use_id` found in `tool_result` blocks: ..."), ``tool_use`` blocks not answered in the
next turn ("messages.N: `tool_use` ids were found without `tool_result` blocks immediately after:
..."). Consecutive messages with the same role are ALLOWED: the current API reference says they are
combined into one turn, so the fake merges them into one turn for the tool checks and only insists
on the first message being ``user``.

Mistral: unknown top-level fields (``MISTRAL_FIELDS``, e.g. ``user`` is not a Mistral field), any key
inside ``stream_options`` (loc ``["body", "stream_options", "include_usage"]``, as the real API answers
OpenAI clients), unknown keys inside a message (e.g. ``reasoning_content`` replayed on an assistant
message, ``name`` on a user message), an unknown role, missing ``model``/``messages``, empty
``messages``: 422 ``{"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc":
["body", "x"], "msg": "Extra inputs are not permitted", "input": ...}]}, "type":
"invalid_request_error", "param": null, "code": null}`` (note: ``message`` is an object there).
Tool call ids (assistant ``tool_calls[].id`` and tool messages' ``tool_call_id``) must match
``^[a-zA-Z0-9]{9}$``: 400 ``{"object": "error", "message": "Tool call id was x but must be a-z, A-Z,
0-9, with a length of 9.", "type": "invalid_function_call", "param": null, "code": "3280"}``.

Default answers (deterministic)
-------------------------------
* Text: ``"fake-<provider>: <text of the last user message>"`` (its texts joined by a space; list
  content contributes its text parts). When the last message is a tool result (OpenAI/Mistral role
  ``tool`` messages at the end, Anthropic ``tool_result`` blocks in the last message), the text is
  ``"fake-<provider>: tool said <result text>"``.
* Tokens are whitespace-separated words, at least 1 (`tokens`). Input: every text of the system
  prompt and the messages (tool results included, tool definitions not). Output: the answer text,
  plus the reasoning text and ``json.dumps(arguments)`` of each tool call when present.
* ``cached_tokens`` (constructor, or per script) models a cached prompt prefix on top of those
  words: OpenAI ``prompt_tokens`` = words + cached and ``prompt_tokens_details.cached_tokens`` =
  cached; Anthropic ``input_tokens`` = words and ``cache_read_input_tokens`` = cached
  (``cache_creation_input_tokens`` = ``cache_creation_tokens``). Mistral reports no cache.
* Anthropic prompt caching: blocks (tools, system, message content) with ``cache_control`` are
  breakpoints; more than 4 is a 400 ("A maximum of 4 blocks with cache_control may be provided.
  Found N."). Without a scripted ``cached_tokens``, the prefix up to the last breakpoint (its
  words, at least ``cache_min_tokens``: shorter prefixes are silently not cached) is written to
  the fake's cache the first time (``cache_creation_input_tokens``) and read on later requests
  with the same prefix (``cache_read_input_tokens``); ``input_tokens`` is the rest. The words up to
  the last breakpoint with ``"ttl": "1h"`` are written with a 1-hour TTL: ``usage.cache_creation``
  splits the writes into ``ephemeral_5m_input_tokens`` and ``ephemeral_1h_input_tokens``.
* A ``stop`` / ``stop_sequences`` entry found in the answer text cuts it there (the sequence
  excluded) and drops any tool call: Anthropic ``stop_reason`` "stop_sequence" + ``stop_sequence``;
  OpenAI/Mistral ``finish_reason`` "stop". Then a ``max_tokens`` / ``max_completion_tokens`` smaller
  than the answer's word count truncates it to that many words and drops tool calls: "length" /
  "max_tokens".
* Tool calls: when the request has tools, ``tool_choice`` is not "none", and either tool_choice
  forces one (OpenAI "required" or ``{"type": "function", "function": {"name"}}``; Mistral "any",
  "required" or a function; Anthropic ``{"type": "any"}`` / ``{"type": "tool", "name"}``) or the last
  user text contains a tool's name (case-insensitive; not checked when the last message is a tool
  result): the answer calls that tool (the named one, else the one whose name appears, else the
  first) once, with arguments built from its JSON schema (strings: the last user text; enum: its
  first value; integer/number 1; boolean true; array one item; object recursively) and the text
  ``"fake-<provider>: calling <name>"`` before it; finish "tool_calls" / stop "tool_use". Tool call
  ids: OpenAI ``call_`` + 24 alnum, Anthropic ``toolu_01`` + 22 alnum, Mistral 9 alnum.
* Non-stream bodies: OpenAI ``chat.completion`` (id, object, created, model, choices[{index,
  message{role, content, refusal: null, annotations: [], tool_calls?, reasoning_content?},
  logprobs: null, finish_reason}], usage{prompt_tokens, completion_tokens, total_tokens,
  prompt_tokens_details{cached_tokens, audio_tokens}, completion_tokens_details{reasoning_tokens,
  ...}}, service_tier, system_fingerprint); Anthropic ``message`` (id, type, role, model,
  content[thinking?, text, tool_use...], stop_reason, stop_sequence, usage{input_tokens,
  cache_creation_input_tokens, cache_read_input_tokens, output_tokens, service_tier}); Mistral
  ``chat.completion`` (message{role, content, tool_calls (null or a list with index)}, usage{
  prompt_tokens, completion_tokens, total_tokens}). ``model`` echoes the requested model (Azure: the
  deployment). Always one choice (``n`` is accepted and ignored).
* Streams (``"stream": true``): ``content-type: text/event-stream``, chunked, one chunk write and
  flush per SSE event.
  OpenAI: ``chat.completion.chunk`` objects; the first delta ``{"role": "assistant", "content": "",
  "refusal": null}``;
  reasoning as ``reasoning_content`` deltas; one content delta per word; each tool call as a
  fragment with index, id, type and name (``arguments: ""``) then its ``arguments`` split across
  at least 2 more chunks; a chunk with ``delta: {}`` and ``finish_reason``; only with
  ``stream_options.include_usage``: ``"usage": null`` on every chunk and a final chunk with
  ``"choices": []`` and the usage; then ``data: [DONE]``.
  Mistral: the same chunk shape, but each tool call comes whole (id, name, full arguments) and all
  calls in one chunk (``{"split_args": True}``: OpenAI-like fragments instead); the finish_reason
  chunk carries ``usage``; then ``data: [DONE]``.
  Anthropic: ``event: <type>`` + ``data: <json>`` for message_start (usage with input and cache
  tokens, output_tokens 1), ping, per block content_block_start / _delta / _stop (thinking_delta +
  signature_delta, text_delta per word, input_json_delta: ``""`` then the JSON in at least 2
  pieces), message_delta (stop_reason, stop_sequence, usage.output_tokens), message_stop.

Scripting
---------
``fake.script(model, behavior)`` sets how requests for that model (``"*"``: any model, used when no
exact script matches) are answered until ``fake.script(model, None)`` / ``fake.clear_scripts()`` /
``fake.reset()``. A behavior is a dict; keys combine:

* ``times``: apply to the next N matching requests only.
* ``api_key``: apply only to requests presenting this key (Bearer, ``x-api-key`` or Azure's
  ``api-key``); requests with another key are answered as if the script were not there (the
  ``"*"`` script, else normally) and do not count down ``times``. For per-key failures:
  ``fake.script("*", {"status": 429, "quota": True, "api_key": "sk-spent"})``. (A key that is not
  in ``api_keys`` at all is always refused with 401.)
* ``delay``: seconds to sleep before answering (whatever the answer).
* ``reset``: close the connection with a TCP RST, no response at all.
* ``status`` (not 200): an error in the provider's shape with its default message for that status
  (OpenAI 429 ``rate_limit_exceeded``; 500 ``server_error``; Anthropic 429 ``rate_limit_error``,
  529 ``overloaded_error``, 500 ``api_error``; Mistral 429 ``{"message": "Requests rate limit
  exceeded"}``, ...). 429s (not quota) carry ``retry-after: 1``. ``message``, ``type``, ``code``
  override those fields; ``{"status": 429, "quota": True}``: OpenAI ``insufficient_quota`` (no
  retry-after) / Anthropic "Your credit balance is too low ...".
* ``body``: with ``status``, replaces the error body (dict -> JSON, str/bytes -> raw); alone, the
  200 JSON body of a non-stream request.
* ``headers``: extra response headers on whatever is answered (they override the fake's).
* ``garbage``: a body that is not JSON (True: an HTML 502 page; or your str/bytes), status 200 unless
  ``status`` is given, content-type text/html; on a stream request (status 200): chunked bytes that
  are not SSE, with content-type text/event-stream.
* ``text``: the answer text instead of the echo (or of the "calling x" preamble of a tool call).
* ``reasoning``: reasoning text: ``reasoning_content`` (OpenAI-compatible, OpenAI and Mistral) /
  a thinking block with a signature (Anthropic), before the text.
* ``tool_calls: N``: call the chosen tool (the forced or name-matched one, else the first) N times
  in one turn, with distinct ids (0: no call); needs tools in the request and tool_choice not "none".
* ``split_args``: Mistral streams split tool arguments like OpenAI.
* ``cached_tokens``: this request's cached tokens (see above).
* ``events``: stream requests: send exactly these events instead (nothing is added, not even
  ``[DONE]``): a dict is sent as ``data: <json>`` (Anthropic: ``event: <its "type">`` too), a str as
  ``data: <str>``, bytes verbatim.
* ``event_delay``: seconds to sleep between stream events.
* ``then``: how a stream ends after ``stream_events`` events (default: every event before the
  terminal ones, i.e. before OpenAI/Mistral's finish_reason chunk, Anthropic's message_delta; with
  ``events``: all of them). ``"cut"``: send half of the next event and drop the connection (no
  terminating chunk: the client sees an incomplete chunked body). ``"error"``: send the provider's
  in-stream error event (OpenAI ``data: {"error": {...server_error}}``, Anthropic ``event: error``
  with ``overloaded_error`` (``error_type`` overrides), Mistral ``data: {"object": "error", ...}``;
  ``message`` overrides) and end the body cleanly. ``"end"``: end the body cleanly there (no
  finish_reason, no ``[DONE]``, no message_stop). ``stream_events`` without ``then`` means "end".
  On a non-stream answer ``"cut"`` sends half of the body (Content-Length announced) and drops
  the connection.
"""
from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import socket
import string
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.helpers.fake_server import FakeServer, _Handler, texts as _texts, tokens

__all__ = ["FakeOpenAI", "FakeAnthropic", "FakeMistral", "RecordedRequest", "mask_key", "parse_sse",
           "tokens", "OPENAI_FIELDS", "ANTHROPIC_FIELDS", "ANTHROPIC_COUNT_FIELDS", "MISTRAL_FIELDS", "GARBAGE"]

_ALNUM = string.ascii_letters + string.digits
GARBAGE = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad "
           b"Gateway</h1></center>\r\n<hr><center>fake-provider garbage, not JSON</center>\r\n</body>\r\n"
           b"</html>\r\n")

# Documented request body fields (anything else is refused like the real API refuses it).
OPENAI_FIELDS = frozenset({
    "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
    "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
    "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed",
    "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
    "top_logprobs", "top_p", "user", "verbosity", "web_search_options"})
ANTHROPIC_FIELDS = frozenset({
    "model", "messages", "max_tokens", "container", "context_management", "mcp_servers", "metadata",
    "output_config", "service_tier", "stop_sequences", "stream", "system", "temperature", "thinking",
    "tool_choice", "tools", "top_k", "top_p"})
ANTHROPIC_COUNT_FIELDS = frozenset({
    "model", "messages", "context_management", "mcp_servers", "output_config", "system", "thinking",
    "tool_choice", "tools"})
MISTRAL_FIELDS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
    "metadata", "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n",
    "prediction", "parallel_tool_calls", "prompt_mode", "safe_prompt", "stream_options"})
_MISTRAL_MESSAGE_KEYS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix"},
    "tool": {"role", "content", "tool_call_id", "name"},
}
_OPENAI_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_MISTRAL_TOOL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
_AZURE_ROUTE = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")
_SAFE = {"filtered": False, "severity": "safe"}
_AZURE_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}


def _rand(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(random.choices(alphabet, k=n))


def mask_key(key: str) -> str:
    """How OpenAI echoes a refused key: a prefix, one ``*`` per hidden character, the last 4.
    ``mask_key("sk-test-openai") == "sk-te*****enai"``; short keys (< 9 chars) are all stars."""
    if len(key) < 9:
        return "*" * len(key)
    shown = min(8, (len(key) - 4) // 2)
    return key[:shown] + "*" * (len(key) - shown - 4) + key[-4:]


def parse_sse(raw: bytes | str) -> list[tuple[str | None, str]]:
    """``[(event name or None, data), ...]`` for a complete SSE body (comments skipped)."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    out = []
    for block in re.split(r"\r?\n\r?\n", text):
        event, data = None, []
        for line in re.split(r"\r?\n", block):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if event is not None or data:
            out.append((event, "\n".join(data)))
    return out


def _pieces(text: str) -> list[str]:
    """Stream pieces (one per word, leading whitespace attached) that concatenate back to `text`."""
    parts = re.findall(r"\s*\S+", text)
    if not parts:
        return [text] if text else []
    rest = text[len("".join(parts)):]
    parts[-1] += rest
    return parts


def _split(s: str) -> list[str]:
    """`s` in 2-3 non-empty pieces (for tool arguments split across stream chunks)."""
    if len(s) < 2:
        return [s, ""] if s else ["", ""]
    k = max(1, len(s) // 3)
    return [p for p in (s[:k], s[k:2 * k], s[2 * k:]) if p]


def _truncate(text: str, n: int) -> str:
    m = re.match(r"\s*(?:\S+\s*){%d}" % n, text)
    return text[:m.end()].rstrip() if m else text


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string"


def _example(schema: Any, text: str, depth: int = 0) -> Any:
    """A value fitting the JSON schema: strings `text`, numbers 1, booleans true, enum its first."""
    if not isinstance(schema, dict) or depth > 6:
        return text
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _example(schema[key][0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _example(v, text, depth + 1) for k, v in props.items()} if isinstance(props, dict) else {}
    if kind == "array":
        return [_example(schema.get("items") or {"type": "string"}, text, depth + 1)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str                    # raw request target (query included)
    headers: dict[str, str]      # lower-case names
    body: bytes
    json: Any                    # parsed body, None when absent or not JSON
    model: str | None            # body "model" (Azure: the deployment), None when absent
    client_address: tuple = ()   # (ip, port) of the client's connection: same tuple = keep-alive reuse
    received_at: float = field(default_factory=time.time)
    request_id: str = ""         # the request id the fake answered with (x-request-id / request-id / ...)
    status: int | None = None    # status the fake answered with; None = no answer (reset) or not yet


class _Reply(Exception):
    """Raised while handling: answer `status` with an error. `doc` is sent verbatim when given, else
    the provider's error document is built from message/type/code/param."""

    def __init__(self, status: int, message: str = "", type: str | None = None, code: Any = None,
                 param: Any = None, *, doc: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.doc = doc
        self.headers = dict(headers or {})


@dataclass
class _Digest:
    """What the answer depends on, extracted from a provider request."""

    all_texts: list[str]
    user_text: str
    tool_result: str | None          # text of the trailing tool result(s), None when not ending so
    tools: list[tuple[str, Any]]     # (name, JSON schema)
    forced: Any                      # None: auto; False: none; True: any tool; str: that tool
    max_tokens: Any
    stops: list[str]
    stream: bool
    cache_prefix: str | None = None  # Anthropic: the prompt prefix up to the last cache_control breakpoint
    cache_prefix_tokens: int = 0     # its words
    cache_prefix_1h_tokens: int = 0  # the words up to the last breakpoint with "ttl": "1h"


@dataclass
class _Answer:
    text: str
    reasoning: str
    calls: list[tuple[str, dict]]    # (tool name, arguments)
    stop: str                        # "end" | "length" | "stop_sequence" | "tool"
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0   # of cache_write_tokens, those written with a 1-hour TTL


class _FakeProvider(FakeServer):
    """Shared machinery on top of `FakeServer`: answers, SSE writing. Subclasses give the routes,
    auth, validation and shapes. See the module docstring."""

    provider = ""                  # "openai" | "anthropic" | "mistral": the "fake-<provider>:" prefix
    server_header = "fake"
    request_id_header = "x-request-id"
    _poll_interval = 0.01

    def __init__(self, api_keys=(), models=None, *, cached_tokens: int = 0):
        super().__init__()
        self.api_keys = (api_keys,) if isinstance(api_keys, str) else tuple(api_keys)
        self.models = set(models) if models is not None else None
        self.cached_tokens = int(cached_tokens)
        self.requests: list[RecordedRequest] = []

    @property
    def _name(self) -> str:
        return f"fake-{self.provider}"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        return f"http://127.0.0.1:{self.port}"

    def requests_for(self, model: str | None = None) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if model is None or r.model == model]

    # --- subclass hooks ------------------------------------------------------------------------
    def _new_request_id(self) -> str:
        return f"req_{uuid.uuid4().hex}"

    def _route(self, method: str, path: str, query: dict) -> str | None:
        """Raise _Reply for a bad route; return the model named by the path, if any."""
        raise NotImplementedError

    def _authenticate(self, headers: dict[str, str]) -> None:
        raise NotImplementedError

    @staticmethod
    def _presented_key(headers: dict[str, str]) -> str:
        """The API key the request presents (``x-api-key``, Azure's ``api-key``, or Bearer)."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return headers.get("x-api-key") or headers.get("api-key") or (
            token.strip() if scheme.lower() == "bearer" else "")

    def _error_doc(self, r: _Reply, request_id: str) -> Any:
        raise NotImplementedError

    def _default_error(self, status: int, model: str | None, quota: bool) -> _Reply:
        raise NotImplementedError

    def _parse(self, body: bytes) -> dict:
        raise NotImplementedError

    def _validate(self, req: dict) -> None:
        raise NotImplementedError

    def _check_model(self, req: dict, model: str | None) -> None:
        raise NotImplementedError

    def _digest(self, req: dict) -> _Digest:
        raise NotImplementedError

    def _response(self, req: dict, a: _Answer, model: str | None) -> dict:
        raise NotImplementedError

    def _stream(self, req: dict, a: _Answer, model: str | None, behavior: dict) -> tuple[list, int]:
        """(events, index of the first terminal event)."""
        raise NotImplementedError

    def _stream_error(self, behavior: dict) -> Any:
        raise NotImplementedError

    def _encode(self, event: Any) -> bytes:
        """An SSE event: dict -> ``data: <json>``, str -> ``data: <str>``, bytes verbatim."""
        if isinstance(event, bytes):
            return event
        payload = event if isinstance(event, str) else json.dumps(event)
        return f"data: {payload}\n\n".encode()

    def _extra_headers(self, rec: RecordedRequest) -> dict[str, str]:
        return {}

    # --- request handling ----------------------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        headers = self._headers_of(h)
        body = self._read_body(h, headers)
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        rec = RecordedRequest(h.command, h.path, headers, body, doc, None, tuple(h.client_address),
                              request_id=self._new_request_id())
        split = urlsplit(h.path)
        route_error: _Reply | None = None
        path_model = None
        try:
            path_model = self._route(h.command, split.path, parse_qs(split.query, keep_blank_values=True))
        except _Reply as r:
            route_error = r
        if path_model is not None:
            rec.model = path_model
        elif isinstance(doc, dict) and isinstance(doc.get("model"), str):
            rec.model = doc["model"]
        self._record(rec)

        extra: dict[str, str] = {}
        try:
            if route_error is not None:
                raise route_error
            self._authenticate(headers)
            behavior = self._take_script(rec.model, self._presented_key(headers))
            extra = {str(k).lower(): str(v) for k, v in (behavior.get("headers") or {}).items()}
            if behavior.get("reset"):
                return self._reset(h)
            if self._pause(h, behavior.get("delay")):
                return
            self._answer(h, rec, body, doc, behavior, extra)
        except _Reply as r:
            self._send_error(h, rec, r, extra)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _answer(self, h, rec, body, doc, behavior, extra):
        streaming = isinstance(doc, dict) and doc.get("stream") is True
        status = int(behavior.get("status", 200))
        if behavior.get("garbage"):
            g = behavior["garbage"]
            data = g.encode() if isinstance(g, str) else g if isinstance(g, bytes) else GARBAGE
            if streaming and status == 200:
                half = len(data) // 2
                return self._send_stream(h, rec, [data[:half], data[half:]], None, {}, extra, b"")
            return self._send(h, rec, status, data, "text/html; charset=utf-8", extra, behavior)
        if status != 200:
            return self._send_error(h, rec, self._scripted_error(status, behavior, rec.model), extra, behavior)
        if "body" in behavior and not streaming:
            return self._send_doc(h, rec, 200, behavior["body"], extra, behavior)
        if urlsplit(rec.path).path.endswith("/embeddings"):
            return self._send_doc(h, rec, 200, self._embeddings(doc), extra, behavior)
        return self._respond(h, rec, body, behavior, extra)

    EMBED_DIMENSIONS = 1536         # the default vector length (text-embedding-3-small); mistral-embed: 1024
    DIMENSIONS_FIELD = "dimensions"

    def _embeddings(self, req) -> dict:
        """POST /v1/embeddings: {"model", "input": str | [str], dimensions?} -> the documented list
        of {"object": "embedding", "index", "embedding"} with usage; tokens are words (as in chat)."""
        if not isinstance(req, dict) or not isinstance(req.get("model"), str):
            raise _Reply(400, "model: required", "invalid_request_error", param="model")
        inp = req.get("input")
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _Reply(400, "input: a string or a non-empty list of strings is required",
                         "invalid_request_error", param="input")
        dims = req.get(self.DIMENSIONS_FIELD) or self.EMBED_DIMENSIONS
        data = []
        for i, t in enumerate(texts):
            seed = hashlib.sha256(t.encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [round((seed[j % 32] - 128) / 128, 6) for j in range(dims)]})
        n = sum(max(1, len(t.split())) for t in texts)
        return self._embeddings_doc(data, req["model"], n)

    def _embeddings_doc(self, data: list, model: str, tokens: int) -> dict:
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _respond(self, h, rec, body, behavior, extra):
        """The unscripted answer to a chat request."""
        req = self._parse(body)
        self._validate(req)
        self._check_model(req, rec.model)
        d = self._digest(req)
        a = self._compose(d, behavior)
        model = rec.model
        if d.stream:
            if behavior.get("events") is not None:
                events, terminal = list(behavior["events"]), len(behavior["events"])
            else:
                events, terminal = self._stream(req, a, model, behavior)
            return self._send_stream(h, rec, [self._encode(e) for e in events], terminal, behavior, extra,
                                     self._encode(self._stream_error(behavior)))
        return self._send(h, rec, 200, json.dumps(self._response(req, a, model)).encode(),
                          "application/json", extra, behavior)

    def _scripted_error(self, status: int, behavior: dict, model: str | None) -> _Reply:
        r = self._default_error(status, model, bool(behavior.get("quota")))
        if any(k in behavior for k in ("message", "type", "code")):
            r = _Reply(r.status, behavior.get("message", r.message), behavior.get("type", r.type),
                       behavior.get("code", r.code), r.param, headers=r.headers)
        if "body" in behavior:
            r.doc = behavior["body"]
        return r

    def _compose(self, d: _Digest, behavior: dict) -> _Answer:
        p = self.provider
        base = (f"fake-{p}: tool said {d.tool_result}" if d.tool_result is not None
                else f"fake-{p}: {d.user_text}")
        calls: list[tuple[str, dict]] = []
        names = [n for n, _ in d.tools]
        if names and d.forced is not False:
            matched = None
            if d.tool_result is None:
                matched = next((n for n in names if n and n.lower() in d.user_text.lower()), None)
            if isinstance(d.forced, str):
                chosen = d.forced
            elif d.forced is True:
                chosen = matched or names[0]
            else:
                chosen = matched
            count = 1 if chosen else 0
            if "tool_calls" in behavior:
                count, chosen = int(behavior["tool_calls"]), chosen or names[0]
            if count > 0:
                schema = dict(d.tools).get(chosen) or {}
                args = _example(schema, d.user_text)
                args = args if isinstance(args, dict) else {}
                calls = [(chosen, args) for _ in range(count)]
                base = f"fake-{p}: calling {chosen}"
        text = str(behavior.get("text", base))
        reasoning = str(behavior.get("reasoning") or "")
        stop, stop_sequence = ("tool" if calls else "end"), None
        hits = [(text.find(s), s) for s in d.stops if isinstance(s, str) and s and s in text]
        if hits:
            pos, stop_sequence = min(hits)
            text, stop, calls = text[:pos], "stop_sequence", []
        if isinstance(d.max_tokens, int) and not isinstance(d.max_tokens, bool) \
                and 0 < d.max_tokens < len(text.split()):
            text, stop, stop_sequence, calls = _truncate(text, d.max_tokens), "length", None, []
        out = " ".join([reasoning, text] + [json.dumps(args) for _, args in calls])
        return _Answer(text=text, reasoning=reasoning, calls=calls, stop=stop, stop_sequence=stop_sequence,
                       input_tokens=tokens(" ".join(d.all_texts)), output_tokens=tokens(out),
                       cached_tokens=int(behavior.get("cached_tokens", self.cached_tokens)),
                       reasoning_tokens=len(reasoning.split()))

    # --- writing ---------------------------------------------------------------------------------
    def _headers(self, rec: RecordedRequest, content_type: str, extra: dict) -> dict[str, str]:
        out = {"content-type": content_type, self.request_id_header: rec.request_id}
        out.update(self._extra_headers(rec))
        out.update(extra)
        return out

    def _send_error(self, h, rec, r: _Reply, extra, behavior=None):
        doc = r.doc if r.doc is not None else self._error_doc(r, rec.request_id)
        self._send_doc(h, rec, r.status, doc, {**r.headers, **extra}, behavior or {})

    def _send_doc(self, h, rec, status, doc, extra, behavior):
        data = doc if isinstance(doc, bytes) else doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
        self._send(h, rec, status, data, "application/json", extra, behavior)

    def _send(self, h, rec, status, body: bytes, content_type, extra, behavior):
        headers = self._headers(rec, content_type, extra)
        headers.pop("transfer-encoding", None)
        headers["content-length"] = str(len(body))
        rec.status = status
        self._start_response(h, status, headers.items())
        self._write_body(h, body, behavior)

    def _send_stream(self, h, rec, events: list[bytes], terminal, behavior, extra, error_event: bytes):
        headers = self._headers(rec, "text/event-stream; charset=utf-8", {"cache-control": "no-cache", **extra})
        headers.pop("content-length", None)
        headers["transfer-encoding"] = "chunked"
        rec.status = 200
        self._start_response(h, 200, headers.items())
        then = behavior.get("then", "end" if "stream_events" in behavior else None)
        if "stream_events" in behavior:
            limit = int(behavior["stream_events"])
        elif then and terminal is not None:
            limit = terminal
        else:
            limit = len(events)
        self._write_events(h, events, limit, behavior, then, last=error_event if then == "error" else b"",
                           spare=b'data: {"cut": "here, mid-event"}\n\n')

    @staticmethod
    def _reset(h: _Handler) -> None:
        """Close the connection with an RST and no response at all."""
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        h.close_connection = True
        try:
            h.connection.close()   # the real close (RST) happens when the handler's files are closed
        except OSError:
            pass


# ==================================================================================================
# OpenAI (and Azure OpenAI)
# ==================================================================================================

class FakeOpenAI(_FakeProvider):
    """A fake OpenAI Chat Completions API (or Azure OpenAI with ``azure=True``). See the module docstring."""

    provider = "openai"
    server_header = "fake-openai"
    request_id_header = "x-request-id"

    def __init__(self, api_keys=("sk-test-openai",), models=None, azure: bool = False, *,
                 cached_tokens: int = 0):
        super().__init__(api_keys, models, cached_tokens=cached_tokens)
        self.azure = bool(azure)
        self.url_path = "" if self.azure else "/v1"

    def _new_request_id(self) -> str:
        return f"req_{uuid.uuid4().hex}"

    def _extra_headers(self, rec):
        out = {"openai-processing-ms": str(max(1, int((time.time() - rec.received_at) * 1000)))}
        if not self.azure:
            out["openai-version"] = "2020-10-01"
        else:
            out["apim-request-id"] = str(uuid.uuid4())
        return out

    def _route(self, method, path, query):
        if self.azure:
            m = _AZURE_ROUTE.match(path)
            if not m or not query.get("api-version") or not query["api-version"][0]:
                raise _Reply(404, "Resource not found", doc={"error": {"code": "404", "message": "Resource not found"}})
            if method != "POST":
                raise _Reply(405, "Method not allowed", doc={"error": {
                    "code": "405", "message": f"The HTTP method '{method}' is not supported."}})
            return unquote(m.group("deployment"))
        if path not in ("/v1/chat/completions", "/v1/embeddings"):
            raise _Reply(404, f"Invalid URL ({method} {path})", "invalid_request_error")
        if method != "POST":
            raise _Reply(405, f"Invalid URL ({method} {path})", "invalid_request_error")
        return None

    def _authenticate(self, headers):
        if self.azure:
            key = headers.get("api-key")
            if not key:
                raise _Reply(401, "missing key", doc={"error": {"code": "401", "message": (
                    "Access denied due to missing subscription key. Make sure to include subscription "
                    "key when making requests to an API.")}})
            if key not in self.api_keys:
                raise _Reply(401, "invalid key", doc={"error": {"code": "401", "message": (
                    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                    "provide a valid key for an active subscription and use a correct regional API "
                    "endpoint for your resource.")}})
            return
        auth = headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _Reply(401, (
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
                "(with blank username) if you're accessing the API from your browser and are prompted for "
                "a username and password. You can obtain an API key from "
                "https://platform.openai.com/account/api-keys."), "invalid_request_error")
        if key not in self.api_keys:
            raise _Reply(401, self._incorrect_key(key), "invalid_request_error", "invalid_api_key")

    @staticmethod
    def _incorrect_key(key: str) -> str:
        return (f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.")

    def _error_doc(self, r, request_id):
        return {"error": {"message": r.message, "type": r.type or "invalid_request_error",
                          "param": r.param, "code": r.code}}

    def _default_error(self, status, model, quota):
        model = model or "gpt-4o"
        if status == 429 and quota:
            return _Reply(429, (
                "You exceeded your current quota, please check your plan and billing details. For more "
                "information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors."),
                "insufficient_quota", "insufficient_quota")
        if status == 429:
            return _Reply(429, (
                f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
                "Limit 3, Used 3, Requested 1. Please try again in 1s. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."),
                "requests", "rate_limit_exceeded", headers={"retry-after": "1"})
        table = {
            400: ("invalid_request_error", None, "fake-openai scripted 400: bad request"),
            401: ("invalid_request_error", "invalid_api_key",
                  self._incorrect_key(self.api_keys[0] if self.api_keys else "sk-none-configured")),
            403: ("request_forbidden", "unsupported_country_region_territory",
                  "Country, region, or territory not supported"),
            404: ("invalid_request_error", "model_not_found",
                  f"The model `{model}` does not exist or you do not have access to it."),
            500: ("server_error", None,
                  "The server had an error while processing your request. Sorry about that!"),
            502: ("server_error", None, "Bad gateway."),
            503: ("server_error", None, "The engine is currently overloaded, please try again later."),
            504: ("server_error", None, "Gateway timeout."),
        }
        kind, code, message = table.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                 None, f"fake-openai scripted {status}"))
        return _Reply(status, message, kind, code)

    def _parse(self, body):
        try:
            req = json.loads(body) if body else None
        except ValueError:
            req = None
        if not isinstance(req, dict):
            raise _Reply(400, (
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
                "us through our help center at help.openai.com.)"), "invalid_request_error")
        return req

    def _validate(self, req):
        unknown = [k for k in req if k not in OPENAI_FIELDS]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise _Reply(400, f"Unrecognized request argument{plural} supplied: {', '.join(unknown)}",
                         "invalid_request_error")
        if not self.azure and not isinstance(req.get("model"), str):
            raise _Reply(400, "you must provide a model parameter", "invalid_request_error")
        if "messages" not in req:
            raise _Reply(400, "Missing required parameter: 'messages'.", "invalid_request_error",
                         "missing_required_parameter", "messages")
        msgs = req["messages"]
        if not isinstance(msgs, list):
            raise _Reply(400, f"Invalid type for 'messages': expected an array of objects, but got "
                         f"{_json_kind(msgs)} instead.", "invalid_request_error", "invalid_type", "messages")
        if not msgs:
            raise _Reply(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                         "but got an empty array instead.", "invalid_request_error", "empty_array", "messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise _Reply(400, f"Invalid type for 'messages[{i}]': expected an object, but got "
                             f"{_json_kind(m)} instead.", "invalid_request_error", "invalid_type",
                             f"messages[{i}]")
            if m.get("role") not in _OPENAI_ROLES:
                raise _Reply(400, f"Invalid value: '{m.get('role')}'. Supported values are: 'system', "
                             "'assistant', 'user', 'function', 'tool', and 'developer'.",
                             "invalid_request_error", "invalid_value", f"messages[{i}].role")
            if m["role"] == "assistant":
                for j, tc in enumerate(m.get("tool_calls") or []):
                    tid = tc.get("id") if isinstance(tc, dict) else None
                    if isinstance(tid, str) and len(tid) > 40:
                        _too_long(f"messages[{i}].tool_calls[{j}].id", 40, tid)
                    args = (tc.get("function") or {}).get("arguments") if isinstance(tc, dict) else None
                    if not isinstance(args, str):
                        where = f"messages[{i}].tool_calls[{j}].function.arguments"
                        raise _Reply(400, f"Invalid type for '{where}': expected a string, but got "
                                     f"{_json_kind(args)} instead.", "invalid_request_error",
                                     "invalid_type", where)
        for k, t in enumerate(req.get("tools") or []):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict):
                continue
            name, desc = fn.get("name"), fn.get("description")
            if isinstance(name, str) and len(name) > 64:
                _too_long(f"tools[{k}].function.name", 64, name)
            if isinstance(name, str) and not re.fullmatch(r"[a-zA-Z0-9_-]+", name):
                raise _Reply(400, f"Invalid 'tools[{k}].function.name': string does not match pattern. Expected "
                             "a string that matches the pattern '^[a-zA-Z0-9_-]+$'.", "invalid_request_error",
                             "invalid_value", f"tools[{k}].function.name")
            if isinstance(desc, str) and len(desc) > 1024:
                _too_long(f"tools[{k}].function.description", 1024, desc)
        if req.get("max_tokens") is not None and req.get("max_completion_tokens") is not None:
            raise _Reply(400, "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not "
                         "supported.", "invalid_request_error", "invalid_parameter_combination", "max_tokens")
        if req.get("stream_options") is not None and not req.get("stream"):
            raise _Reply(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                         "invalid_request_error", None, "stream_options")
        self._check_tool_sequence(msgs)

    @staticmethod
    def _check_tool_sequence(msgs: list) -> None:
        pending: dict[str, None] = {}   # ids of the last assistant tool_calls not yet answered
        pending_at = -1
        prev_non_tool = None            # the last non-tool message
        for i, m in enumerate(msgs):
            if m["role"] == "tool":
                calls = (prev_non_tool or {}).get("tool_calls") if (prev_non_tool or {}).get("role") == "assistant" else None
                if not calls:
                    raise _Reply(400, "Invalid parameter: messages with role 'tool' must be a response to a "
                                 "preceeding message with 'tool_calls'.", "invalid_request_error", None,
                                 f"messages.[{i}].role")
                ids = [tc.get("id") for tc in calls if isinstance(tc, dict)]
                if m.get("tool_call_id") not in ids:
                    raise _Reply(400, f"Invalid parameter: 'tool_call_id' of '{m.get('tool_call_id')}' not "
                                 "found in 'tool_calls' of previous message.", "invalid_request_error", None,
                                 f"messages.[{i}].tool_call_id")
                pending.pop(m.get("tool_call_id"), None)
                continue
            if pending:
                raise _Reply(400, "An assistant message with 'tool_calls' must be followed by tool messages "
                             "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                             f"response messages: {', '.join(pending)}", "invalid_request_error", None,
                             f"messages.[{pending_at}].role")
            prev_non_tool = m
            if m["role"] == "assistant" and m.get("tool_calls"):
                pending = {tc.get("id"): None for tc in m["tool_calls"] if isinstance(tc, dict)}
                pending_at = i
        # assistant tool_calls as the very last message are allowed (nothing follows yet)

    def _check_model(self, req, model):
        if self.models is None or model in self.models:
            return
        if self.azure:
            raise _Reply(404, "DeploymentNotFound", doc={"error": {"code": "DeploymentNotFound", "message": (
                "The API deployment for this resource does not exist. If you created the deployment "
                "within the last 5 minutes, please wait a moment and try again.")}})
        raise _Reply(404, f"The model `{model}` does not exist or you do not have access to it.",
                     "invalid_request_error", "model_not_found")

    def _digest(self, req):
        return _chat_digest(req, tool_choice_map={"none": False, "required": True})

    def _usage(self, a: _Answer) -> dict:
        prompt = a.input_tokens + a.cached_tokens
        return {"prompt_tokens": prompt, "completion_tokens": a.output_tokens,
                "total_tokens": prompt + a.output_tokens,
                "prompt_tokens_details": {"cached_tokens": a.cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": a.reasoning_tokens, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    @staticmethod
    def _finish(a: _Answer) -> str:
        return {"length": "length", "tool": "tool_calls"}.get(a.stop, "stop")

    def _response(self, req, a, model):
        message: dict[str, Any] = {"role": "assistant", "content": a.text, "refusal": None, "annotations": []}
        if a.reasoning:
            message["reasoning_content"] = a.reasoning
        if a.calls:
            message["tool_calls"] = [
                {"id": "call_" + _rand(24), "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args, separators=(",", ":"))}}
                for name, args in a.calls]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self._finish(a)}
        out = {"id": "chatcmpl-" + _rand(29), "object": "chat.completion", "created": int(time.time()),
               "model": model, "choices": [choice], "usage": self._usage(a),
               "service_tier": req.get("service_tier") if req.get("service_tier") in ("priority", "flex") else "default",
               "system_fingerprint": "fp_fake0001"}
        if self.azure:
            choice["content_filter_results"] = _AZURE_FILTERS
            out["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _AZURE_FILTERS}]
        return out

    def _stream(self, req, a, model, behavior):
        base = {"id": "chatcmpl-" + _rand(29), "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model,
                "service_tier": req.get("service_tier") if req.get("service_tier") in ("priority", "flex") else "default",
                "system_fingerprint": "fp_fake0001"}
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish=None):
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            if self.azure:
                choice["content_filter_results"] = {} if finish else _AZURE_FILTERS
            c = dict(base, choices=[choice])
            if include_usage:
                c["usage"] = None
            return c

        events: list[Any] = []
        if self.azure:
            events.append({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                           "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _AZURE_FILTERS}]})
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        events += [chunk({"reasoning_content": p}) for p in _pieces(a.reasoning)]
        events += [chunk({"content": p}) for p in _pieces(a.text)]
        for i, (name, args) in enumerate(a.calls):
            events.append(chunk({"tool_calls": [{"index": i, "id": "call_" + _rand(24), "type": "function",
                                                 "function": {"name": name, "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
                       for frag in _split(json.dumps(args, separators=(",", ":")))]
        terminal = len(events)
        events.append(chunk({}, self._finish(a)))
        if include_usage:
            events.append(dict(base, choices=[], usage=self._usage(a)))
        events.append("[DONE]")
        return events, terminal

    def _stream_error(self, behavior):
        return {"error": {"message": behavior.get("message", "The server had an error while processing your "
                                                  "request. Sorry about that!"),
                          "type": "server_error", "param": None, "code": None}}


def _too_long(where: str, limit: int, value: str) -> None:
    raise _Reply(400, f"Invalid '{where}': string too long. Expected a string with maximum length {limit}, "
                 f"but got a string with length {len(value)} instead.", "invalid_request_error",
                 "string_above_max_length", where)


def _chat_digest(req: dict, tool_choice_map: dict) -> _Digest:
    """_Digest of an OpenAI-style chat request (OpenAI and Mistral)."""
    msgs = [m for m in req.get("messages") or [] if isinstance(m, dict)]
    all_texts: list[str] = []
    user_text = ""
    for m in msgs:
        t = _texts(m.get("content"))
        all_texts += t
        if m.get("role") == "user":
            user_text = " ".join(t)
    trailing: list[str] = []
    for m in reversed(msgs):
        if m.get("role") != "tool":
            break
        trailing = _texts(m.get("content")) + trailing
    tool_result = " ".join(trailing) if msgs and msgs[-1].get("role") == "tool" else None
    tools = []
    for t in req.get("tools") or []:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            tools.append((fn["name"], fn.get("parameters") or {}))
    tc = req.get("tool_choice")
    if isinstance(tc, str):
        forced = tool_choice_map.get(tc)
    elif isinstance(tc, dict) and isinstance((tc.get("function") or {}).get("name"), str):
        forced = tc["function"]["name"]
    else:
        forced = None
    stop = req.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)] if isinstance(stop, list) else []
    max_tokens = req.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = req.get("max_tokens")
    return _Digest(all_texts, user_text, tool_result, tools, forced, max_tokens, stops, req.get("stream") is True)


# ==================================================================================================
# Anthropic
# ==================================================================================================

class FakeAnthropic(_FakeProvider):
    """A fake Anthropic Messages API. See the module docstring."""

    provider = "anthropic"
    server_header = "fake-anthropic"
    request_id_header = "request-id"

    def __init__(self, api_keys=("sk-ant-test",), models=None, *, cached_tokens: int = 0,
                 cache_creation_tokens: int = 0, cache_min_tokens: int = 0):
        super().__init__(api_keys, models, cached_tokens=cached_tokens)
        self.cache_creation_tokens = int(cache_creation_tokens)
        self.cache_min_tokens = int(cache_min_tokens)
        self._prompt_cache: set[str] = set()
        self._prompt_cache_lock = threading.Lock()

    @staticmethod
    def _prompt_prefix(req: dict) -> tuple[str | None, int, int]:
        """(key, words, 1-hour words) of the prompt prefix that ends at the last cache_control
        breakpoint, in Anthropic's order (tools, system, messages), and the words up to the last
        breakpoint with "ttl": "1h" (written with a 1-hour TTL); (None, 0, 0) without a breakpoint."""
        items: list[tuple[Any, str]] = []            # (block without cache_control, its text)
        last = last_1h = -1

        def add(block, text):
            nonlocal last, last_1h
            if isinstance(block, dict) and "cache_control" in block:
                last = len(items)
                cc = block["cache_control"]
                if isinstance(cc, dict) and cc.get("ttl") == "1h":
                    last_1h = len(items)
                block = {k: v for k, v in block.items() if k != "cache_control"}
            items.append((block, text))

        for t in req.get("tools") or []:
            add(t, "")
        system = req.get("system")
        for b in (system if isinstance(system, list) else [{"type": "text", "text": system}] if system else []):
            add(b, " ".join(_texts([b])))
        for m in req.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            for b in (content if isinstance(content, list) else [{"type": "text", "text": content}]):
                text = " ".join(_texts([b]) + (_texts(b.get("content")) if isinstance(b, dict)
                                               and b.get("type") == "tool_result" else []))
                add(b, text)
        if last < 0:
            return None, 0, 0
        prefix = items[:last + 1]
        words = sum(len(t.split()) for _, t in prefix)
        words_1h = sum(len(t.split()) for _, t in items[:last_1h + 1])
        return json.dumps([b for b, _ in prefix], sort_keys=True), words, words_1h

    def _new_request_id(self) -> str:
        return "req_011C" + _rand(20)

    def _route(self, method, path, query):
        if path not in ("/v1/messages", "/v1/messages/count_tokens"):
            raise _Reply(404, "Not Found", "not_found_error")
        if method != "POST":
            raise _Reply(405, "Method Not Allowed", "invalid_request_error")
        return None

    def _authenticate(self, headers):
        key = headers.get("x-api-key")
        if not key:
            raise _Reply(401, "x-api-key header is required", "authentication_error")
        if key not in self.api_keys:
            raise _Reply(401, "invalid x-api-key", "authentication_error")
        if not headers.get("anthropic-version"):
            raise _Reply(400, "anthropic-version: header is required", "invalid_request_error")

    def _error_doc(self, r, request_id):
        return {"type": "error", "error": {"type": r.type or "invalid_request_error", "message": r.message},
                "request_id": request_id}

    def _default_error(self, status, model, quota):
        if quota:
            return _Reply(status, "Your credit balance is too low to access the Anthropic API. Please go to "
                          "Plans & Billing to upgrade or purchase credits.", "invalid_request_error")
        table = {
            400: ("invalid_request_error", "fake-anthropic scripted 400: bad request"),
            401: ("authentication_error", "invalid x-api-key"),
            403: ("permission_error", "Your API key does not have permission to use the specified resource."),
            404: ("not_found_error", f"model: {model}"),
            413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
            429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit "
                  "(https://docs.anthropic.com/en/api/rate-limits); see the response headers for current "
                  "usage. Please reduce the prompt length or the maximum tokens requested, or try again later."),
            500: ("api_error", "Internal server error"),
            504: ("timeout_error", "Request timed out"),
            529: ("overloaded_error", "Overloaded"),
        }
        kind, message = table.get(status, ("api_error" if status >= 500 else "invalid_request_error",
                                           f"fake-anthropic scripted {status}"))
        return _Reply(status, message, kind, headers={"retry-after": "1"} if status == 429 else None)

    def _parse(self, body):
        try:
            req = json.loads(body) if body else None
        except ValueError as e:
            raise _Reply(400, f"There was an issue with the JSON body of your request: {e}",
                         "invalid_request_error") from None
        if not isinstance(req, dict):
            raise _Reply(400, "The request body is not a valid JSON object.", "invalid_request_error")
        return req

    def _respond(self, h, rec, body, behavior, extra):
        if urlsplit(rec.path).path != "/v1/messages/count_tokens":
            return super()._respond(h, rec, body, behavior, extra)
        req = self._parse(body)
        self._validate(req, ANTHROPIC_COUNT_FIELDS, ("model", "messages"))
        self._check_model(req, rec.model)
        n = tokens(" ".join(self._digest(req).all_texts))
        return self._send_doc(h, rec, 200, {"input_tokens": n}, extra, behavior)

    def _validate(self, req, fields=ANTHROPIC_FIELDS, required=("model", "messages", "max_tokens")):
        for key in required:
            if key not in req:
                raise _Reply(400, f"{key}: Field required", "invalid_request_error")
        for key in req:
            if key not in fields:
                raise _Reply(400, f"{key}: Extra inputs are not permitted", "invalid_request_error")
        if "max_tokens" in required:
            mt = req["max_tokens"]
            if not isinstance(mt, int) or isinstance(mt, bool):
                raise _Reply(400, "max_tokens: Input should be a valid integer", "invalid_request_error")
            if mt < 1:
                raise _Reply(400, "max_tokens: Input should be greater than or equal to 1", "invalid_request_error")
        msgs = req["messages"]
        if not isinstance(msgs, list):
            raise _Reply(400, "messages: Input should be a valid list", "invalid_request_error")
        if not msgs:
            raise _Reply(400, "messages: at least one message is required", "invalid_request_error")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise _Reply(400, f"messages.{i}.role: Input should be 'user' or 'assistant'",
                             "invalid_request_error")
            if "content" not in m:
                raise _Reply(400, f"messages.{i}.content: Field required", "invalid_request_error")
        if msgs[0]["role"] != "user":
            raise _Reply(400, 'messages: first message must use the "user" role', "invalid_request_error")
        system = req.get("system")
        marked = [b for b in [*(req.get("tools") or []), *(system if isinstance(system, list) else []),
                              *(b for m in msgs if isinstance(m.get("content"), list) for b in m["content"])]
                  if isinstance(b, dict) and "cache_control" in b]
        if len(marked) > 4:
            raise _Reply(400, f"A maximum of 4 blocks with cache_control may be provided. Found {len(marked)}.",
                         "invalid_request_error")
        # Consecutive same-role messages form one turn (the API combines them).
        turns: list[tuple[str, list[int]]] = []
        for i, m in enumerate(msgs):
            if turns and turns[-1][0] == m["role"]:
                turns[-1][1].append(i)
            else:
                turns.append((m["role"], [i]))

        def blocks(i):
            c = msgs[i]["content"]
            return [b for b in c if isinstance(b, dict)] if isinstance(c, list) else []

        for t, (role, idxs) in enumerate(turns):
            if role == "user":
                prev_ids = set()
                if t > 0:
                    prev_ids = {b.get("id") for i in turns[t - 1][1] for b in blocks(i) if b.get("type") == "tool_use"}
                for i in idxs:
                    for j, b in enumerate(msgs[i]["content"] if isinstance(msgs[i]["content"], list) else []):
                        if isinstance(b, dict) and b.get("type") == "tool_result" and b.get("tool_use_id") not in prev_ids:
                            raise _Reply(400, f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                                         f"`tool_result` blocks: {b.get('tool_use_id')}. Each `tool_result` "
                                         "block must have a corresponding `tool_use` block in the previous "
                                         "message.", "invalid_request_error")
            elif t + 1 < len(turns):
                used = [b.get("id") for i in idxs for b in blocks(i) if b.get("type") == "tool_use"]
                answered = {b.get("tool_use_id") for i in turns[t + 1][1] for b in blocks(i)
                            if b.get("type") == "tool_result"}
                missing = [u for u in used if u not in answered]
                if missing:
                    raise _Reply(400, f"messages.{idxs[-1]}: `tool_use` ids were found without `tool_result` "
                                 f"blocks immediately after: {', '.join(map(str, missing))}. Each `tool_use` "
                                 "block must have a corresponding `tool_result` block in the next message.",
                                 "invalid_request_error")

    def _check_model(self, req, model):
        if self.models is not None and model not in self.models:
            raise _Reply(404, f"model: {model}", "not_found_error")

    def _digest(self, req):
        all_texts = _texts(req.get("system"))
        user_text = ""
        msgs = req["messages"]
        for m in msgs:
            content = m.get("content")
            own = _texts(content)
            all_texts += own
            if isinstance(content, list):
                for b in content:
                    if isinstance(b, dict) and b.get("type") == "tool_result":
                        all_texts += _texts(b.get("content"))
            if m["role"] == "user" and own:
                user_text = " ".join(own)
        tool_result = None
        last = msgs[-1]
        if last["role"] == "user" and isinstance(last["content"], list):
            results = [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results:
                tool_result = " ".join(t for b in results for t in _texts(b.get("content")))
        tools = [(t["name"], t.get("input_schema") or {}) for t in req.get("tools") or []
                 if isinstance(t, dict) and isinstance(t.get("name"), str)]
        tc = req.get("tool_choice") if isinstance(req.get("tool_choice"), dict) else {}
        forced = {"any": True, "none": False}.get(tc.get("type"))
        if tc.get("type") == "tool" and isinstance(tc.get("name"), str):
            forced = tc["name"]
        stops = [s for s in req.get("stop_sequences") or [] if isinstance(s, str)]
        prefix, prefix_tokens, prefix_1h_tokens = self._prompt_prefix(req)
        return _Digest(all_texts, user_text, tool_result, tools, forced, req.get("max_tokens"), stops,
                       req.get("stream") is True, prefix, prefix_tokens, prefix_1h_tokens)

    def _compose(self, d: _Digest, behavior: dict) -> _Answer:
        """Anthropic's prompt cache: a prefix ending at a cache_control breakpoint, at least
        cache_min_tokens long, is written on first sight (cache_creation_input_tokens) and read
        afterwards (cache_read_input_tokens); input_tokens counts only what follows it. A shorter
        prefix is silently not cached, as the real API does."""
        a = super()._compose(d, behavior)
        if d.cache_prefix is None or "cached_tokens" in behavior or d.cache_prefix_tokens < self.cache_min_tokens:
            return a
        n = min(d.cache_prefix_tokens, a.input_tokens)
        with self._prompt_cache_lock:
            hit = d.cache_prefix in self._prompt_cache
            self._prompt_cache.add(d.cache_prefix)
        a.input_tokens -= n
        if hit:
            a.cached_tokens += n
        else:
            a.cache_write_tokens += n
            a.cache_write_1h_tokens += min(d.cache_prefix_1h_tokens, n)
        return a

    def _usage(self, a: _Answer, output_tokens: int) -> dict:
        written = self.cache_creation_tokens + a.cache_write_tokens
        return {"input_tokens": a.input_tokens,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": a.cached_tokens,
                "cache_creation": {"ephemeral_5m_input_tokens": written - a.cache_write_1h_tokens,
                                   "ephemeral_1h_input_tokens": a.cache_write_1h_tokens},
                "output_tokens": output_tokens, "service_tier": "standard"}

    @staticmethod
    def _stop_reason(a: _Answer) -> str:
        return {"length": "max_tokens", "tool": "tool_use", "stop_sequence": "stop_sequence"}.get(a.stop, "end_turn")

    @staticmethod
    def _signature() -> str:
        return base64.b64encode(random.randbytes(48)).decode()

    def _response(self, req, a, model):
        content: list[dict] = []
        if a.reasoning:
            content.append({"type": "thinking", "thinking": a.reasoning, "signature": self._signature()})
        if a.text or not a.calls:
            content.append({"type": "text", "text": a.text})
        content += [{"type": "tool_use", "id": "toolu_01" + _rand(22), "name": name, "input": args}
                    for name, args in a.calls]
        return {"id": "msg_01" + _rand(22), "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": self._stop_reason(a), "stop_sequence": a.stop_sequence,
                "usage": self._usage(a, a.output_tokens)}

    def _stream(self, req, a, model, behavior):
        events: list[dict] = [
            {"type": "message_start", "message": {
                "id": "msg_01" + _rand(22), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None, "usage": self._usage(a, 1)}},
            {"type": "ping"}]
        index = 0

        def block(start: dict, deltas: list[dict]) -> None:
            nonlocal index
            events.append({"type": "content_block_start", "index": index, "content_block": start})
            events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
            events.append({"type": "content_block_stop", "index": index})
            index += 1

        if a.reasoning:
            block({"type": "thinking", "thinking": "", "signature": ""},
                  [{"type": "thinking_delta", "thinking": p} for p in _pieces(a.reasoning)]
                  + [{"type": "signature_delta", "signature": self._signature()}])
        if a.text or not a.calls:
            block({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in _pieces(a.text)])
        for name, args in a.calls:
            block({"type": "tool_use", "id": "toolu_01" + _rand(22), "name": name, "input": {}},
                  [{"type": "input_json_delta", "partial_json": ""}]
                  + [{"type": "input_json_delta", "partial_json": p} for p in _split(json.dumps(args))])
        terminal = len(events)
        events.append({"type": "message_delta",
                       "delta": {"stop_reason": self._stop_reason(a), "stop_sequence": a.stop_sequence},
                       "usage": {"output_tokens": a.output_tokens}})
        events.append({"type": "message_stop"})
        return events, terminal

    def _stream_error(self, behavior):
        return {"type": "error", "error": {"type": behavior.get("error_type", "overloaded_error"),
                                           "message": behavior.get("message", "Overloaded")}}

    def _encode(self, event):
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
        return super()._encode(event)


# ==================================================================================================
# Mistral
# ==================================================================================================

class FakeMistral(_FakeProvider):
    """A fake Mistral chat completions API. See the module docstring."""

    provider = "mistral"
    server_header = "fake-mistral"
    request_id_header = "mistral-correlation-id"
    url_path = "/v1"

    def __init__(self, api_keys=("mistral-test-key",), models=None, *, cached_tokens: int = 0):
        super().__init__(api_keys, models, cached_tokens=cached_tokens)

    EMBED_DIMENSIONS = 1024         # mistral-embed
    DIMENSIONS_FIELD = "output_dimension"

    def _new_request_id(self) -> str:
        return str(uuid.uuid4())

    def _embeddings_doc(self, data: list, model: str, tokens: int) -> dict:
        return {"id": uuid.uuid4().hex, "object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}}

    def _route(self, method, path, query):
        if path not in ("/v1/chat/completions", "/v1/embeddings"):
            raise _Reply(404, "Not Found", doc={"detail": "Not Found"})
        if method != "POST":
            raise _Reply(405, "Method Not Allowed", doc={"detail": "Method Not Allowed"})
        return None

    def _authenticate(self, headers):
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key.strip() not in self.api_keys:
            raise _Reply(401, "Unauthorized", doc={"detail": "Unauthorized"})

    def _error_doc(self, r, request_id):
        return {"object": "error", "message": r.message, "type": r.type or "invalid_request_error",
                "param": r.param, "code": r.code}

    def _default_error(self, status, model, quota):
        if status == 429:
            return _Reply(429, "Requests rate limit exceeded", "rate_limited",
                          doc={"message": "Requests rate limit exceeded"}, headers={"retry-after": "1"})
        if status == 401:
            return _Reply(401, "Unauthorized", doc={"detail": "Unauthorized"})
        table = {
            400: ("invalid_request_error", None, "fake-mistral scripted 400: bad request"),
            404: ("invalid_request_error", None, "Not Found"),
            422: ("invalid_request_error", None, "fake-mistral scripted 422: unprocessable"),
            500: ("internal_server_error", None, "Internal server error"),
            503: ("service_unavailable", None, "Service unavailable"),
        }
        kind, code, message = table.get(status, ("internal_server_error" if status >= 500 else
                                                 "invalid_request_error", None, f"fake-mistral scripted {status}"))
        return _Reply(status, message, kind, code)

    @staticmethod
    def _unprocessable(details: list[dict]) -> _Reply:
        return _Reply(422, details[0]["msg"], doc={"object": "error", "message": {"detail": details},
                                                   "type": "invalid_request_error", "param": None, "code": None})

    def _parse(self, body):
        try:
            req = json.loads(body) if body else None
        except ValueError as e:
            raise self._unprocessable([{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                                        "input": {}, "ctx": {"error": str(e)}}]) from None
        if not isinstance(req, dict):
            raise self._unprocessable([{"type": "model_attributes_type", "loc": ["body"],
                                        "msg": "Input should be a valid dictionary or object to extract fields from",
                                        "input": req}])
        return req

    def _validate(self, req):
        details = [{"type": "missing", "loc": ["body", k], "msg": "Field required", "input": req}
                   for k in ("model", "messages") if k not in req]
        details += [{"type": "extra_forbidden", "loc": ["body", k], "msg": "Extra inputs are not permitted",
                     "input": v} for k, v in req.items() if k not in MISTRAL_FIELDS]
        if isinstance(req.get("stream_options"), dict):   # known field, but include_usage & co are refused
            details += [{"type": "extra_forbidden", "loc": ["body", "stream_options", k],
                         "msg": "Extra inputs are not permitted", "input": v} for k, v in req["stream_options"].items()]
        msgs = req.get("messages")
        if isinstance(msgs, list):
            if not msgs:
                details.append({"type": "too_short", "loc": ["body", "messages"],
                                "msg": "List should have at least 1 item after validation, not 0", "input": [],
                                "ctx": {"field_type": "List", "min_length": 1, "actual_length": 0}})
            for i, m in enumerate(msgs):
                role = m.get("role") if isinstance(m, dict) else None
                if role not in _MISTRAL_MESSAGE_KEYS:
                    details.append({"type": "union_tag_invalid", "loc": ["body", "messages", i],
                                    "msg": f"Input tag '{role}' found using 'role' does not match any of the "
                                           "expected tags: 'system', 'user', 'assistant', 'tool'", "input": m})
                    continue
                details += [{"type": "extra_forbidden", "loc": ["body", "messages", i, role, k],
                             "msg": "Extra inputs are not permitted", "input": v}
                            for k, v in m.items() if k not in _MISTRAL_MESSAGE_KEYS[role]]
        elif "messages" in req:
            details.append({"type": "list_type", "loc": ["body", "messages"], "msg": "Input should be a valid list",
                            "input": msgs})
        if details:
            raise self._unprocessable(details)
        for m in msgs:
            ids = []
            if m["role"] == "assistant":
                ids = [tc.get("id") for tc in m.get("tool_calls") or [] if isinstance(tc, dict)]
            elif m["role"] == "tool":
                ids = [m.get("tool_call_id")]
            for tid in ids:
                if not isinstance(tid, str) or not _MISTRAL_TOOL_ID.match(tid):
                    raise _Reply(400, f"Tool call id was {tid} but must be a-z, A-Z, 0-9, with a length of 9.",
                                 "invalid_function_call", "3280")

    def _check_model(self, req, model):
        if self.models is not None and model not in self.models:
            raise _Reply(400, f"Invalid model: {model}", "invalid_model", "1500")

    def _digest(self, req):
        return _chat_digest(req, tool_choice_map={"none": False, "any": True, "required": True})

    @staticmethod
    def _usage(a: _Answer) -> dict:
        return {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens,
                "total_tokens": a.input_tokens + a.output_tokens}

    @staticmethod
    def _finish(a: _Answer) -> str:
        return {"length": "length", "tool": "tool_calls"}.get(a.stop, "stop")

    def _tool_calls(self, a: _Answer) -> list[dict]:
        return [{"id": _rand(9), "type": "function", "function": {"name": name, "arguments": json.dumps(args)},
                 "index": i} for i, (name, args) in enumerate(a.calls)]

    def _response(self, req, a, model):
        message: dict[str, Any] = {"role": "assistant", "content": a.text,
                                   "tool_calls": self._tool_calls(a) or None}
        if a.reasoning:
            message["reasoning_content"] = a.reasoning
        return {"id": uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": self._finish(a)}],
                "usage": self._usage(a)}

    def _stream(self, req, a, model, behavior):
        base = {"id": uuid.uuid4().hex, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}

        def chunk(delta, finish=None):
            return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])

        events: list[Any] = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"reasoning_content": p}) for p in _pieces(a.reasoning)]
        events += [chunk({"content": p}) for p in _pieces(a.text)]
        calls = self._tool_calls(a)
        if calls and behavior.get("split_args"):
            for c in calls:
                events.append(chunk({"tool_calls": [{"id": c["id"], "type": "function", "index": c["index"],
                                                     "function": {"name": c["function"]["name"], "arguments": ""}}]}))
                events += [chunk({"tool_calls": [{"index": c["index"], "function": {"arguments": frag}}]})
                           for frag in _split(c["function"]["arguments"])]
        elif calls:
            events.append(chunk({"content": "", "tool_calls": calls}))
        terminal = len(events)
        final = chunk({"content": ""}, self._finish(a))
        final["usage"] = self._usage(a)
        events += [final, "[DONE]"]
        return events, terminal

    def _stream_error(self, behavior):
        return {"object": "error", "message": behavior.get("message", "Internal server error"),
                "type": "internal_server_error", "param": None, "code": None}
