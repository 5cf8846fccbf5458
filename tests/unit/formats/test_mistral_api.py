"""workers/formats/mistral/api.py: canonical model <-> Mistral chat completions.

Only what differs from OpenAI is tested rule by rule here (the shared rules are in
test_openai_api.py); the property tests run the whole round trip again with Mistral's rules.
The stream chunks are shaped like the ones api.mistral.ai sends: OpenAI-style deltas, whole tool
calls (several in one chunk, all with index 0), usage on the finish chunk.
"""
from __future__ import annotations

import base64
import json
import re

import pytest
from hypothesis import given

from finops.shared.model import (BlockStop, ChatRequest, DocumentBlock, ImageBlock, JsonBlock, MessageStart,
                                 MessageStop, Metadata, ReasoningBlock, TextBlock, TextDelta, Tool, ToolChoice,
                                 ToolUseBlock, Usage, text_of)
from finops.workers.formats.common import response_to_events
from finops.workers.formats.mistral.invoke import MISTRAL_CHAT
from finops.workers.formats.openai.invoke import GENERIC
from finops.workers.formats.mistral import api as mc
from finops.workers.formats.openai import api as oc
from tests.unit.formats.test_openai_api import (PNG, PROPS, TOOL_IDS, assemble, assistant, check_request_round_trip,
                                              check_stream_matches, check_well_formed, chunked_streams, completion,
                                              conversations, decode_stream, expected_stop, feed_all, gateway_error,
                                              req_of, responses, stop_of, tool_result, tool_use, usage_of, user)

MISTRAL = mc.MistralDialect("mistral")
ID9 = re.compile(r"[a-zA-Z0-9]{9}")


def build(req: ChatRequest, *, stream: bool = False, dialect=MISTRAL) -> dict:
    body = mc.to_mistral_request(req, "mistral-small-latest", stream=stream, dialect=dialect)
    json.dumps(body)
    return body


def test_dialect_defaults_and_frozen():
    assert mc.MistralDialect("m").passthrough_fields == frozenset()
    with pytest.raises(AttributeError):
        MISTRAL.provider = "x"


# --- request ------------------------------------------------------------------------------------

def test_image_url_is_the_string_form():
    body = build(req_of(user("see", ImageBlock("png", PNG))))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": "data:image/png;base64," + base64.b64encode(PNG).decode()}]


@pytest.mark.parametrize("fmt", ["pdf", "doc", "docx", "xls", "xlsx"])
def test_binary_documents_are_refused_naming_provider_kind_path_and_fix(fmt):
    req = req_of(user("a"), assistant("b"), user("x", DocumentBlock("n", fmt, data=b"%PDF")))
    e = gateway_error(build, req, dialect=mc.MistralDialect("la-plateforme"))
    assert e.message.startswith("messages[2].content[1]:")
    assert "'la-plateforme'" in e.message and f"{fmt} documents" in e.message
    assert "txt" in e.message and "text" in e.message and "pdf" not in e.message.split("takes")[1]


def test_text_documents_still_become_tagged_text():
    body = build(req_of(user(DocumentBlock("n", "md", text="# t"), "go")))
    assert body["messages"][0]["content"][0] == {"type": "text", "text": '<document name="n">\n# t\n</document>'}


def test_image_in_tool_result_is_refused():
    req = req_of(user("q"), assistant(tool_use("abcDEF123")),
                 user(tool_result("abcDEF123", ImageBlock("png", PNG))), tools=[Tool("f")])
    e = gateway_error(build, req)
    assert e.message.startswith("messages[2].content[0].toolResult.content[0]:") and "'mistral'" in e.message


def test_valid_tool_ids_pass_others_are_mapped_consistently():
    long_id = "toolu_01A09q90qw90lq917835lq9"
    req = req_of(user("q"), assistant(tool_use("abcDEF123", "f"), tool_use(long_id, "g"), tool_use("call_1", "f")),
                 user(tool_result("abcDEF123", TextBlock("1")), tool_result(long_id, TextBlock("2")),
                      tool_result("call_1", TextBlock("3"))), tools=[Tool("f"), Tool("g")])
    msgs = build(req)["messages"]
    ids = [c["id"] for c in msgs[1]["tool_calls"]]
    assert ids[0] == "abcDEF123" and all(ID9.fullmatch(i) for i in ids) and len(set(ids)) == 3
    assert [m["tool_call_id"] for m in msgs[2:5]] == ids
    assert ids[1] == mc.mistral_tool_id(long_id) == build(req)["messages"][1]["tool_calls"][1]["id"]  # deterministic


