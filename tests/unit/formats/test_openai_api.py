"""workers/formats/openai/api.py: canonical model <-> OpenAI Chat Completions.

One test (at least) per mapping rule of the module docstring, then hypothesis round trips against
the inverse direction in workers/formats/openai/invoke.py (the parser of Bedrock's
OpenAI-style InvokeModel body, its response renderer and its stream encoder).
"""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from finops.shared.errors import GatewayError
from finops.shared.model import (BlockDelta, BlockStop, ChatRequest, ChatResponse, DocumentBlock, ImageBlock,
                                 JsonBlock, Message, MessageStart, MessageStop, Metadata, ReasoningBlock,
                                 ReasoningDelta, StreamEvent, TextBlock, TextDelta, Tool, ToolChoice,
                                 ToolInputDelta, ToolResultBlock, ToolUseBlock, ToolUseStart, Usage, text_of)
from finops.workers.formats.bedrock import converse as cv
from finops.workers.formats.common import response_to_events
from finops.workers.formats.openai.invoke import GENERIC
from finops.workers.formats.openai import api as oc

PNG = b"\x89PNG\r\n\x1a\nfakepng"
JPEG = b"\xff\xd8\xff\xe0fakejpeg"
GIF = b"GIF89afakegif"
WEBP = b"RIFF\x00\x00\x00\x00WEBPfake"
IMAGES = {"png": PNG, "jpeg": JPEG, "gif": GIF, "webp": WEBP}
OPENAI = oc.OpenAIDialect("openai")
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- helpers ------------------------------------------------------------------------------------

def user(*blocks) -> Message:
    """A user message; a string is a text block."""
    return Message("user", [TextBlock(b) if isinstance(b, str) else b for b in blocks])


def assistant(*blocks) -> Message:
    return Message("assistant", [TextBlock(b) if isinstance(b, str) else b for b in blocks])


def tool_use(tid: str, name: str = "f", inp=None) -> ToolUseBlock:
    return ToolUseBlock(tid, name, {"a": 1} if inp is None else inp)


def tool_result(tid: str, *content, status: str = "success") -> ToolResultBlock:
    return ToolResultBlock(tid, content, status)


def build(req: ChatRequest, *, stream: bool = False, dialect=OPENAI) -> dict:
    body = oc.to_openai_request(req, "m-1", stream=stream, dialect=dialect)
    json.dumps(body)  # always plain JSON
    return body


def req_of(*messages, **kw) -> ChatRequest:
    return ChatRequest(messages=list(messages), **kw)


def gateway_error(fn, *a, code: str = "ValidationException", **kw) -> GatewayError:
    with pytest.raises(GatewayError) as ei:
        fn(*a, **kw)
    assert ei.value.code == code, ei.value
    return ei.value


def feed_all(dec, chunks, *, finish: bool = True) -> list[StreamEvent]:
    out = []
    for c in chunks:
        out += dec.feed(None, json.loads(json.dumps(c)))
    if finish:
        out += dec.finish()
    return out


def chunk(delta: dict | None = None, finish=None, **top) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **top}


def call_delta(index: int, tid: str | None = None, name: str | None = None, args: str | None = None) -> dict:
    tc: dict = {"index": index}
    if tid is not None:
        tc.update(id=tid, type="function")
    fn = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    tc["function"] = fn
    return tc


def check_well_formed(events: list[StreamEvent]) -> None:
    """ConverseStream order: MessageStart; blocks numbered 0.. in order, one open at a time, tool
    blocks announced by ToolUseStart, text/reasoning blocks not; MessageStop after the last
    BlockStop; Metadata last."""
    assert events[0] == MessageStart()
    open_idx, next_idx, kinds, stopped = None, 0, {}, False
    for ev in events[1:]:
        assert not stopped or type(ev) is Metadata, ev
        if type(ev) is ToolUseStart:
            assert open_idx is None and ev.index == next_idx, ev
            open_idx, kinds[ev.index] = ev.index, ToolInputDelta
            next_idx += 1
        elif isinstance(ev, BlockDelta):
            if open_idx is None:
                assert ev.index == next_idx and type(ev) in (TextDelta, ReasoningDelta), ev
                open_idx, kinds[ev.index] = ev.index, type(ev)
                next_idx += 1
            assert ev.index == open_idx and kinds[ev.index] is type(ev), ev
        elif type(ev) is BlockStop:
            assert ev.index == open_idx, ev
            open_idx = None
        elif type(ev) is MessageStop:
            assert open_idx is None
            stopped = True
        else:
            assert type(ev) is Metadata and stopped and ev is events[-1], ev
    assert stopped


def assemble(events: list[StreamEvent]) -> list:
    """The blocks a client assembles from the events, by index (a tool's input is its JSON text)."""
    parts: dict[int, list] = {}         # index -> [kind, text, tool id, tool name]
    for ev in events:
        match ev:
            case ToolUseStart():
                parts[ev.index] = ["tool", "", ev.tool_use_id, ev.name]
            case TextDelta():
                parts.setdefault(ev.index, ["text", ""])[1] += ev.text
            case ReasoningDelta():
                parts.setdefault(ev.index, ["reasoning", ""])[1] += ev.text
            case ToolInputDelta():
                parts[ev.index][1] += ev.input
    kinds = {"text": lambda p: TextBlock(p[1]), "reasoning": lambda p: ReasoningBlock(p[1]),
             "tool": lambda p: ToolUseBlock(p[2], p[3], p[1])}
    return [kinds[parts[i][0]](parts[i]) for i in sorted(parts)]


def stop_of(events) -> str:
    return next(e.stop_reason for e in events if type(e) is MessageStop)


def usage_of(events) -> Usage:
    return next(e.usage for e in events if type(e) is Metadata)


def test_dialect_defaults_and_frozen():
    d = oc.OpenAIDialect("p")
    assert (d.max_tokens_field, d.stream_usage, d.passthrough_fields) == ("max_completion_tokens", True, frozenset())
    with pytest.raises(AttributeError):
        d.provider = "q"


# --- request: messages --------------------------------------------------------------------------

