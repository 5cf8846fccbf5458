"""Cohere Command R and Command on Bedrock InvokeModel (workers/formats/cohere.py,
bedrock-protocol.md 6.6)."""
from __future__ import annotations

from finops.shared.model import ChatResponse, JsonBlock, TextBlock, ToolUseBlock
from finops.workers.formats.bedrock.invoke import METRICS_KEY
from tests.unit.formats.family_support import METRICS, fam, feed_all, raises, roles, text_events


# --- Cohere -------------------------------------------------------------------------------------

def test_command_r_parse_documented():
    req = fam("cohere-command-r").parse_request({
        "message": "And the third?", "preamble": "You are terse.",
        "chat_history": [{"role": "USER", "message": "Name a planet"}, {"role": "CHATBOT", "message": "Mars"}],
        "documents": [{"title": "t", "snippet": "s"}], "max_tokens": 100, "temperature": 0.3, "p": 0.75, "k": 0,
        "stop_sequences": ["\n"], "seed": 7})
    assert req.system == ("You are terse.",)
    assert roles(req) == [("user", "Name a planet"), ("assistant", "Mars"), ("user", "And the third?")]
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k) == (100, 0.3, 0.75, 0)
    assert req.extra == {"documents": [{"title": "t", "snippet": "s"}], "seed": 7}


def test_command_r_tools_and_results():
    req = fam("cohere-command-r").parse_request({
        "message": "", "tools": [{"name": "query_daily_sales_report", "description": "Sales",
                                  "parameter_definitions": {"day": {"description": "date", "type": "str",
                                                                    "required": True},
                                                            "limit": {"type": "int"}}}],
        "chat_history": [{"role": "USER", "message": "Sales on 2023-09-29?"},
                         {"role": "CHATBOT", "message": "", "tool_calls": [
                             {"name": "query_daily_sales_report", "parameters": {"day": "2023-09-29"}}]}],
        "tool_results": [{"call": {"name": "query_daily_sales_report", "parameters": {"day": "2023-09-29"}},
                          "outputs": [{"total": 10000}]}]})
    assert req.tools[0].input_schema == {"type": "object", "properties": {
        "day": {"type": "string", "description": "date"}, "limit": {"type": "integer"}}, "required": ["day"]}
    call, result = req.messages[1].content[0], req.messages[2].content[0]
    assert call.name == "query_daily_sales_report" and result.tool_use_id == call.tool_use_id
    assert result.content == (JsonBlock({"total": 10000}),)


def test_command_r_tool_result_without_call_gets_synthetic_tool_use():
    req = fam("cohere-command-r").parse_request({
        "message": "weather?", "tools": [{"name": "w", "parameter_definitions": {}}],
        "tool_results": [{"call": {"name": "w", "parameters": {}}, "outputs": [{"t": 20}]}]})
    assert [m.role for m in req.messages] == ["user", "assistant", "user"]
    assert req.messages[1].content[0].tool_use_id == req.messages[2].content[0].tool_use_id


def test_command_r_errors():
    f = fam("cohere-command-r")
    assert raises(f.parse_request, {}).startswith("message: required")
    assert raises(f.parse_request, {"message": " "}).startswith("message: is blank")
    assert raises(f.parse_request, {"message": "x", "chat_history": [{"role": "BOT", "message": "y"}]}).startswith(
        "chat_history[0].role: ")
    assert raises(f.parse_request, {"message": "x", "p": 2}).startswith("p: must be between")


def test_command_r_render_and_stream():
    f = fam("cohere-command-r")
    out = f.render_response(ChatResponse(content=[TextBlock("Hi"), ToolUseBlock("x", "w", {"c": 1})],
                                         stop_reason="max_tokens"), "cohere.command-r-v1:0")
    assert out["text"] == "Hi" and out["finish_reason"] == "MAX_TOKENS"
    assert out["tool_calls"] == [{"name": "w", "parameters": {"c": 1}}]
    assert len(out["response_id"]) == 36 and out["response_id"] != out["generation_id"]
    chunks = feed_all(f.stream_encoder("cohere.command-r-v1:0"), text_events("Hel", "lo"))
    assert [c["event_type"] for c in chunks] == ["stream-start", "text-generation", "text-generation", "stream-end"]
    assert [c["is_finished"] for c in chunks] == [False, False, False, True]
    end = chunks[-1]
    assert end["finish_reason"] == "COMPLETE" and end["response"]["text"] == "Hello"
    assert end["response"]["generation_id"] == chunks[0]["generation_id"] and end[METRICS_KEY] == METRICS


def test_command_legacy_parse_render_stream():
    f = fam("cohere-command")
    req = f.parse_request({"prompt": "What is AWS ?", "max_tokens": 400, "temperature": 0.75, "p": 0.01, "k": 0,
                           "stop_sequences": [], "return_likelihoods": "NONE", "stream": False})
    assert roles(req) == [("user", "What is AWS ?")] and req.extra == {"return_likelihoods": "NONE"}
    assert (req.max_tokens, req.top_p, req.top_k) == (400, 0.01, 0)
    assert raises(f.parse_request, {"prompt": "x", "num_generations": 3}).startswith("num_generations: ")
    out = f.render_response(ChatResponse(content=[TextBlock("A cloud")]), "cohere.command-text-v14")
    assert out["generations"][0]["text"] == "A cloud" and out["generations"][0]["finish_reason"] == "COMPLETE"
    assert set(out) == {"generations", "id"}
    chunks = feed_all(f.stream_encoder("cohere.command-text-v14"), text_events("A", " cloud"))
    assert [c["generations"][0]["text"] for c in chunks] == ["A", " cloud", ""]
    assert [c["generations"][0]["finish_reason"] for c in chunks] == [None, None, "COMPLETE"]
    assert chunks[-1][METRICS_KEY] == METRICS