def test_tool_messages_carry_the_tool_name_when_known():
    req = req_of(user("q"), assistant(tool_use("abcDEF123", "get_weather")),
                 user(tool_result("abcDEF123", JsonBlock({"t": 20})), tool_result("zzzzzzzzz", TextBlock("?"))),
                 tools=[Tool("get_weather")])
    assert build(req)["messages"][2:] == [
        {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"t":20}', "name": "get_weather"},
        {"role": "tool", "tool_call_id": "zzzzzzzzz", "content": "?"}]


def test_error_results_are_prefixed():
    req = req_of(user("q"), assistant(tool_use("abcDEF123")),
                 user(tool_result("abcDEF123", TextBlock("no"), status="error")), tools=[Tool("f")])
    assert build(req)["messages"][-1]["content"] == "Error: no"


def test_a_user_message_after_a_tool_message_gets_a_bridge():
    req = req_of(user("q"), assistant(tool_use("abcDEF123")),
                 user(tool_result("abcDEF123", TextBlock("r")), "thanks, now?"), tools=[Tool("f")])
    assert [m["role"] for m in build(req)["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert build(req)["messages"][3] == {"role": "assistant", "content": mc.BRIDGE}
    # tool followed by the assistant's answer: no bridge
    req = req_of(user("q"), assistant(tool_use("abcDEF123")), user(tool_result("abcDEF123", TextBlock("r"))),
                 assistant("done"), user("more"), tools=[Tool("f")])
    assert [m["role"] for m in build(req)["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert mc.BRIDGE not in json.dumps(build(req))


def test_openai_style_requests_get_no_bridge():
    req = req_of(user("q"), assistant(tool_use("t1")), user(tool_result("t1", TextBlock("r")), "now?"),
                 tools=[Tool("f")])
    assert [m["role"] for m in oc.to_openai_request(req, "m", stream=False, dialect=oc.OpenAIDialect("o"))["messages"]] == [
        "user", "assistant", "tool", "user"]


@pytest.mark.parametrize("choice,wire", [
    (ToolChoice("auto"), "auto"), (ToolChoice("any"), "any"), (ToolChoice("none"), "none"),
    (ToolChoice("tool", "f"), {"type": "function", "function": {"name": "f"}})])
def test_tool_choice(choice, wire):
    assert build(req_of(user("q"), tools=[Tool("f")], tool_choice=choice))["tool_choice"] == wire


def test_parameters_use_max_tokens_and_stream_has_no_stream_options():
    body = build(req_of(user("q"), max_tokens=12, temperature=0.2, top_p=0.5, stop_sequences=["x"], top_k=3),
                 stream=True)
    assert body["max_tokens"] == 12 and "max_completion_tokens" not in body
    assert (body["temperature"], body["top_p"], body["stop"]) == (0.2, 0.5, ["x"])
    assert body["stream"] is True and "stream_options" not in body and "top_k" not in body
    assert build(req_of(user("q"), top_k=3), dialect=mc.MistralDialect("m", frozenset({"top_k"})))["top_k"] == 3


def test_extra_maps_seed_and_passes_mistral_fields_only():
    extra = {"seed": 42, "safe_prompt": True, "prompt_mode": "reasoning", "response_format": {"type": "json_object"},
             "presence_penalty": 0.1, "frequency_penalty": 0.2, "n": 1, "parallel_tool_calls": False,
             "prediction": {"type": "content", "content": "x"},
             "reasoning_effort": "low", "user": "u", "store": True, "anthropic_version": "v", "thinking": {}}
    body = build(req_of(user("q"), extra=extra))
    assert {k: v for k, v in body.items() if k not in ("model", "messages")} == {
        "random_seed": 42, "safe_prompt": True, "prompt_mode": "reasoning", "response_format": {"type": "json_object"},
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "n": 1, "parallel_tool_calls": False,
        "prediction": {"type": "content", "content": "x"}}


def test_explicit_random_seed_wins_and_passthrough_works():
    assert build(req_of(user("q"), extra={"seed": 1, "random_seed": 2}))["random_seed"] == 2
    d = mc.MistralDialect("m", frozenset({"guardrails", "anthropic_beta"}))
    body = build(req_of(user("q"), extra={"guardrails": [1], "anthropic_beta": ["x"]}), dialect=d)
    assert body["guardrails"] == [1] and "anthropic_beta" not in body


# --- response -----------------------------------------------------------------------------------

def test_response_text_usage_model():
    doc = {"id": "cmpl-e5cc", "object": "chat.completion", "model": "mistral-small-latest", "created": 1702256327,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour", "tool_calls": None,
                                                "prefix": False}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 16, "completion_tokens": 34, "total_tokens": 50}}
    r = mc.from_mistral_response(doc, provider="mistral")
    assert r.content == (TextBlock("Bonjour"),) and r.stop_reason == "end_turn"
    assert r.usage == Usage(16, 34) and r.model == "mistral-small-latest"


def test_response_model_length_is_max_tokens():
    r = mc.from_mistral_response(completion({"content": "x"}, finish="model_length"), provider="m")
    assert r.stop_reason == "max_tokens"


def test_response_finish_error_raises():
    e = gateway_error(mc.from_mistral_response, completion({"content": "x"}, finish="error"), provider="mistral",
                      code="ModelErrorException")
    assert "'mistral'" in e.message and "error" in e.message


def test_response_thinking_parts_and_object_arguments():
    msg = {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Let me think."}]},
                       {"type": "text", "text": "Calling."}],
           "tool_calls": [{"id": "D681PevKs", "function": {"name": "f", "arguments": {"a": 1}}, "index": 0},
                          {"id": "Q9vW8xYz1", "function": {"name": "g", "arguments": '{"b": 2}'}, "index": 0}]}
    r = mc.from_mistral_response(completion(msg, finish="tool_calls"), provider="m")
    assert r.content == (ReasoningBlock("Let me think."), TextBlock("Calling."), tool_use("D681PevKs", "f", {"a": 1}),
                         tool_use("Q9vW8xYz1", "g", {"b": 2}))
    assert r.stop_reason == "tool_use"


def test_response_without_choices_is_a_model_error():
    gateway_error(mc.from_mistral_response, {"object": "error", "message": "x"}, provider="m", code="ModelErrorException")


# --- stream -------------------------------------------------------------------------------------

def mchunk(delta: dict, finish=None, usage=None) -> dict:
    c = {"id": "2f7c9a", "object": "chat.completion.chunk", "created": 1, "model": "mistral-small-latest",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        c["usage"] = usage
    return c


def test_stream_text_with_usage_on_the_finish_chunk():
    evs = feed_all(mc.MistralStreamDecoder("mistral", 99), [
        mchunk({"role": "assistant", "content": ""}), mchunk({"content": "Bon"}), mchunk({"content": "jour"}),
        mchunk({"content": ""}, "stop", {"prompt_tokens": 7, "total_tokens": 10, "completion_tokens": 3})])
    assert evs == [MessageStart(),
                   TextDelta(0, "Bon"), TextDelta(0, "jour"),
                   BlockStop(0), MessageStop("end_turn"),
                   Metadata(Usage(7, 3))]


def test_stream_whole_tool_calls_in_one_chunk_with_the_same_index():
    evs = feed_all(mc.MistralStreamDecoder("mistral", 1), [
        mchunk({"role": "assistant", "content": ""}),
        mchunk({"tool_calls": [{"id": "D681PevKs", "function": {"name": "f", "arguments": '{"a": 1}'}, "index": 0},
                               {"id": "Q9vW8xYz1", "function": {"name": "g", "arguments": {"b": 2}}, "index": 0}]},
               "tool_calls", {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14})])
    check_well_formed(evs)
    assert assemble(evs) == [tool_use("D681PevKs", "f", '{"a": 1}'), tool_use("Q9vW8xYz1", "g", '{"b":2}')]
    assert stop_of(evs) == "tool_use" and usage_of(evs) == Usage(5, 9)


def test_stream_thinking_content_is_reasoning():
    evs = feed_all(mc.MistralStreamDecoder("mistral", 1), [
        mchunk({"role": "assistant", "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]}]}),
        mchunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "m"}]}]}),
        mchunk({"content": [{"type": "text", "text": "Yes"}]}), mchunk({"content": " indeed"}), mchunk({}, "stop")])
    check_well_formed(evs)
    assert assemble(evs) == [ReasoningBlock("hmm"), TextBlock("Yes indeed")]