def test_system_strings_come_first_one_message_each_and_roles_keep_order():
    body = build(req_of(user("a"), assistant("b"), user("c"), system=["s1", "s2"]))
    assert body["model"] == "m-1"
    assert body["messages"] == [{"role": "system", "content": "s1"}, {"role": "system", "content": "s2"},
                                {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                {"role": "user", "content": "c"}]


def test_text_only_message_is_a_string_of_its_texts():
    assert build(req_of(user("Hel", "lo")))["messages"] == [{"role": "user", "content": "Hello"}]


@pytest.mark.parametrize("fmt", sorted(IMAGES))
def test_image_becomes_an_image_url_data_part(fmt):
    body = build(req_of(user("look", ImageBlock(fmt, IMAGES[fmt]), "now")))
    url = f"data:image/{fmt};base64," + base64.b64encode(IMAGES[fmt]).decode()
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "now"}]}]


@pytest.mark.parametrize("fmt", ["txt", "md", "csv", "html"])
def test_text_documents_become_tagged_text_parts(fmt):
    doc_bytes = DocumentBlock("notes", fmt, data="a,b\nü".encode())
    doc_text = DocumentBlock("notes", fmt, text="a,b\nü")
    for doc in (doc_bytes, doc_text):
        body = build(req_of(user(doc, "summarise")))
        assert body["messages"][0]["content"] == [
            {"type": "text", "text": '<document name="notes">\na,b\nü\n</document>'},
            {"type": "text", "text": "summarise"}]


def test_document_name_is_escaped_and_context_kept():
    doc = DocumentBlock('a "q" <b>', "txt", text="x", context="use it")
    part = build(req_of(user(doc)))["messages"][0]["content"][0]
    assert part["text"] == '<document name="a &quot;q&quot; &lt;b&gt;" context="use it">\nx\n</document>'


def test_text_document_that_is_not_utf8_is_a_validation_error():
    doc = DocumentBlock("n", "txt", data=b"\xff\xfe\x00bad")
    e = gateway_error(build, req_of(user("x", doc)))
    assert e.message.startswith("messages[0].content[1].document:") and "UTF-8" in e.message


@pytest.mark.parametrize("name,filename", [("report", "report.pdf"), ("report.PDF", "report.PDF")])
def test_pdf_becomes_a_file_part(name, filename):
    data = b"%PDF-1.7 fake"
    body = build(req_of(user(DocumentBlock(name, "pdf", data=data))))
    assert body["messages"][0]["content"] == [{"type": "file", "file": {
        "filename": filename, "file_data": "data:application/pdf;base64," + base64.b64encode(data).decode()}}]


@pytest.mark.parametrize("fmt", ["doc", "docx", "xls", "xlsx"])
def test_office_documents_are_refused_naming_provider_kind_path_and_fix(fmt):
    req = req_of(user("a"), assistant("b"), user("read", DocumentBlock("n", fmt, data=b"PK..")))
    e = gateway_error(build, req, dialect=oc.OpenAIDialect("my-openai"))
    assert e.message.startswith("messages[2].content[1]:")
    assert "'my-openai'" in e.message and f"{fmt} documents" in e.message
    assert "pdf" in e.message and "text" in e.message  # what to send instead


def test_image_in_a_tool_result_is_refused():
    req = req_of(user("q"), assistant(tool_use("t1")),
                 user(tool_result("t1", TextBlock("ok"), ImageBlock("png", PNG))),
                 tools=[Tool("f")])
    e = gateway_error(build, req)
    assert e.message.startswith("messages[2].content[0].toolResult.content[1]:")
    assert "'openai'" in e.message and "image" in e.message and "text" in e.message


def test_pdf_in_a_tool_result_is_refused_text_document_is_kept():
    pdf = DocumentBlock("r", "pdf", data=b"%PDF")
    txt = DocumentBlock("r", "md", text="# hi")
    base = [user("q"), assistant(tool_use("t1"))]
    e = gateway_error(build, req_of(*base, user(tool_result("t1", pdf)), tools=[Tool("f")]))
    assert e.message.startswith("messages[2].content[0].toolResult.content[0]:") and "pdf" in e.message
    body = build(req_of(*base, user(tool_result("t1", txt)), tools=[Tool("f")]))
    assert body["messages"][-1] == {"role": "tool", "tool_call_id": "t1",
                                    "content": '<document name="r">\n# hi\n</document>'}


