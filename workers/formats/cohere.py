"""Cohere Command R / R+ (chat) and legacy Command / Command Light (text). Pure.

bedrock-protocol.md 6.6; embeddings are in embeddings.py.

Command R: `message` (required) is the newest user turn; `chat_history` holds earlier turns with
roles USER, CHATBOT, SYSTEM, TOOL; `preamble` is the system text; `p`/`k` are top_p/top_k. Tools
use `parameter_definitions`, converted here to a JSON schema. Cohere tool calls carry no ids, so a
tool result is matched by name to the latest unanswered call of the previous CHATBOT turn, and
gets a synthetic assistant toolUse (id "cohere_<n>") when there is none. Streams are Cohere chat
events: stream-start, text-generation..., tool-calls-generation, stream-end (with the whole
response).

Legacy Command: `prompt`, answer ``{"generations": [{"id", "text", "finish_reason"}], "id"}``, and
stream chunks in the same `generations` shape.
"""
from __future__ import annotations

import json

from finops.shared.model import (BlockDelta, BlockStart, ChatRequest, ChatResponse, JsonBlock, Message,
                                 TextBlock, Tool, ToolInputDelta, ToolResultBlock, ToolUseBlock, ToolUseStart, Usage,
                                 text_of)

from .bedrock.invoke import Family, PromptFamily, StreamEncoder, leftovers, take_sampling, take_tools
from .common import TOOL_NAME, fail, make_id, tool_uses, want_dict, want_enum, want_int, want_list, want_str

_ROLES = {"USER": "user", "CHATBOT": "assistant", "SYSTEM": "system", "TOOL": "tool"}
_TYPES = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
          "number": "number", "bool": "boolean", "boolean": "boolean"}


def _finish(stop: str) -> str:
    return "MAX_TOKENS" if stop == "max_tokens" else "COMPLETE"


def _json_type(t) -> str:
    t = str(t or "str").strip()
    low = t.lower()
    if low in _TYPES:
        return _TYPES[low]
    if low.startswith(("list", "array", "tuple")):
        return "array"
    if low.startswith(("dict", "object", "map")):
        return "object"
    return "string"


def _parse_tools(raw) -> list[Tool]:
    tools = []
    for i, t in enumerate(want_list(raw, "tools", what="tools")):
        p = f"tools[{i}]"
        want_dict(t, p)
        name = want_str(t.get("name"), f"{p}.name", max_len=64, pattern=TOOL_NAME)
        props, required = {}, []
        defs = want_dict(t.get("parameter_definitions") or {}, f"{p}.parameter_definitions")
        for pname, d in defs.items():
            want_dict(d, f"{p}.parameter_definitions.{pname}")
            props[pname] = {"type": _json_type(d.get("type"))}
            if d.get("description"):
                props[pname]["description"] = str(d["description"])
            if d.get("required"):
                required.append(pname)
        schema = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        tools.append(Tool(name, want_str(t.get("description", ""), f"{p}.description"), schema))
    return tools


def _tool_calls(raw, path: str, counter: list) -> list[ToolUseBlock]:
    out = []
    for i, c in enumerate(want_list(raw, path, what="tool calls")):
        want_dict(c, f"{path}[{i}]")
        counter[0] += 1
        out.append(ToolUseBlock(f"cohere_{counter[0]}", want_str(c.get("name"), f"{path}[{i}].name", nonblank=True),
                                c.get("parameters") or {}))
    return out


def _add_tool_results(msgs: list[Message], raw, path: str, counter: list) -> None:
    pending = []
    if msgs and msgs[-1].role == "assistant":
        pending = tool_uses(msgs[-1].content)
    calls, results = [], []
    for i, r in enumerate(want_list(raw, path, what="tool results")):
        p = f"{path}[{i}]"
        want_dict(r, p)
        call = want_dict(r.get("call"), f"{p}.call")
        name = want_str(call.get("name"), f"{p}.call.name", nonblank=True)
        match = next((t for t in pending if t.name == name), None)
        if match is not None:
            pending.remove(match)
            tid = match.tool_use_id
        else:
            counter[0] += 1
            tid = f"cohere_{counter[0]}"
            calls.append(ToolUseBlock(tid, name, call.get("parameters") or {}))
        outputs = want_list(r.get("outputs", []), f"{p}.outputs", what="output objects")
        results.append(ToolResultBlock(tid, [JsonBlock(o) for o in outputs], "success"))
    if calls:
        msgs.append(Message("assistant", calls))
    if results:
        msgs.append(Message("user", results))