def test_stream_model_length_and_error_finish():
    evs = feed_all(mc.MistralStreamDecoder("mistral", 1), [mchunk({"content": "x"}), mchunk({}, "model_length")])
    assert stop_of(evs) == "max_tokens"
    dec = mc.MistralStreamDecoder("mistral", 1)
    dec.feed(None, mchunk({"content": "x"}))
    e = gateway_error(dec.feed, None, mchunk({}, "error"), code="ModelStreamErrorException")
    assert "'mistral'" in e.message and "error" in e.message


def test_stream_error_object_and_cut_stream():
    e = gateway_error(mc.MistralStreamDecoder("mistral", 1).feed, None,
                      {"error": {"message": "Service tier capacity exceeded",
                                 "type": "service_tier_capacity_exceeded"}},
                      code="ModelStreamErrorException")
    assert "capacity" in e.message
    dec = mc.MistralStreamDecoder("mistral", 1)
    dec.feed(None, mchunk({"content": "x"}))
    gateway_error(dec.finish, code="ModelStreamErrorException")


# --- property tests -----------------------------------------------------------------------------

@PROPS
@given(TOOL_IDS)
def test_property_tool_ids_are_valid_deterministic_and_keep_valid_ones(tid):
    new = mc.mistral_tool_id(tid)
    assert ID9.fullmatch(new) and new == mc.mistral_tool_id(tid)
    if ID9.fullmatch(tid):
        assert new == tid