def test_guard_and_citations_content_arrive_as_text_and_images():
    # converse.parse_block turns guardContent into text/image blocks and citationsContent into text
    req = cv.parse_request({"messages": [{"role": "user", "content": [
        {"guardContent": {"text": {"text": "guarded"}}},
        {"guardContent": {"image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}}},
        {"citationsContent": {"content": [{"text": "cited"}], "citations": []}},
        {"cachePoint": {"type": "default"}}]}]})
    content = build(req)["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text"]
    assert content[0]["text"] == "guarded" and content[2]["text"] == "cited"


def test_blocks_of_unknown_kinds_cannot_be_built():
    # the formats refuse them (or drop a cachePoint) before anything is built
    with pytest.raises(TypeError):
        user("a", {"video": {"format": "mp4"}})
    with pytest.raises(TypeError):
        user("a", {"cachePoint": {}})


def test_blocks_in_the_wrong_role_are_refused():
    e = gateway_error(build, req_of(user(tool_use("t1")), tools=[Tool("f")]))
    assert e.message.startswith("messages[0].content[0]:") and "assistant" in e.message
    e = gateway_error(build, req_of(user("q"), assistant(tool_result("t1", TextBlock("x")))))
    assert e.message.startswith("messages[1].content[0]:") and "user message" in e.message
    e = gateway_error(build, req_of(user("q"), assistant("a", ImageBlock("png", PNG))))
    assert e.message.startswith("messages[1].content[1]:") and "image" in e.message


def test_assistant_tool_uses_become_tool_calls_with_compact_arguments():
    body = build(req_of(user("q"), assistant("Let me look.", tool_use("t1", "f", {"a": 1, "b": [1, "ü"]}),
                                             tool_use("t2", "g", {})), tools=[Tool("f"), Tool("g")]))
    assert body["messages"][1] == {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1,"b":[1,"ü"]}'}},
        {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}


def test_assistant_with_only_tool_uses_has_null_content():
    msg = build(req_of(user("q"), assistant(tool_use("t1")), tools=[Tool("f")]))["messages"][1]
    assert msg["content"] is None and len(msg["tool_calls"]) == 1


def test_tool_results_become_tool_messages_before_the_rest_of_the_turn():
    req = req_of(user("q"), assistant(tool_use("t1"), tool_use("t2")),
                 user("and now?", tool_result("t1", TextBlock("one"), JsonBlock({"x": [1, 2]})),
                      tool_result("t2", JsonBlock("s"))),
                 tools=[Tool("f")])
    assert build(req)["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": 'one\n{"x":[1,2]}'},
        {"role": "tool", "tool_call_id": "t2", "content": '"s"'},
        {"role": "user", "content": "and now?"}]


def test_error_tool_result_is_prefixed_and_empty_result_is_empty_text():
    req = req_of(user("q"), assistant(tool_use("t1"), tool_use("t2")),
                 user(tool_result("t1", TextBlock("boom"), status="error"), tool_result("t2")), tools=[Tool("f")])
    tools = build(req)["messages"][2:]
    assert tools == [{"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
                     {"role": "tool", "tool_call_id": "t2", "content": ""}]
    assert all("name" not in m for m in tools)  # OpenAI tool messages carry no name


def test_reasoning_in_history_is_dropped():
    r = ReasoningBlock("hmm", "sig")
    body = build(req_of(user("q"), assistant(r, "answer"), user("q2"), assistant(r), user("q3")))
    assert body["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"},
                                {"role": "user", "content": "q2"}, {"role": "user", "content": "q3"}]


def test_long_tool_ids_are_shortened_consistently_short_ones_kept():
    long_id = "toolu_" + "x" * 50
    req = req_of(user("q"), assistant(tool_use(long_id), tool_use("call_ok")),
                 user(tool_result(long_id, TextBlock("r")), tool_result("call_ok", TextBlock("r"))), tools=[Tool("f")])
    msgs = build(req)["messages"]
    new = msgs[1]["tool_calls"][0]["id"]
    assert new != long_id and len(new) <= 40 and new == msgs[2]["tool_call_id"] == oc.openai_tool_id(long_id)
    assert msgs[1]["tool_calls"][1]["id"] == msgs[3]["tool_call_id"] == "call_ok"
    assert oc.openai_tool_id("x" * 40) == "x" * 40


# --- request: parameters, tools, extra, stream --------------------------------------------------

def test_inference_config_maps_and_empty_stop_is_omitted():
    body = build(req_of(user("q"), max_tokens=77, temperature=0.3, top_p=0.9, stop_sequences=["##", "END"]))
    got = (body["max_completion_tokens"], body["temperature"], body["top_p"], body["stop"])
    assert got == (77, 0.3, 0.9, ["##", "END"])
    assert "max_tokens" not in body
    bare = build(req_of(user("q")))
    assert set(bare) == {"model", "messages"}


def test_max_tokens_field_follows_the_dialect():
    body = build(req_of(user("q"), max_tokens=5), dialect=oc.OpenAIDialect("vllm", max_tokens_field="max_tokens"))
    assert body["max_tokens"] == 5 and "max_completion_tokens" not in body


def test_top_k_only_when_passed_through():
    req = req_of(user("q"), top_k=40)
    assert "top_k" not in build(req)
    assert build(req, dialect=oc.OpenAIDialect("vllm", passthrough_fields=frozenset({"top_k"})))["top_k"] == 40


def test_tools_map_to_functions():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = build(req_of(user("q"), tools=[Tool("weather", "Get weather", schema), Tool("bare", "", {})]))
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "description": "Get weather", "parameters": schema}},
        {"type": "function", "function": {"name": "bare", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize("choice,wire", [
    (ToolChoice("auto"), "auto"), (ToolChoice("any"), "required"), (ToolChoice("none"), "none"),
    (ToolChoice("tool", "f"), {"type": "function", "function": {"name": "f"}})])
def test_tool_choice_maps(choice, wire):
    assert build(req_of(user("q"), tools=[Tool("f")], tool_choice=choice))["tool_choice"] == wire


def test_tool_choice_without_tools():
    for c in (ToolChoice("auto"), ToolChoice("none")):  # same meaning without tools: left out
        assert "tool_choice" not in build(req_of(user("q"), tool_choice=c))
    for c in (ToolChoice("any"), ToolChoice("tool", "f")):
        e = gateway_error(build, req_of(user("q"), tool_choice=c))
        assert e.message.startswith("toolConfig.toolChoice:")
    with pytest.raises(ValueError):
        ToolChoice("weird")


def test_extra_passes_documented_fields_only():
    extra = {"seed": 7, "response_format": {"type": "json_object"}, "reasoning_effort": "low", "user": "u1",
             "logit_bias": {"50256": -100}, "parallel_tool_calls": False, "service_tier": "flex",
             "anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["x"], "thinking": {"type": "enabled"},
             "random_seed": 3, "safe_prompt": True, "top_k_whatever": 1, "metadata": None}
    body = build(req_of(user("q"), extra=extra))
    assert {k: body[k] for k in body if k not in ("model", "messages")} == {
        "seed": 7, "response_format": {"type": "json_object"}, "reasoning_effort": "low", "user": "u1",
        "logit_bias": {"50256": -100}, "parallel_tool_calls": False, "service_tier": "flex"}


def test_extra_passthrough_fields_but_never_anthropic_or_reserved_keys():
    d = oc.OpenAIDialect("vllm", passthrough_fields=frozenset({"repetition_penalty", "anthropic_version", "messages",
                                                                "max_tokens"}))
    body = build(req_of(user("q"), max_tokens=9, extra={"repetition_penalty": 1.1, "anthropic_version": "v",
                                                        "messages": [], "max_tokens": 1, "stream": True}),
                 dialect=d)
    assert body["repetition_penalty"] == 1.1 and "anthropic_version" not in body
    assert body["messages"] == [{"role": "user", "content": "q"}] and "stream" not in body
    assert body["max_completion_tokens"] == 9 and body["max_tokens"] == 1  # passthrough, but not over our fields


def test_stream_flags():
    assert build(req_of(user("q")), stream=True)["stream"] is True
    assert build(req_of(user("q")), stream=True)["stream_options"] == {"include_usage": True}
    body = build(req_of(user("q")), stream=True, dialect=oc.OpenAIDialect("ollama", stream_usage=False))
    assert body["stream"] is True and "stream_options" not in body
    assert "stream" not in build(req_of(user("q"))) and "stream_options" not in build(req_of(user("q")))


def test_a_message_of_another_role_cannot_be_built():
    with pytest.raises(ValueError):
        Message("system", [TextBlock("x")])


# --- response -----------------------------------------------------------------------------------

def completion(message: dict, finish="stop", usage=None, **top) -> dict:
    doc = {"id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
           "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}]}
    if usage is not False:
        doc["usage"] = usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    doc.update(top)
    return doc


def test_text_answer_usage_and_model():
    r = oc.from_openai_response(completion({"content": "Hello"}), provider="openai")
    assert r.content == (TextBlock("Hello"),) and r.stop_reason == "end_turn"
    assert r.usage == Usage(10, 5, 0, 0) and r.model == "gpt-4o-2024-08-06" and r.stop_sequence is None


def test_cached_tokens_are_taken_out_of_input():
    u = {"prompt_tokens": 100, "completion_tokens": 5,
         "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 0}}
    assert oc.from_openai_response(completion({"content": "x"}, usage=u), provider="p").usage == Usage(40, 5, 60, 0)
    deepseek = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 30}
    assert oc.from_openai_response(completion({"content": "x"}, usage=deepseek), provider="p").usage == Usage(70, 5, 30, 0)
    nulls = {"prompt_tokens": 8, "completion_tokens": 2, "prompt_tokens_details": None}
    assert oc.from_openai_response(completion({"content": "x"}, usage=nulls), provider="p").usage == Usage(8, 2, 0, 0)


def test_missing_usage_estimates_output_only():
    r = oc.from_openai_response(completion({"content": "12345678"}, usage=False), provider="p")
    assert r.usage == Usage(0, 2)


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_fields_become_a_first_reasoning_block(key):
    r = oc.from_openai_response(completion({"content": "4", key: "2+2"}), provider="vllm")
    assert r.content == (ReasoningBlock("2+2"), TextBlock("4"))


def test_reasoning_content_wins_over_reasoning():
    r = oc.from_openai_response(completion({"content": "4", "reasoning_content": "a", "reasoning": "a"}), provider="p")
    assert r.content[0] == ReasoningBlock("a") and len(r.content) == 2


def test_content_parts_including_thinking():
    parts = [{"type": "thinking", "thinking": [{"type": "text", "text": "let me "}, {"type": "text", "text": "see"}]},
             {"type": "text", "text": "The answer"}, {"type": "reference", "reference_ids": [1]},
             {"type": "text", "text": " is 4."}]
    r = oc.from_openai_response(completion({"content": parts}), provider="mistral")
    assert r.content == (ReasoningBlock("let me see"), TextBlock("The answer is 4."))


def test_refusal_is_text_and_content_filtered():
    r = oc.from_openai_response(completion({"content": None, "refusal": "I can't help with that."}), provider="p")
    assert r.content == (TextBlock("I can't help with that."),) and r.stop_reason == "content_filtered"


def test_tool_calls_become_tool_uses():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
             {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
             {"id": "call_3", "type": "function", "function": {"name": "h", "arguments": {"k": "v"}}}]
    r = oc.from_openai_response(completion({"content": "ok", "tool_calls": calls}, finish="tool_calls"), provider="p")
    assert r.content == (TextBlock("ok"), tool_use("call_1", "f", {"a": 1}), tool_use("call_2", "g", {}),
                         tool_use("call_3", "h", {"k": "v"}))
    assert r.stop_reason == "tool_use"


def test_invalid_arguments_give_empty_input_and_malformed_tool_use():
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}]
    r = oc.from_openai_response(completion({"content": None, "tool_calls": calls}, finish="tool_calls"), provider="p")
    assert r.content == (tool_use("c", "f", {}),) and r.stop_reason == "malformed_tool_use"
    # truncated by the token limit: max_tokens explains it better
    r = oc.from_openai_response(completion({"content": None, "tool_calls": calls}, finish="length"), provider="p")
    assert r.stop_reason == "max_tokens"


def test_tool_call_without_id_gets_a_deterministic_one_without_name_is_malformed():
    calls = [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]
    a = oc.from_openai_response(completion({"tool_calls": calls}, finish="tool_calls"), provider="p")
    b = oc.from_openai_response(completion({"tool_calls": calls}, finish="tool_calls"), provider="p")
    tid = a.content[0].tool_use_id
    assert tid.startswith("call_") and tid == b.content[0].tool_use_id
    assert cv.TOOL_USE_ID.fullmatch(tid)
    r = oc.from_openai_response(completion({"tool_calls": [{"id": "x", "function": {"arguments": "{}"}}]}), provider="p")
    assert r.stop_reason == "malformed_tool_use"


@pytest.mark.parametrize("finish,stop", [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
                                         ("function_call", "tool_use"), ("content_filter", "content_filtered"),
                                         (None, "end_turn"), ("something_new", "end_turn"),
                                         ("model_length", "end_turn")])
def test_finish_reasons(finish, stop):
    assert oc.from_openai_response(completion({"content": "x"}, finish=finish), provider="p").stop_reason == stop


def test_stop_with_tool_calls_is_tool_use():
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    r = oc.from_openai_response(completion({"tool_calls": calls}, finish="stop"), provider="ollama")
    assert r.stop_reason == "tool_use"


def test_vllm_stop_reason_string_is_a_stop_sequence():
    doc = completion({"content": "x"})
    doc["choices"][0]["stop_reason"] = "END"
    r = oc.from_openai_response(doc, provider="vllm")
    assert (r.stop_reason, r.stop_sequence) == ("stop_sequence", "END")
    doc["choices"][0]["stop_reason"] = 128001  # a stop token id: plain end_turn
    assert oc.from_openai_response(doc, provider="vllm").stop_reason == "end_turn"


@pytest.mark.parametrize("doc,problem", [
    ([1, 2], "not an object"), ({"choices": []}, "no choices"), ({"object": "chat.completion"}, "no choices"),
    ({"choices": [{"index": 0, "finish_reason": "stop"}]}, "no choices[0].message"),
    ({"choices": ["x"]}, "no choices"), ({"error": {"message": "overloaded"}}, "error object")])
def test_unreadable_answers_are_model_errors(doc, problem):
    e = gateway_error(oc.from_openai_response, doc, provider="my-oai", code="ModelErrorException")
    assert "'my-oai'" in e.message and problem in e.message and e.extra["originalStatusCode"] == 200


def test_empty_content_gives_no_blocks():
    assert oc.from_openai_response(completion({"content": ""}), provider="p").content == ()


# --- stream -------------------------------------------------------------------------------------

USAGE_CHUNK = {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                                              "prompt_tokens_details": {"cached_tokens": 4}}}