class CommandR(Family):
    name = "cohere-command-r"

    def parse_request(self, body: dict) -> ChatRequest:
        want_dict(body, "body")
        if "message" not in body:
            raise fail("message", "required; send the user's message as a string")
        has_results = bool(body.get("tool_results"))
        message = want_str(body["message"], "message", nonblank=not has_results)
        system: list[str] = []
        msgs: list[Message] = []
        counter = [0]
        for i, h in enumerate(want_list(body.get("chat_history") or [], "chat_history", what="turns")):
            p = f"chat_history[{i}]"
            want_dict(h, p)
            role = _ROLES[want_enum(h.get("role"), f"{p}.role", tuple(_ROLES))]
            if role == "tool":
                _add_tool_results(msgs, h.get("tool_results") or [], f"{p}.tool_results", counter)
                continue
            text = h.get("message") or ""
            want_str(text, f"{p}.message")
            if role == "system":
                if text:
                    system.append(text)
                continue
            blocks: list = [TextBlock(text)] if text.strip() else []
            if role == "assistant" and h.get("tool_calls"):
                blocks += _tool_calls(h["tool_calls"], f"{p}.tool_calls", counter)
            if not blocks:
                raise fail(f"{p}.message", "is blank; send the turn's text")
            msgs.append(Message(role, blocks))
        if message.strip():
            msgs.append(Message("user", [TextBlock(message)]))
        if has_results:
            _add_tool_results(msgs, body["tool_results"], "tool_results", counter)
        if body.get("preamble") is not None:
            pre = want_str(body["preamble"], "preamble")
            if pre:
                system.insert(0, pre)
        fields: dict = {"messages": msgs, "system": system}
        used = {"message", "chat_history", "preamble", "tools", "tool_results", "stream"}
        take_sampling(body, fields, max_tokens="max_tokens", top_p="p", top_k="k", used=used)
        take_tools(body, fields, _parse_tools)
        return ChatRequest(**fields, extra=leftovers(body, used))

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        text = text_of(resp.content)
        rid = response_id or make_id("", model_id, text, n=32)
        out = {"response_id": _uuidish(rid), "text": text, "generation_id": _uuidish(make_id("", "gen", rid, n=32)),
               "finish_reason": _finish(resp.stop_reason)}
        calls = [{"name": t.name, "parameters": t.input} for t in tool_uses(resp.content)]
        if calls:
            out["tool_calls"] = calls
        return out


def _uuidish(h: str) -> str:
    h = (h.replace("-", "") + "0" * 32)[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _REncoder(StreamEncoder):
    __slots__ = ("texts", "tools", "calls")

    def __init__(self, model_id: str, **kw):
        super().__init__(model_id, **kw)
        self.texts: list[str] = []
        self.tools: dict[int, list] = {}  # block index -> [name, [input fragments]]
        self.calls: list[dict] = []

    def _start(self) -> list[dict]:
        if not self.first:
            return []
        self.first = False
        return [{"is_finished": False, "event_type": "stream-start",
                 "generation_id": _uuidish(make_id("", "gen", self.response_id, n=32))}]

    def on_start(self) -> list[dict]:
        return self._start()

    def on_text(self, index: int, text: str) -> list[dict]:
        self.texts.append(text)
        out = self._start() if self.first else []
        out.append({"is_finished": False, "event_type": "text-generation", "text": text})
        return out

    def on_block_start(self, ev: BlockStart) -> list[dict]:
        if type(ev) is ToolUseStart:
            self.tools[ev.index] = [ev.name, []]
        return []

    def on_other_delta(self, ev: BlockDelta) -> list[dict]:
        if type(ev) is ToolInputDelta:
            self.tools.setdefault(ev.index, ["", []])[1].append(ev.input)
        return []

    def on_block_stop(self, index: int) -> list[dict]:
        t = self.tools.pop(index, None)
        if t is None:
            return []
        try:
            params = json.loads("".join(t[1]) or "{}")
        except ValueError:
            params = {}
        call = {"name": t[0], "parameters": params}
        self.calls.append(call)
        out = self._start() if self.first else []
        out.append({"is_finished": False, "event_type": "tool-calls-generation", "tool_calls": [call],
                    "text": "".join(self.texts)})
        return out

    def on_final(self, usage: Usage) -> list[dict]:
        out = self._start() if self.first else []
        finish = _finish(self.stop)
        response = {"response_id": _uuidish(self.response_id), "text": "".join(self.texts),
                    "generation_id": _uuidish(make_id("", "gen", self.response_id, n=32)), "finish_reason": finish}
        if self.calls:
            response["tool_calls"] = self.calls
        out.append({"is_finished": True, "event_type": "stream-end", "finish_reason": finish, "response": response})
        return out


CommandR.encoder = _REncoder


class Command(PromptFamily):
    name = "cohere-command"
    sampling = {"max_tokens": "max_tokens", "top_p": "p", "top_k": "k", "temp_hi": 5.0}
    read = ("stream", "num_generations")

    def parse_more(self, body: dict, fields: dict) -> None:
        if body.get("num_generations") is not None and want_int(body["num_generations"], "num_generations", lo=1) != 1:
            raise fail("num_generations", "only 1 generation per request is supported by this gateway")

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        text = text_of(resp.content)
        rid = response_id or make_id("", model_id, text, n=32)
        return {"generations": [{"id": _uuidish(make_id("", "gen", rid, n=32)), "text": text,
                                 "finish_reason": _finish(resp.stop_reason)}], "id": _uuidish(rid)}


class _Encoder(StreamEncoder):
    __slots__ = ("ids",)

    def __init__(self, model_id: str, **kw):
        super().__init__(model_id, **kw)
        self.ids = (_uuidish(make_id("", "gen", self.response_id, n=32)), _uuidish(self.response_id))

    def _gen(self, text: str, finish) -> dict:
        return {"generations": [{"id": self.ids[0], "text": text, "finish_reason": finish}], "id": self.ids[1]}

    def on_text(self, index: int, text: str) -> list[dict]:
        return [self._gen(text, None)]

    def on_final(self, usage: Usage) -> list[dict]:
        return [self._gen("", _finish(self.stop))]


Command.encoder = _Encoder
COMMAND_R = CommandR()
COMMAND = Command()