@PROPS
@given(conversations())
def test_property_request_round_trips_through_the_mistral_body_parser(req):
    body = build(req)
    msgs = body["messages"]
    assert all(ID9.fullmatch(c["id"]) for m in msgs for c in m.get("tool_calls", ()))
    assert all(ID9.fullmatch(m["tool_call_id"]) for m in msgs if m["role"] == "tool")
    assert not any(a["role"] == "tool" and b["role"] == "user" for a, b in zip(msgs, msgs[1:]))
    names = {b.tool_use_id: b.name for m in req.messages for b in m.content if type(b) is ToolUseBlock}
    by_new_id = {mc.mistral_tool_id(k): v for k, v in names.items()}
    assert all(m.get("name") == by_new_id.get(m["tool_call_id"]) for m in msgs if m["role"] == "tool")
    body["messages"] = [m for m in msgs if m != {"role": "assistant", "content": mc.BRIDGE}]
    back = MISTRAL_CHAT.parse_request(json.loads(json.dumps(body)))
    extra = {k: v for k, v in req.extra.items() if k in mc.MISTRAL_FIELDS}
    if "seed" in req.extra:
        extra["random_seed"] = req.extra["seed"]  # renamed
    check_request_round_trip(req, back, tool_id=mc.mistral_tool_id, extra=extra)


@PROPS
@given(responses())
def test_property_response_round_trips(resp):
    # api.mistral.ai answers in the OpenAI shape (finish_reason, usage), which the generic family renders
    doc = json.loads(json.dumps(GENERIC.render_response(resp, "mistral-large-latest")))
    back = mc.from_mistral_response(doc, provider="mistral")
    assert [b for b in back.content if type(b) is ToolUseBlock] == [b for b in resp.content if type(b) is ToolUseBlock]
    assert back.stop_reason == expected_stop(resp) and back.usage == resp.usage


@PROPS
@given(responses())
def test_property_stream_round_trips(resp):
    enc = GENERIC.stream_encoder("mistral-large-latest")
    chunks = [c for ev in response_to_events(resp) for c in enc.feed(ev)]
    evs = decode_stream(mc.MistralStreamDecoder("mistral", 7), chunks)
    check_stream_matches(evs, resp)


@PROPS
@given(chunked_streams())
def test_property_split_and_interleaved_arguments(case):
    chunks, _, text, calls = case
    evs = decode_stream(mc.MistralStreamDecoder("mistral", 3), chunks)
    blocks = assemble(evs)
    assert text_of(blocks) == text
    assert [(b.tool_use_id, b.input) for b in blocks if type(b) is ToolUseBlock] == [
        (tid, oc.compact_json(inp)) for tid, _, inp in calls]



def test_mistral_reuses_the_openai_internals():
    assert issubclass(mc.MistralStreamDecoder, oc.OpenAIStreamDecoder) and isinstance(mc.MISTRAL_STYLE, oc.ChatStyle)