def test_stream_text_exact_events():
    evs = feed_all(oc.OpenAIStreamDecoder("openai", 50), [
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
        chunk({}, "stop"), USAGE_CHUNK])
    assert evs == [MessageStart(),
                   TextDelta(0, "Hel"), TextDelta(0, "lo"),
                   BlockStop(0), MessageStop("end_turn"),
                   Metadata(Usage(5, 3, 4, 0))]


def test_stream_reasoning_text_tool_exact_events():
    evs = feed_all(oc.OpenAIStreamDecoder("vllm", 50), [
        chunk({"role": "assistant", "reasoning_content": "think"}), chunk({"reasoning": "ing"}),
        chunk({"content": "Answer"}),
        chunk({"tool_calls": [call_delta(0, "call_a", "f", "")]}),
        chunk({"tool_calls": [call_delta(0, args='{"x":')]}), chunk({"tool_calls": [call_delta(0, args="1}")]}),
        chunk({}, "tool_calls"), USAGE_CHUNK])
    assert evs[1:-1] == [
        ReasoningDelta(0, "think"),
        ReasoningDelta(0, "ing"),
        BlockStop(0),
        TextDelta(1, "Answer"),
        BlockStop(1),
        ToolUseStart(2, "call_a", "f"),
        ToolInputDelta(2, '{"x":'),
        ToolInputDelta(2, "1}"),
        BlockStop(2),
        MessageStop("tool_use")]
    check_well_formed(evs)


def test_stream_arguments_in_the_same_chunk_as_id_and_name():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"tool_calls": [call_delta(0, "c1", "f", '{"a":1}')]}),
                                               chunk({}, "tool_calls")])
    assert evs[1:4] == [ToolUseStart(0, "c1", "f"),
                        ToolInputDelta(0, '{"a":1}'),
                        BlockStop(0)]


def test_stream_sequential_parallel_calls():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [
        chunk({"tool_calls": [call_delta(0, "c1", "f", "")]}), chunk({"tool_calls": [call_delta(0, args='{"a":1}')]}),
        chunk({"tool_calls": [call_delta(1, "c2", "g", "")]}), chunk({"tool_calls": [call_delta(1, args='{"b":')]}),
        chunk({"tool_calls": [call_delta(1, args="2}")]}), chunk({}, "tool_calls")])
    check_well_formed(evs)
    assert assemble(evs) == [tool_use("c1", "f", '{"a":1}'), tool_use("c2", "g", '{"b":2}')]
    # the first call was streamed live, before the second one started
    assert evs.index(BlockStop(0)) < evs.index(ToolUseStart(1, "c2", "g"))


def test_stream_interleaved_parallel_calls_are_buffered_not_mixed():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [
        chunk({"tool_calls": [call_delta(0, "c1", "f", '{"a":')]}),
        chunk({"tool_calls": [call_delta(1, "c2", "g", '{"b":')]}),
        chunk({"tool_calls": [call_delta(1, args='"x"}')]}),
        chunk({"content": "trailing"}),
        chunk({"tool_calls": [call_delta(0, args='[1,"}"]}')]}),
        chunk({"tool_calls": [call_delta(2, "c3", "h", "")]}),
        chunk({}, "tool_calls")])
    check_well_formed(evs)
    assert assemble(evs) == [tool_use("c1", "f", '{"a":[1,"}"]}'), tool_use("c2", "g", '{"b":"x"}'),
                             TextBlock("trailing"), tool_use("c3", "h", "{}")]
    assert stop_of(evs) == "tool_use"


def test_stream_several_calls_in_one_chunk_with_the_same_index_are_told_apart_by_id():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [
        chunk({"tool_calls": [call_delta(0, "aaaaaaaaa", "f", '{"x":1}'), call_delta(0, "bbbbbbbbb", "g", '{"y":2}')]}),
        chunk({}, "tool_calls")])
    check_well_formed(evs)
    assert assemble(evs) == [tool_use("aaaaaaaaa", "f", '{"x":1}'), tool_use("bbbbbbbbb", "g", '{"y":2}')]


def test_stream_id_repeated_in_every_chunk_is_one_call():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [
        chunk({"tool_calls": [call_delta(0, "c1", "f", '{"a"')]}),
        chunk({"tool_calls": [call_delta(0, "c1", None, ':1}')]}), chunk({}, "tool_calls")])
    assert assemble(evs) == [tool_use("c1", "f", '{"a":1}')]


def test_stream_name_arriving_after_arguments_delays_the_block_start():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [
        chunk({"tool_calls": [call_delta(0, "c1", None, '{"a"')]}),
        chunk({"tool_calls": [call_delta(0, None, "f", ':1}')]}), chunk({}, "tool_calls")])
    check_well_formed(evs)
    assert assemble(evs) == [tool_use("c1", "f", '{"a":1}')]
    assert type(evs[1]) is ToolUseStart


def test_stream_call_without_id_gets_a_deterministic_id_and_without_name_is_malformed():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"tool_calls": [call_delta(0, None, "f", "{}")]}),
                                               chunk({}, "tool_calls")])
    tid = assemble(evs)[0].tool_use_id
    assert tid.startswith("call_") and cv.TOOL_USE_ID.fullmatch(tid)
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"tool_calls": [call_delta(0, "c", None, "{}")]}),
                                               chunk({}, "tool_calls")])
    check_well_formed(evs)
    assert stop_of(evs) == "malformed_tool_use"


def test_stream_tool_without_arguments_gets_an_empty_object():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"tool_calls": [call_delta(0, "c1", "f", "")]}),
                                               chunk({}, "tool_calls")])
    assert assemble(evs) == [tool_use("c1", "f", "{}")]


def test_stream_invalid_arguments_are_malformed_tool_use():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"tool_calls": [call_delta(0, "c1", "f", '{"a":')]}),
                                               chunk({}, "tool_calls")])
    check_well_formed(evs)
    assert stop_of(evs) == "malformed_tool_use"


def test_stream_late_arguments_for_a_closed_call_are_malformed():
    two = [chunk({"tool_calls": [call_delta(0, "c1", "f", "{}")]}),
           chunk({"tool_calls": [call_delta(1, "c2", "g", "{}")]})]
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), two + [chunk({"tool_calls": [call_delta(0, args=" ")]}),
                                                     chunk({}, "tool_calls")])
    assert stop_of(evs) == "tool_use"  # whitespace changes nothing
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), two + [chunk({"tool_calls": [call_delta(0, args="x")]}),
                                                     chunk({}, "tool_calls")])
    check_well_formed(evs)
    assert stop_of(evs) == "malformed_tool_use"


@pytest.mark.parametrize("finish,stop", [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
                                         ("function_call", "tool_use"), ("content_filter", "content_filtered")])
def test_stream_finish_reasons(finish, stop):
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"content": "x"}), chunk({}, finish)])
    assert stop_of(evs) == stop


def test_stream_stop_with_tool_calls_is_tool_use_and_refusal_is_content_filtered():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"tool_calls": [call_delta(0, "c", "f", "{}")]}),
                                               chunk({}, "stop")])
    assert stop_of(evs) == "tool_use"
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"refusal": "No."}), chunk({}, "stop")])
    assert assemble(evs) == [TextBlock("No.")] and stop_of(evs) == "content_filtered"


def test_stream_usage_in_the_finish_chunk_and_from_groq():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [chunk({"content": "x"}),
                                               chunk({}, "stop", usage={"prompt_tokens": 4, "completion_tokens": 1})])
    assert usage_of(evs) == Usage(4, 1)
    evs = feed_all(oc.OpenAIStreamDecoder("groq", 1), [chunk({"content": "x"}), chunk({}, "stop", x_groq={
        "id": "req_1", "usage": {"prompt_tokens": 6, "completion_tokens": 2}})])
    assert usage_of(evs) == Usage(6, 2)


def test_stream_without_usage_estimates():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 321), [chunk({"content": "abcd"}),
                                                 chunk({"tool_calls": [call_delta(0, "c", "f", '{"k":1}')]}),
                                                 chunk({}, "tool_calls")])
    assert usage_of(evs) == Usage(321, 3)  # "abcd" + '{"k":1}' = 11 characters


def test_stream_empty_first_chunk_and_empty_content_make_no_block():
    # Azure first sends prompt_filter_results with no choices; OpenAI's first delta has content ""
    evs = feed_all(oc.OpenAIStreamDecoder("azure", 1), [
        {"id": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0}]},
        chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), USAGE_CHUNK])
    assert [type(e) for e in evs] == [MessageStart, MessageStop, Metadata]


def test_stream_ignores_other_choices_and_content_after_finish():
    evs = feed_all(oc.OpenAIStreamDecoder("p", 1), [
        {"choices": [{"index": 1, "delta": {"content": "other"}}, {"index": 0, "delta": {"content": "mine"}}]},
        chunk({}, "stop"), chunk({"content": "late"}), USAGE_CHUNK])
    check_well_formed(evs)
    assert assemble(evs) == [TextBlock("mine")] and usage_of(evs) == Usage(5, 3, 4)


@pytest.mark.parametrize("err,code", [
    ({"message": "Rate limit reached for gpt-4o", "type": "rate_limit_error"}, "ThrottlingException"),
    ({"message": "The server had an error", "type": "server_error"}, "ServiceUnavailableException"),
    ({"message": "weird"}, "ModelStreamErrorException")])
def test_stream_error_chunk_raises_the_mapped_error(err, code):
    dec = oc.OpenAIStreamDecoder("openai", 1)
    dec.feed(None, chunk({"content": "x"}))
    e = gateway_error(dec.feed, None, {"error": err}, code=code)
    assert "'openai'" in e.message and err["message"] in e.message


def test_stream_error_event_raises():
    e = gateway_error(oc.OpenAIStreamDecoder("p", 1).feed, "error", {"message": "bad things"},
                      code="ModelStreamErrorException")
    assert "bad things" in e.message


def test_stream_cut_before_finish_reason():
    dec = oc.OpenAIStreamDecoder("openai", 1)
    dec.feed(None, chunk({"content": "x"}))
    e = gateway_error(dec.finish, code="ModelStreamErrorException")
    assert "'openai'" in e.message and "no finish_reason" in e.message
    gateway_error(oc.OpenAIStreamDecoder("p", 1).finish, code="ModelStreamErrorException")


def test_stream_chunk_that_is_not_an_object():
    gateway_error(oc.OpenAIStreamDecoder("p", 1).feed, None, ["x"], code="ModelStreamErrorException")


def test_stream_vllm_stop_string():
    evs = feed_all(oc.OpenAIStreamDecoder("vllm", 1), [chunk({"content": "x"}),
                                                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                                                "stop_reason": "END"}]}])
    assert MessageStop("stop_sequence", "END") in evs


def test_decoders_are_independent():
    a, b = oc.OpenAIStreamDecoder("p", 1), oc.OpenAIStreamDecoder("p", 1)
    a.feed(None, chunk({"content": "one"}))
    evs = feed_all(b, [chunk({"content": "two"}), chunk({}, "stop")])
    assert evs[1] == TextDelta(0, "two")


# --- property tests -----------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(str.strip)
TOOL_NAMES = st.sampled_from(["f", "get_weather", "lookup-1"])
TOOL_IDS = st.from_regex(r"[a-zA-Z0-9_.:-]{1,64}", fullmatch=True)
JSON_SCALAR = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
JSON = st.recursive(JSON_SCALAR, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
JSON_OBJ = st.dictionaries(st.text(max_size=6), JSON, max_size=4)
IMAGE = st.sampled_from(sorted(IMAGES)).flatmap(
    lambda f: st.binary(max_size=8).map(lambda tail: ImageBlock(f, IMAGES[f] + tail)))
REASONING = TEXT.map(lambda t: ReasoningBlock(t, "sig"))


@st.composite
def conversations(draw):
    """A valid canonical conversation: user turns (text, images, toolResults answering the previous
    assistant turn), assistant turns (text, toolUses, reasoning)."""
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    tools = [Tool(n, draw(st.sampled_from(["", "does things"])), schema) for n in ("f", "get_weather", "lookup-1")]
    messages: list[Message] = []
    pending: list[str] = []
    for turn in range(draw(st.integers(1, 4))):
        result_items = st.lists(st.one_of(TEXT.map(TextBlock), JSON.map(JsonBlock)), min_size=1, max_size=2)
        blocks = [ToolResultBlock(tid, draw(result_items), draw(st.sampled_from(["success", "error"])))
                  for tid in pending]
        extra = draw(st.lists(st.one_of(TEXT.map(TextBlock), IMAGE), min_size=0 if blocks else 1, max_size=3))
        messages.append(Message("user", draw(st.permutations(blocks + extra))))
        if turn == 0 or draw(st.booleans()):
            uses = [ToolUseBlock(draw(TOOL_IDS), draw(TOOL_NAMES), draw(JSON_OBJ))
                    for _ in range(draw(st.integers(0, 2)))]
            uses = list({u.tool_use_id: u for u in uses}.values())
            texts = draw(st.lists(TEXT.map(TextBlock), min_size=0 if uses else 1, max_size=2))
            reasoning = draw(st.lists(REASONING, max_size=1))
            messages.append(Message("assistant", reasoning + draw(st.permutations(texts + uses))))
            pending = [u.tool_use_id for u in uses]
        else:
            pending = []
    choice = draw(st.sampled_from([None, ToolChoice("auto"), ToolChoice("any"), ToolChoice("none"),
                                   ToolChoice("tool", "f")]))
    return ChatRequest(
        messages=messages, system=draw(st.lists(TEXT, max_size=2)),
        max_tokens=draw(st.none() | st.integers(1, 10**5)),
        temperature=draw(st.none() | st.floats(0, 1)), top_p=draw(st.none() | st.floats(0, 1)),
        stop_sequences=draw(st.lists(TEXT, max_size=3)), tools=tools, tool_choice=choice,
        extra=draw(st.dictionaries(st.sampled_from(["seed", "user", "presence_penalty", "anthropic_version",
                                                    "anthropic_beta", "thinking", "top_k_x"]),
                                   st.integers(0, 5), max_size=4)))


def _merge_and_coalesce(messages) -> list[tuple[str, list]]:
    """Consecutive same-role messages merged, adjacent text blocks joined, empty messages dropped."""
    out: list[tuple[str, list]] = []
    for m in messages:
        if not m.content:
            continue
        if out and out[-1][0] == m.role:
            out[-1][1].extend(m.content)
        else:
            out.append((m.role, list(m.content)))
    for _, blocks in out:
        i = 0
        while i + 1 < len(blocks):
            if type(blocks[i]) is TextBlock and type(blocks[i + 1]) is TextBlock:
                blocks[i:i + 2] = [TextBlock(blocks[i].text + blocks[i + 1].text)]
            else:
                i += 1
    return out


def expected_messages(req: ChatRequest, tool_id) -> list[tuple[str, list]]:
    """What the OpenAI-style parser should read back from build_request's messages."""
    msgs = []
    for m in req.messages:
        if m.role == "assistant":
            text = text_of(m.content)
            uses = [ToolUseBlock(tool_id(b.tool_use_id), b.name, b.input) for b in m.content if type(b) is ToolUseBlock]
            has_text = any(type(b) is TextBlock for b in m.content)
            msgs.append(Message("assistant", ([TextBlock(text)] if has_text else []) + uses))
            continue
        results = []
        for b in m.content:
            if type(b) is ToolResultBlock:
                text = "\n".join(c.text if type(c) is TextBlock else oc.compact_json(c.value) for c in b.content)
                text = ("Error: " + text) if b.status == "error" else text
                results.append(ToolResultBlock(tool_id(b.tool_use_id), [TextBlock(text)], "success"))
        msgs.append(Message("user", results))
        msgs.append(Message("user", [b for b in m.content if type(b) is not ToolResultBlock]))
    return _merge_and_coalesce(msgs)


def check_request_round_trip(req: ChatRequest, back: ChatRequest, *, tool_id, extra: dict) -> None:
    assert back.system == req.system
    assert _merge_and_coalesce(back.messages) == expected_messages(req, tool_id)
    assert (back.max_tokens, back.temperature, back.top_p) == (req.max_tokens, req.temperature, req.top_p)
    assert back.stop_sequences == req.stop_sequences
    assert back.tools == req.tools
    assert back.tool_choice == req.tool_choice
    assert back.extra == extra


@PROPS
@given(conversations(), st.sampled_from(["max_completion_tokens", "max_tokens"]))
def test_property_request_round_trips_through_the_openai_body_parser(req, field):
    body = build(req, dialect=oc.OpenAIDialect("openai", max_tokens_field=field))
    back = GENERIC.parse_request(json.loads(json.dumps(body)))
    check_request_round_trip(req, back, tool_id=oc.openai_tool_id,
                             extra={k: v for k, v in req.extra.items() if k in oc.OPENAI_FIELDS})


@st.composite
def responses(draw):
    uses = [ToolUseBlock(draw(TOOL_IDS), draw(TOOL_NAMES), draw(JSON_OBJ))
            for _ in range(draw(st.integers(0, 3)))]
    text = draw(st.lists(TEXT.map(TextBlock), min_size=0 if uses else 1, max_size=3))
    stop = draw(st.sampled_from(["end_turn", "max_tokens", "content_filtered"] + (["tool_use"] if uses else [])))
    return ChatResponse(content=text + uses, stop_reason=stop,
                        usage=Usage(draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))))


def expected_stop(resp: ChatResponse) -> str:
    has_tools = any(type(b) is ToolUseBlock for b in resp.content)
    return "tool_use" if has_tools and resp.stop_reason == "end_turn" else resp.stop_reason


@PROPS
@given(responses())
def test_property_response_round_trips_through_the_openai_renderer(resp):
    doc = json.loads(json.dumps(GENERIC.render_response(resp, "gpt-x")))
    back = oc.from_openai_response(doc, provider="openai")
    assert text_of(back.content) == text_of(resp.content)
    assert [b for b in back.content if type(b) is ToolUseBlock] == [b for b in resp.content if type(b) is ToolUseBlock]
    assert back.stop_reason == expected_stop(resp)
    assert back.usage == resp.usage and back.model == "gpt-x"


def decode_stream(decoder, chunks) -> list[StreamEvent]:
    evs = feed_all(decoder, chunks)
    check_well_formed(evs)
    return evs


def check_stream_matches(evs: list[StreamEvent], resp: ChatResponse) -> None:
    blocks = assemble(evs)
    assert text_of(blocks) == text_of(resp.content)
    got = [(b.tool_use_id, b.name, json.loads(b.input)) for b in blocks if type(b) is ToolUseBlock]
    assert got == [(t.tool_use_id, t.name, t.input) for t in resp.content if type(t) is ToolUseBlock]
    assert stop_of(evs) == expected_stop(resp)


@PROPS
@given(responses())
def test_property_family_stream_encoder_output_decodes_to_the_same_answer(resp):
    enc = GENERIC.stream_encoder("gpt-x")
    chunks = [c for ev in response_to_events(resp) for c in enc.feed(ev)]
    evs = decode_stream(oc.OpenAIStreamDecoder("openai", 7), chunks)
    check_stream_matches(evs, resp)
    assert usage_of(evs) == resp.usage


def split_points(draw, s: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(s) - 1)), max_size=6))) if len(s) > 1 else []
    pieces, prev = [], 0
    for c in cuts + [len(s)]:
        pieces.append(s[prev:c])
        prev = c
    return [p for p in pieces if p]


@st.composite
def chunked_streams(draw):
    """Chunks of a text answer plus parallel tool calls whose argument strings are split at random
    points and whose fragments interleave at random, sometimes several calls in one chunk."""
    reasoning = draw(st.lists(TEXT, max_size=2))
    text = draw(st.lists(TEXT, max_size=3))
    calls = [(f"call_{k}", draw(TOOL_NAMES), draw(JSON_OBJ)) for k in range(draw(st.integers(0, 4)))]
    queues = []
    for k, (tid, name, inp) in enumerate(calls):
        frags = split_points(draw, oc.compact_json(inp))
        first_args = frags.pop(0) if frags and draw(st.booleans()) else ""
        queues.append([call_delta(k, tid, name, first_args)] + [call_delta(k, args=f) for f in frags])
    late_text = draw(st.lists(TEXT, max_size=2))
    items = [("tc", q) for q in queues] + ([("text", late_text)] if late_text else [])
    schedule: list = []
    live = [list(q) for _, q in items]
    while any(live):
        i = draw(st.sampled_from([i for i, q in enumerate(live) if q]))
        schedule.append((items[i][0], live[i].pop(0)))
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"reasoning_content": r}) for r in reasoning] + [chunk({"content": t}) for t in text]
    i = 0
    while i < len(schedule):
        kind, item = schedule[i]
        if kind == "text":
            chunks.append(chunk({"content": item}))
            i += 1
            continue
        group = [item]
        i += 1
        while i < len(schedule) and schedule[i][0] == "tc" and draw(st.booleans()):
            group.append(schedule[i][1])
            i += 1
        chunks.append(chunk({"tool_calls": group}))
    chunks.append(chunk({}, "tool_calls" if calls else "stop"))
    first_seen = [item["id"] for kind, item in schedule if kind == "tc" and "id" in item]
    calls.sort(key=lambda c: first_seen.index(c[0]))  # blocks come in order of first appearance
    return chunks, "".join(reasoning), "".join(text + late_text), calls


@PROPS
@given(chunked_streams())
def test_property_split_and_interleaved_arguments_are_reassembled(case):
    chunks, reasoning, text, calls = case
    evs = decode_stream(oc.OpenAIStreamDecoder("openai", 3), chunks)
    blocks = assemble(evs)
    assert "".join(b.text for b in blocks if type(b) is ReasoningBlock) == reasoning
    assert text_of(blocks) == text
    got = [(b.tool_use_id, b.name, b.input) for b in blocks if type(b) is ToolUseBlock]
    assert got == [(tid, name, oc.compact_json(inp)) for tid, name, inp in calls]
    assert stop_of(evs) == ("tool_use" if calls else "end_turn")


@PROPS
@given(st.lists(st.text(max_size=6), max_size=12), JSON)
def test_property_json_end_scanner_agrees_with_json(cuts, value):
    s = oc.compact_json({"v": value, "s": "".join(cuts)})
    scan, consumed = oc._JsonEnd(), 0
    for piece in split_fixed(s, [len(c) for c in cuts]):
        scan.feed(piece)
        consumed += len(piece)
        assert scan.complete == (consumed == len(s)), (s, consumed)


def split_fixed(s: str, sizes: list[int]) -> list[str]:
    out, pos = [], 0
    for n in sizes:
        out.append(s[pos:pos + n])
        pos += n
    out.append(s[pos:])
    return out
