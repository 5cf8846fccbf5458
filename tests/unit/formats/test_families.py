"""Model-family native formats (workers/formats/): detection, parsing, rendering, streams.

Request examples are the documented ones (bedrock-protocol.md section 6); response and stream
shapes are checked field by field against the same section.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from finops.shared.errors import GatewayError
from finops.shared.model import ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, StreamEvent, Usage
from finops.workers.formats.bedrock import converse as cv
from finops.workers.formats.common import response_to_events
from finops.workers.formats.bedrock.families import FAMILIES, family_for, parse_invoke_request
from finops.workers.formats.bedrock.invoke import METRICS_KEY, model_id_candidates
from finops.workers.formats.prompts import parse_prompt

PNG = b"\x89PNG\r\n\x1a\nfakepng"
JPEG = b"\xff\xd8\xff\xe0fakejpeg"
APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5"
CLAUDE3 = "anthropic.claude-3-haiku-20240307-v1:0"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fam(name: str):
    return FAMILIES[name]


def raises(fn, *a) -> str:
    with pytest.raises(GatewayError) as ei:
        fn(*a)
    assert ei.value.code == "ValidationException" and ei.value.status == 400
    return ei.value.message


def roles(req: ChatRequest) -> list[tuple[str, str]]:
    return [(m.role, "".join(b.get("text", "") for b in m.content)) for m in req.messages]


# --- detection ----------------------------------------------------------------------------------

ANTH = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
MSGS = {"messages": [{"role": "user", "content": "hi"}]}

DETECT = [
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", ANTH, "anthropic-messages"),
    ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", ANTH, "anthropic-messages"),
    ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", ANTH, "anthropic-messages"),
    ("apac.anthropic.claude-sonnet-4-20250514-v1:0", ANTH, "anthropic-messages"),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", ANTH, "anthropic-messages"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
     ANTH, "anthropic-messages"),
    ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2:1", {"prompt": "\n\nHuman: hi\n\nAssistant:"},
     "anthropic-text"),
    ("anthropic.claude-instant-v1", {"prompt": "x", "max_tokens_to_sample": 5}, "anthropic-text"),
    ("anthropic.claude-v2", ANTH, "anthropic-messages"),
    ("meta.llama3-8b-instruct-v1:0", {"prompt": "hi"}, "meta-llama"),
    ("us.meta.llama3-2-11b-instruct-v1:0", {"prompt": "hi"}, "meta-llama"),
    ("meta.llama2-13b-chat-v1", {"prompt": "hi"}, "meta-llama"),
    ("mistral.mistral-7b-instruct-v0:2", {"prompt": "<s>[INST] hi [/INST]"}, "mistral-text"),
    ("mistral.mixtral-8x7b-instruct-v0:1", {"prompt": "hi"}, "mistral-text"),
    ("mistral.mistral-large-2407-v1:0", MSGS, "mistral-chat"),
    ("mistral.mistral-large-2407-v1:0", {"prompt": "hi", "max_tokens": 50}, "mistral-text"),
    ("eu.mistral.pixtral-large-2502-v1:0", MSGS, "mistral-chat"),
    ("amazon.titan-text-express-v1", {"inputText": "hi"}, "titan-text"),
    ("amazon.titan-text-premier-v1:0", {"inputText": "hi"}, "titan-text"),
    ("amazon.titan-tg1-large", {"inputText": "hi"}, "titan-text"),
    ("amazon.titan-embed-text-v2:0", {"inputText": "hi"}, "titan-embed"),
    ("amazon.titan-embed-text-v1", {"inputText": "hi"}, "titan-embed"),
    ("amazon.nova-pro-v1:0", MSGS, "nova"),
    ("us.amazon.nova-lite-v1:0", MSGS, "nova"),
    ("apac.amazon.nova-micro-v1:0", MSGS, "nova"),
    ("global.amazon.nova-2-lite-v1:0", MSGS, "nova"),
    ("cohere.embed-english-v3", {"texts": ["a"]}, "cohere-embed"),
    ("cohere.embed-multilingual-v3", {"texts": ["a"]}, "cohere-embed"),
    ("cohere.command-r-plus-v1:0", {"message": "hi"}, "cohere-command-r"),
    ("cohere.command-r-v1:0", {"message": "hi"}, "cohere-command-r"),
    ("cohere.command-text-v14", {"prompt": "hi"}, "cohere-command"),
    ("cohere.command-light-text-v14", {"prompt": "hi"}, "cohere-command"),
    ("ai21.jamba-1-5-large-v1:0", MSGS, "ai21-jamba"),
    ("ai21.jamba-instruct-v1:0", MSGS, "ai21-jamba"),
    ("ai21.j2-ultra-v1", {"prompt": "hi"}, "ai21-jurassic"),
    ("ai21.j2-mid-v1", {"prompt": "hi"}, "ai21-jurassic"),
    ("arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.titan-text-express-v1:0:8k/abcd1234",
     {"inputText": "hi"}, "titan-text"),
    # no vendor prefix: the body shape decides
    (APP_PROFILE, ANTH, "anthropic-messages"),
    (APP_PROFILE, {"schemaVersion": "messages-v1", **MSGS}, "nova"),
    (APP_PROFILE, {"inferenceConfig": {"maxTokens": 5}, **MSGS}, "nova"),
    (APP_PROFILE, MSGS, "openai-chat"),
    (APP_PROFILE, {"prompt": "x", "max_tokens_to_sample": 5}, "anthropic-text"),
    (APP_PROFILE, {"prompt": "x", "max_gen_len": 5}, "meta-llama"),
    (APP_PROFILE, {"prompt": "x"}, "mistral-text"),
    (APP_PROFILE, {"inputText": "x", "textGenerationConfig": {}}, "titan-text"),
    (APP_PROFILE, {"inputText": "x"}, "titan-text"),
    (APP_PROFILE, {"inputText": "x", "dimensions": 256}, "titan-embed"),
    (APP_PROFILE, {"message": "x"}, "cohere-command-r"),
    (APP_PROFILE, {"texts": ["x"], "input_type": "search_query"}, "cohere-embed"),
    ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/p7q8r9", {"prompt": "x", "max_gen_len": 5},
     "meta-llama"),
    ("my-custom-name", MSGS, "openai-chat"),
    ("openai.gpt-oss-120b-1:0", MSGS, "openai-chat"),
    ("weird name/with space+plus", {"prompt": "x"}, "mistral-text"),
]


@pytest.mark.parametrize("model_id,body,name", DETECT, ids=[f"{d[0]}|{d[2]}" for d in DETECT])
def test_family_detection(model_id, body, name):
    assert family_for(model_id, body).name == name


def test_model_id_candidates():
    assert model_id_candidates("us.anthropic.claude-3-7-sonnet-20250219-v1:0") == [
        "anthropic.claude-3-7-sonnet-20250219-v1:0"]
    assert model_id_candidates("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2:1") == [
        "anthropic.claude-v2:1"]
    assert model_id_candidates(
        "arn:aws:bedrock:us-east-1:1:custom-model/amazon.titan-text-express-v1:0:8k/abc") == [
        "abc", "amazon.titan-text-express-v1:0:8k"]


@pytest.mark.parametrize("model_id", ["amazon.titan-image-generator-v2:0", "amazon.nova-canvas-v1:0",
                                      "us.amazon.nova-reel-v1:0", "stability.sd3-large-v1:0", "cohere.rerank-v3-5:0"])
def test_unsupported_model_kinds(model_id):
    msg = raises(family_for, model_id, {"textToImageParams": {"text": "a cat"}})
    assert msg.startswith("modelId: ") and "only translates text chat" in msg


def test_detection_needs_an_object_body():
    assert raises(family_for, CLAUDE3, ["not", "an", "object"]).startswith("body: must be a JSON object")


def test_detection_gives_up_with_a_useful_message():
    msg = raises(family_for, APP_PROFILE, {"foo": 1})
    assert msg.startswith("body: cannot tell the request format") and "messages, prompt, inputText" in msg


def test_parse_invoke_request_convenience():
    f, req = parse_invoke_request(CLAUDE3, ANTH)
    assert f.name == "anthropic-messages" and roles(req) == [("user", "hi")]


# --- prompt templates ---------------------------------------------------------------------------

LLAMA3 = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a bot.<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_prompt_llama3():
    system, msgs = parse_prompt(LLAMA3)
    assert system == ["You are a bot."]
    assert [(m.role, m.content) for m in msgs] == [
        ("user", [{"text": "Hi"}]), ("assistant", [{"text": "Hello!"}]), ("user", [{"text": "What is 2+2?"}])]


def test_prompt_llama2_with_sys():
    system, msgs = parse_prompt("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nName a colour. [/INST] Red </s>"
                                "<s>[INST] Another [/INST]")
    assert system == ["Be brief."]
    assert [(m.role, m.content[0]["text"]) for m in msgs] == [
        ("user", "Name a colour."), ("assistant", "Red"), ("user", "Another")]


def test_prompt_mistral_documented_multi_turn():
    p = ("<s>[INST] What is your favourite condiment? [/INST] Well, I'm quite partial to a good squeeze of "
         "fresh lemon juice.</s> [INST] Do you have mayonnaise recipes? [/INST]")
    system, msgs = parse_prompt(p)
    assert system == []
    assert [(m.role, m.content[0]["text"]) for m in msgs] == [
        ("user", "What is your favourite condiment?"),
        ("assistant", "Well, I'm quite partial to a good squeeze of fresh lemon juice."),
        ("user", "Do you have mayonnaise recipes?")]


def test_prompt_mistral_system_prompt_tag():
    system, msgs = parse_prompt("<s>[SYSTEM_PROMPT]Be kind.[/SYSTEM_PROMPT][INST]Hi[/INST]")
    assert system == ["Be kind."] and msgs[0].content == [{"text": "Hi"}]


def test_prompt_claude_human_assistant():
    system, msgs = parse_prompt("You are Claude.\n\nHuman: Hi there\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant:",
                                words="human")
    assert system == ["You are Claude."]
    assert [(m.role, m.content[0]["text"]) for m in msgs] == [
        ("user", "Hi there"), ("assistant", "Hello"), ("user", "Bye")]


def test_prompt_claude_prefill_kept():
    _, msgs = parse_prompt("\n\nHuman: Give JSON\n\nAssistant: {", words="human")
    assert [(m.role, m.content[0]["text"]) for m in msgs] == [("user", "Give JSON"), ("assistant", "{")]


def test_prompt_titan_user_bot():
    system, msgs = parse_prompt("User: Write a haiku\nBot:", words="userbot")
    assert system == [] and [(m.role, m.content[0]["text"]) for m in msgs] == [("user", "Write a haiku")]


def test_prompt_plain_is_one_user_message_unchanged():
    _, msgs = parse_prompt("  Say hello from Mistral using Invoke API. ")
    assert [(m.role, m.content) for m in msgs] == [("user", [{"text": "  Say hello from Mistral using Invoke API. "}])]


def test_prompt_word_templates_only_where_named():
    # a Mistral user may well write "Human:" in prose; only Claude's family splits on it
    _, msgs = parse_prompt("Translate:\n\nHuman: hello\n\nAssistant: bonjour")
    assert len(msgs) == 1 and msgs[0].role == "user"


@pytest.mark.parametrize("prompt,text", [(None, "required"), (5, "required"), ("   ", "blank"),
                                         ("<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\nhi",
                                          "no user text")])
def test_prompt_errors(prompt, text):
    msg = raises(parse_prompt, prompt)
    assert msg.startswith("prompt: ") and text in msg


# --- Anthropic Messages -------------------------------------------------------------------------

def test_anthropic_parse_documented_request():
    req = fam("anthropic-messages").parse_request({
        "anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["computer-use-2024-10-22"],
        "max_tokens": 1024, "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                                      "data": b64(JPEG)}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "found",
                                          "is_error": False},
                                         {"type": "tool_result", "tool_use_id": "toolu_02",
                                          "content": [{"type": "text", "text": "bad"}], "is_error": True}]}],
        "temperature": 1.0, "top_p": 0.999, "top_k": 250, "stop_sequences": ["\n\nHuman:"],
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "lookup"},
        "thinking": {"type": "enabled", "budget_tokens": 2000}})
    assert req.system == ["Be terse."] and req.max_tokens == 1024
    assert (req.temperature, req.top_p, req.top_k, req.stop_sequences) == (1.0, 0.999, 250, ["\n\nHuman:"])
    assert req.messages[0].content[1] == {"image": {"format": "jpeg", "bytes": JPEG}}
    assert req.messages[1].content == [{"reasoningContent": {"text": "hmm", "signature": "sig"}},
                                       {"toolUse": {"toolUseId": "toolu_01", "name": "lookup", "input": {"q": "x"}}}]
    assert req.messages[2].content == [
        {"toolResult": {"toolUseId": "toolu_01", "content": [{"text": "found"}], "status": "success"}},
        {"toolResult": {"toolUseId": "toolu_02", "content": [{"text": "bad"}], "status": "error"}}]
    assert req.tools[0].name == "lookup" and req.tool_choice == {"tool": {"name": "lookup"}}
    assert req.extra == {"anthropic_beta": ["computer-use-2024-10-22"],
                         "thinking": {"type": "enabled", "budget_tokens": 2000}}


def test_anthropic_parse_string_content_and_system():
    req = fam("anthropic-messages").parse_request({**ANTH, "system": "sys",
                                                   "messages": [{"role": "user", "content": "Write a haiku about coding."}]})
    assert req.system == ["sys"] and roles(req) == [("user", "Write a haiku about coding.")]


ANTH_ERRORS = [
    ("version-missing", {"max_tokens": 5, "messages": MSGS["messages"]}, "anthropic_version",
     'required, must be "bedrock-2023-05-31"'),
    ("version-wrong", {**ANTH, "anthropic_version": "2023-06-01"}, "anthropic_version", "bedrock-2023-05-31"),
    ("max-tokens-missing", {k: v for k, v in ANTH.items() if k != "max_tokens"}, "max_tokens", "required"),
    ("max-tokens-zero", {**ANTH, "max_tokens": 0}, "max_tokens", "at least 1"),
    ("messages-missing", {k: v for k, v in ANTH.items() if k != "messages"}, "messages", "required"),
    ("messages-empty", {**ANTH, "messages": []}, "messages", "non-empty"),
    ("role", {**ANTH, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role", "user, assistant"),
    ("content-blank", {**ANTH, "messages": [{"role": "user", "content": ""}]}, "messages[0].content", "blank"),
    ("block-type", {**ANTH, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages[0].content[0].type", "unknown content block type 'video'"),
    ("image-media", {**ANTH, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": b64(PNG)}}]}]},
     "messages[0].content[0].source.media_type", "image/jpeg"),
    ("image-mismatch", {**ANTH, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/jpeg", "data": b64(PNG)}}]}]},
     "messages[0].content[0].source.data", "not a valid jpeg image"),
    ("image-url", {**ANTH, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "url", "url": "https://x/y.png"}}]}]}, "messages[0].content[0].source.type", "not supported"),
    ("temperature", {**ANTH, "temperature": 1.5}, "temperature", "between 0 and 1"),
    ("tool-typed", {**ANTH, "tools": [{"type": "computer_20241022", "name": "computer"}]}, "tools[0].type",
     "not supported"),
    ("tool-schema", {**ANTH, "tools": [{"name": "x"}]}, "tools[0].input_schema", "JSON object"),
    ("tool-choice", {**ANTH, "tool_choice": {"type": "sometimes"}}, "tool_choice.type", "auto, any, tool, none"),
    ("tool-choice-name", {**ANTH, "tools": [{"name": "a", "input_schema": {}}],
                          "tool_choice": {"type": "tool", "name": "b"}}, "tool_choice.name", "not in tools"),
    ("tool-use-no-tools", {**ANTH, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]}, "tools", "must be defined"),
]


@pytest.mark.parametrize("b,path,text", [c[1:] for c in ANTH_ERRORS], ids=[c[0] for c in ANTH_ERRORS])
def test_anthropic_errors(b, path, text):
    msg = raises(fam("anthropic-messages").parse_request, b)
    assert msg.startswith(path + ": ") and text in msg, msg


def test_anthropic_render_response():
    resp = ChatResponse(content=[{"reasoningContent": {"text": "t", "signature": "s"}}, {"text": "42"},
                                 {"toolUse": {"toolUseId": "toolu_1", "name": "f", "input": {"a": 1}}}],
                        stop_reason="tool_use", usage=Usage(30, 265, 3, 4))
    out = fam("anthropic-messages").render_response(resp, "us." + CLAUDE3, response_id="msg_bdrk_X")
    assert out == {"id": "msg_bdrk_X", "type": "message", "role": "assistant", "model": "claude-3-haiku-20240307",
                   "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                               {"type": "text", "text": "42"},
                               {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
                   "stop_reason": "tool_use", "stop_sequence": None,
                   "usage": {"input_tokens": 30, "output_tokens": 265, "cache_creation_input_tokens": 4,
                             "cache_read_input_tokens": 3}}


def test_anthropic_render_default_id_and_stop_sequence():
    resp = ChatResponse(content=[{"text": "x"}], stop_reason="stop_sequence", stop_sequence="END")
    out = fam("anthropic-messages").render_response(resp, CLAUDE3)
    assert out["id"].startswith("msg_bdrk_") and out["stop_reason"] == "stop_sequence" and out["stop_sequence"] == "END"


def feed_all(encoder, events) -> list[dict]:
    out = []
    for e in events:
        out += encoder.feed(e)
    return out


def text_events(*parts, stop="end_turn", usage=Usage(8, 4), latency=511, first_byte=358) -> list[StreamEvent]:
    evs = [StreamEvent("message_start", data={"role": "assistant"})]
    evs += [StreamEvent("block_delta", 0, {"text": p}) for p in parts]
    evs += [StreamEvent("block_stop", 0), StreamEvent("message_stop", data={"stopReason": stop})]
    meta = {"usage": usage, "latencyMs": latency}
    if first_byte is not None:
        meta["firstByteLatencyMs"] = first_byte
    return evs + [StreamEvent("metadata", data=meta)]


METRICS = {"inputTokenCount": 8, "outputTokenCount": 4, "invocationLatency": 511, "firstByteLatency": 358}


def test_anthropic_stream_matches_documented_sequence():
    enc = fam("anthropic-messages").stream_encoder(CLAUDE3, input_tokens=30, response_id="abc")
    chunks = feed_all(enc, text_events("42"))
    assert chunks == [
        {"type": "message_start", "message": {"id": "msg_bdrk_abc", "type": "message", "role": "assistant",
                                              "model": "claude-3-haiku-20240307", "content": [], "stop_reason": None,
                                              "stop_sequence": None, "usage": {"input_tokens": 30, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "42"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 4}},
        {"type": "message_stop", METRICS_KEY: METRICS},
    ]


def test_anthropic_stream_tool_and_thinking_blocks():
    resp = ChatResponse(content=[{"reasoningContent": {"text": "hm", "signature": "sg"}}, {"text": "ok"},
                                 {"toolUse": {"toolUseId": "toolu_9", "name": "f", "input": {"x": 1}}}],
                        stop_reason="tool_use", usage=Usage(1, 2), latency_ms=3)
    chunks = feed_all(fam("anthropic-messages").stream_encoder(CLAUDE3), response_to_events(resp))
    types = [(c["type"], c.get("index"), (c.get("content_block") or c.get("delta") or {}).get("type")) for c in chunks]
    assert types == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None), ("message_delta", None, None), ("message_stop", None, None)]
    assert chunks[8]["content_block"] == {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}
    assert json.loads(chunks[9]["delta"]["partial_json"]) == {"x": 1}
    assert chunks[11]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_stream_input_tokens_from_message_start():
    enc = fam("anthropic-messages").stream_encoder(CLAUDE3)
    first = enc.feed(StreamEvent("message_start", data={"role": "assistant", "usage": Usage(77, 0)}))
    assert first[0]["message"]["usage"]["input_tokens"] == 77


# --- Claude text completions --------------------------------------------------------------------

def test_claude_text_parse_and_render():
    f = fam("anthropic-text")
    req = f.parse_request({"prompt": "\n\nHuman: Tell me a joke\n\nAssistant:", "max_tokens_to_sample": 300,
                           "temperature": 0.5, "top_k": 250, "top_p": 1, "stop_sequences": ["\n\nHuman:"]})
    assert roles(req) == [("user", "Tell me a joke")]
    assert (req.max_tokens, req.top_k, req.stop_sequences) == (300, 250, ["\n\nHuman:"])
    out = f.render_response(ChatResponse(content=[{"text": " Why?"}]), "anthropic.claude-v2")
    assert out == {"type": "completion", "completion": " Why?", "stop_reason": "stop_sequence", "stop": "\n\nHuman:"}
    out = f.render_response(ChatResponse(content=[{"text": "x"}], stop_reason="max_tokens"), "anthropic.claude-v2")
    assert out["stop_reason"] == "max_tokens" and out["stop"] is None


def test_claude_text_errors():
    f = fam("anthropic-text")
    assert raises(f.parse_request, {"prompt": "\n\nHuman: x\n\nAssistant:"}).startswith("max_tokens_to_sample: required")
    assert raises(f.parse_request, {"max_tokens_to_sample": 5}).startswith("prompt: required")


def test_claude_text_stream():
    chunks = feed_all(fam("anthropic-text").stream_encoder("anthropic.claude-v2"), text_events("Hel", "lo"))
    assert chunks == [{"type": "completion", "completion": "Hel", "stop_reason": None, "stop": None},
                      {"type": "completion", "completion": "lo", "stop_reason": None, "stop": None},
                      {"type": "completion", "completion": "", "stop_reason": "stop_sequence", "stop": "\n\nHuman:",
                       METRICS_KEY: METRICS}]


# --- Mistral ------------------------------------------------------------------------------------

def test_mistral_text_parse_documented():
    req = fam("mistral-text").parse_request({"prompt": "<s>[INST] What is your favourite condiment? [/INST]",
                                             "max_tokens": 400, "stop": ["</s>"], "temperature": 0.7,
                                             "top_p": 0.7, "top_k": 50})
    assert roles(req) == [("user", "What is your favourite condiment?")]
    assert (req.max_tokens, req.stop_sequences, req.temperature, req.top_p, req.top_k) == (400, ["</s>"], 0.7, 0.7, 50)


def test_mistral_text_parse_product_doc_example():
    req = fam("mistral-text").parse_request({"prompt": "Say hello from Mistral using Invoke API.", "max_tokens": 50,
                                             "temperature": 0.7})
    assert roles(req) == [("user", "Say hello from Mistral using Invoke API.")] and req.max_tokens == 50


def test_mistral_text_render_and_stream():
    f = fam("mistral-text")
    assert f.render_response(ChatResponse(content=[{"text": "Lemon"}], stop_reason="max_tokens"), "m") == {
        "outputs": [{"text": "Lemon", "stop_reason": "length"}]}
    chunks = feed_all(f.stream_encoder("mistral.mistral-7b-instruct-v0:2"), text_events("Le", "mon"))
    assert chunks == [{"outputs": [{"text": "Le", "stop_reason": None}]},
                      {"outputs": [{"text": "mon", "stop_reason": None}]},
                      {"outputs": [{"text": "", "stop_reason": "stop"}], METRICS_KEY: METRICS}]


MISTRAL_CHAT_BODY = {
    "messages": [{"role": "system", "content": "You are a DJ."},
                 {"role": "user", "content": "What is the most popular song on WZPZ?"},
                 {"role": "assistant", "content": "", "tool_calls": [
                     {"id": "v6RMMiRlT", "function": {"name": "top_song", "arguments": "{\"sign\": \"WZPZ\"}"}}]},
                 {"role": "tool", "tool_call_id": "v6RMMiRlT", "content": "Elemental Hotel"}],
    "tools": [{"type": "function", "function": {"name": "top_song", "description": "Top song",
                                                "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}}}}],
    "tool_choice": "any", "max_tokens": 200, "top_p": 0.9, "temperature": 0.2}


def test_mistral_chat_parse_documented():
    req = fam("mistral-chat").parse_request(MISTRAL_CHAT_BODY)
    assert req.system == ["You are a DJ."]
    assert req.messages[1].content == [{"toolUse": {"toolUseId": "v6RMMiRlT", "name": "top_song",
                                                    "input": {"sign": "WZPZ"}}}]
    assert req.messages[2].content == [{"toolResult": {"toolUseId": "v6RMMiRlT",
                                                       "content": [{"text": "Elemental Hotel"}], "status": "success"}}]
    assert req.tools[0].input_schema["properties"] == {"sign": {"type": "string"}}
    assert req.tool_choice == {"any": {}} and (req.max_tokens, req.top_p, req.temperature) == (200, 0.9, 0.2)


def test_mistral_chat_render_and_stream():
    f = fam("mistral-chat")
    resp = ChatResponse(content=[{"toolUse": {"toolUseId": "c1", "name": "top_song", "input": {"sign": "WZPZ"}}}],
                        stop_reason="tool_use")
    out = f.render_response(resp, "mistral.mistral-large-2407-v1:0")
    assert out == {"choices": [{"index": 0, "message": {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "top_song", "arguments": "{\"sign\": \"WZPZ\"}"}}]},
        "stop_reason": "tool_calls"}]}
    chunks = feed_all(f.stream_encoder("mistral.mistral-large-2407-v1:0"), response_to_events(
        ChatResponse(content=[{"text": "Hi"}, {"toolUse": {"toolUseId": "c1", "name": "f", "input": {"a": 1}}}],
                     stop_reason="tool_use", usage=Usage(8, 4), latency_ms=511)))
    assert chunks[0] == {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "stop_reason": None}]}
    assert chunks[1]["choices"][0]["message"]["tool_calls"] == [{"id": "c1", "function": {"name": "f",
                                                                                         "arguments": "{\"a\":1}"}}]
    assert chunks[-1]["choices"][0]["stop_reason"] == "tool_calls"
    assert chunks[-1][METRICS_KEY]["invocationLatency"] == 511


OPENAI_ERRORS = [
    ("messages-missing", {}, "messages", "required"),
    ("role", {"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "system, user, assistant, tool"),
    ("only-system", {"messages": [{"role": "system", "content": "x"}]}, "messages", "only system"),
    ("blank", {"messages": [{"role": "user", "content": " "}]}, "messages[0].content", "blank"),
    ("args-json", {"messages": [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "a", "function": {"name": "f", "arguments": "{bad"}}]}], "tools": [
        {"type": "function", "function": {"name": "f"}}]}, "messages[0].tool_calls[0].function.arguments", "valid JSON"),
    ("tool-id", {"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "string"),
    ("image-url", {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                               "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url", "data:image"),
    ("tool-choice", {**MSGS, "tool_choice": "maybe"}, "tool_choice", "auto, any"),
    ("n", {**MSGS, "n": 2}, "n", "only 1"),
    ("temperature", {**MSGS, "temperature": 5}, "temperature", "between"),
    ("tools-needed", {"messages": [{"role": "tool", "tool_call_id": "a", "content": "x"}]}, "tools", "must be defined"),
]


@pytest.mark.parametrize("family", ["mistral-chat", "ai21-jamba", "openai-chat"])
@pytest.mark.parametrize("b,path,text", [c[1:] for c in OPENAI_ERRORS], ids=[c[0] for c in OPENAI_ERRORS])
def test_openai_like_errors(family, b, path, text):
    msg = raises(fam(family).parse_request, b)
    assert msg.startswith(path + ": ") and text in msg, msg


def test_openai_like_data_url_image_and_parts():
    req = fam("openai-chat").parse_request({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}}]}],
        "max_completion_tokens": 9, "stop": "END", "model": "ignored"})
    assert req.messages[0].content == [{"text": "What is this?"}, {"image": {"format": "png", "bytes": PNG}}]
    assert req.max_tokens == 9 and req.stop_sequences == ["END"] and "model" not in req.extra


# --- Meta Llama ---------------------------------------------------------------------------------

def test_llama_parse_documented():
    req = fam("meta-llama").parse_request({"prompt": LLAMA3, "temperature": 0.5, "top_p": 0.9, "max_gen_len": 512})
    assert req.system == ["You are a bot."] and roles(req)[-1] == ("user", "What is 2+2?")
    assert (req.temperature, req.top_p, req.max_tokens) == (0.5, 0.9, 512)


def test_llama_vision_images():
    req = fam("meta-llama").parse_request({"prompt": "Describe", "images": [b64(JPEG)]})
    assert req.messages[0].content == [{"image": {"format": "jpeg", "bytes": JPEG}}, {"text": "Describe"}]
    msg = raises(fam("meta-llama").parse_request, {"prompt": "x", "images": [b64(b"text")]})
    assert msg.startswith("images[0]: ")


def test_llama_errors():
    f = fam("meta-llama")
    assert raises(f.parse_request, {"max_gen_len": 5}).startswith("prompt: required")
    assert raises(f.parse_request, {"prompt": "x", "max_gen_len": 0}).startswith("max_gen_len: must be at least 1")
    assert raises(f.parse_request, {"prompt": "x", "top_p": 1.2}).startswith("top_p: must be between")


def test_llama_render_and_stream():
    f = fam("meta-llama")
    out = f.render_response(ChatResponse(content=[{"text": "4"}], usage=Usage(14, 205), stop_reason="max_tokens"), "m")
    assert out == {"generation": "4", "prompt_token_count": 14, "generation_token_count": 205, "stop_reason": "length"}
    chunks = feed_all(f.stream_encoder("meta.llama3-8b-instruct-v1:0", input_tokens=14), text_events("Hello", " there"))
    assert [c["generation"] for c in chunks] == ["Hello", " there", ""]
    assert [c["prompt_token_count"] for c in chunks] == [14, None, None]       # only in the first chunk
    assert [c["stop_reason"] for c in chunks] == [None, None, "stop"]          # only in the last chunk
    assert chunks[-1]["generation_token_count"] == 4 and chunks[-1][METRICS_KEY] == METRICS


# --- Titan text ---------------------------------------------------------------------------------

def test_titan_parse_documented():
    req = fam("titan-text").parse_request({"inputText": "User: Tell me a story\nBot:", "textGenerationConfig": {
        "temperature": 0.7, "topP": 0.9, "maxTokenCount": 512, "stopSequences": ["|"]}})
    assert roles(req) == [("user", "Tell me a story")]
    assert (req.temperature, req.top_p, req.max_tokens, req.stop_sequences) == (0.7, 0.9, 512, ["|"])


def test_titan_errors():
    f = fam("titan-text")
    assert raises(f.parse_request, {}).startswith("inputText: required")
    msg = raises(f.parse_request, {"inputText": "x", "textGenerationConfig": {"maxTokenCount": -1}})
    assert msg.startswith("textGenerationConfig.maxTokenCount: ")
    msg = raises(f.parse_request, {"inputText": "x", "textGenerationConfig": {"stopSequences": "|"}})
    assert msg.startswith("textGenerationConfig.stopSequences: ")


@pytest.mark.parametrize("stop,reason", [("end_turn", "FINISH"), ("max_tokens", "LENGTH"),
                                         ("stop_sequence", "STOP_CRITERIA_MET"), ("content_filtered", "CONTENT_FILTERED")])
def test_titan_render(stop, reason):
    out = fam("titan-text").render_response(ChatResponse(content=[{"text": "Once"}], stop_reason=stop,
                                                         usage=Usage(5, 7)), "amazon.titan-text-express-v1")
    assert out == {"inputTextTokenCount": 5, "results": [{"tokenCount": 7, "outputText": "Once",
                                                          "completionReason": reason}]}


def test_titan_stream():
    chunks = feed_all(fam("titan-text").stream_encoder("amazon.titan-text-express-v1", input_tokens=5),
                      text_events("Once", " upon"))
    assert chunks[0] == {"outputText": "Once", "index": 0, "totalOutputTextTokenCount": None,
                         "completionReason": None, "inputTextTokenCount": 5}
    assert chunks[1]["inputTextTokenCount"] is None
    assert chunks[-1] == {"outputText": "", "index": 0, "totalOutputTextTokenCount": 4, "completionReason": "FINISH",
                          "inputTextTokenCount": None, METRICS_KEY: METRICS}


# --- Nova ---------------------------------------------------------------------------------------

NOVA_BODY = {"schemaVersion": "messages-v1", "system": [{"text": "Be helpful."}],
             "messages": [{"role": "user", "content": [
                 {"text": "Describe"}, {"image": {"format": "png", "source": {"bytes": b64(PNG)}}}]}],
             "inferenceConfig": {"max_new_tokens": 300, "temperature": 0.3, "topP": 0.1, "topK": 20,
                                 "stopSequences": ["END"], "reasoningConfig": {"type": "enabled"}},
             "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}],
                            "toolChoice": {"auto": {}}}}


def test_nova_parse_documented():
    req = fam("nova").parse_request(NOVA_BODY)
    assert req.system == ["Be helpful."]
    assert req.messages[0].content[1] == {"image": {"format": "png", "bytes": PNG}}
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k, req.stop_sequences) == (300, 0.3, 0.1, 20, ["END"])
    assert req.tools[0].name == "f" and req.tool_choice == {"auto": {}}
    assert req.extra == {"inferenceConfig": {"reasoningConfig": {"type": "enabled"}}}
    req2 = fam("nova").parse_request({**MSGS_NOVA, "inferenceConfig": {"maxTokens": 7}})
    assert req2.max_tokens == 7


MSGS_NOVA = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def test_nova_errors():
    f = fam("nova")
    assert raises(f.parse_request, {**MSGS_NOVA, "schemaVersion": "v2"}).startswith("schemaVersion: ")
    assert raises(f.parse_request, {**MSGS_NOVA, "inferenceConfig": {"max_new_tokens": 0}}).startswith(
        "inferenceConfig.max_new_tokens: must be at least 1")
    assert raises(f.parse_request, {"messages": [{"role": "user", "content": "hi"}]}).startswith("messages[0].content: ")
    msg = raises(f.parse_request, {"messages": [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": b64(JPEG)}}}]}]})
    assert msg.startswith("messages[0].content[0].image.source.bytes: ") and "look like jpeg" in msg


def test_nova_render_and_stream():
    f = fam("nova")
    resp = ChatResponse(content=[{"text": "Hi"}], usage=Usage(3, 2, 1, 0))
    assert f.render_response(resp, "amazon.nova-lite-v1:0") == {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5, "cacheReadInputTokenCount": 1,
                  "cacheWriteInputTokenCount": 0}}
    chunks = feed_all(f.stream_encoder("amazon.nova-lite-v1:0"), text_events("Hi"))
    assert chunks[:4] == [{"messageStart": {"role": "assistant"}},
                          {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hi"}}},
                          {"contentBlockStop": {"contentBlockIndex": 0}},
                          {"messageStop": {"stopReason": "end_turn"}}]
    assert chunks[4]["metadata"]["usage"]["inputTokens"] == 8 and chunks[4][METRICS_KEY] == METRICS
    assert len(chunks) == 5


# --- Cohere -------------------------------------------------------------------------------------

def test_command_r_parse_documented():
    req = fam("cohere-command-r").parse_request({
        "message": "And the third?", "preamble": "You are terse.",
        "chat_history": [{"role": "USER", "message": "Name a planet"}, {"role": "CHATBOT", "message": "Mars"}],
        "documents": [{"title": "t", "snippet": "s"}], "max_tokens": 100, "temperature": 0.3, "p": 0.75, "k": 0,
        "stop_sequences": ["\n"], "seed": 7})
    assert req.system == ["You are terse."]
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
    call = req.messages[1].content[0]["toolUse"]
    result = req.messages[2].content[0]["toolResult"]
    assert call["name"] == "query_daily_sales_report" and result["toolUseId"] == call["toolUseId"]
    assert result["content"] == [{"json": {"total": 10000}}]


def test_command_r_tool_result_without_call_gets_synthetic_tool_use():
    req = fam("cohere-command-r").parse_request({
        "message": "weather?", "tools": [{"name": "w", "parameter_definitions": {}}],
        "tool_results": [{"call": {"name": "w", "parameters": {}}, "outputs": [{"t": 20}]}]})
    assert [m.role for m in req.messages] == ["user", "assistant", "user"]
    assert req.messages[1].content[0]["toolUse"]["toolUseId"] == req.messages[2].content[0]["toolResult"]["toolUseId"]


def test_command_r_errors():
    f = fam("cohere-command-r")
    assert raises(f.parse_request, {}).startswith("message: required")
    assert raises(f.parse_request, {"message": " "}).startswith("message: is blank")
    assert raises(f.parse_request, {"message": "x", "chat_history": [{"role": "BOT", "message": "y"}]}).startswith(
        "chat_history[0].role: ")
    assert raises(f.parse_request, {"message": "x", "p": 2}).startswith("p: must be between")


def test_command_r_render_and_stream():
    f = fam("cohere-command-r")
    out = f.render_response(ChatResponse(content=[{"text": "Hi"}, {"toolUse": {"toolUseId": "x", "name": "w",
                                                                                 "input": {"c": 1}}}],
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
    out = f.render_response(ChatResponse(content=[{"text": "A cloud"}]), "cohere.command-text-v14")
    assert out["generations"][0]["text"] == "A cloud" and out["generations"][0]["finish_reason"] == "COMPLETE"
    assert set(out) == {"generations", "id"}
    chunks = feed_all(f.stream_encoder("cohere.command-text-v14"), text_events("A", " cloud"))
    assert [c["generations"][0]["text"] for c in chunks] == ["A", " cloud", ""]
    assert [c["generations"][0]["finish_reason"] for c in chunks] == [None, None, "COMPLETE"]
    assert chunks[-1][METRICS_KEY] == METRICS


# --- AI21 ---------------------------------------------------------------------------------------

def test_jamba_parse_render_stream():
    f = fam("ai21-jamba")
    req = f.parse_request({"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
                           "n": 1, "max_tokens": 10, "temperature": 0.7, "top_p": 1, "stop": ["\n"],
                           "frequency_penalty": 0.1, "presence_penalty": 0})
    assert req.system == ["Be brief"] and roles(req) == [("user", "Hi")]
    assert req.extra == {"frequency_penalty": 0.1, "presence_penalty": 0}
    out = f.render_response(ChatResponse(content=[{"text": "Hello"}], stop_reason="max_tokens", usage=Usage(3, 2)),
                            "ai21.jamba-1-5-mini-v1:0", response_id="r1")
    assert out == {"id": "r1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                             "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    chunks = feed_all(f.stream_encoder("ai21.jamba-1-5-mini-v1:0"), text_events("Hel", "lo"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert chunks[1]["choices"][0]["delta"] == {"content": "lo"}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[-1]["usage"]["total_tokens"] == 12 and chunks[-1][METRICS_KEY] == METRICS


def test_openai_generic_stream_tool_calls():
    resp = ChatResponse(content=[{"toolUse": {"toolUseId": "call_1", "name": "f", "input": {"a": 1}}}],
                        stop_reason="tool_use", usage=Usage(1, 1))
    chunks = feed_all(fam("openai-chat").stream_encoder("openai.gpt-oss-120b-1:0"), response_to_events(resp))
    assert chunks[0]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]
    assert json.loads(chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]) == {"a": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    out = fam("openai-chat").render_response(resp, "openai.gpt-oss-120b-1:0")
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"


def test_jurassic_parse_render_no_stream():
    f = fam("ai21-jurassic")
    req = f.parse_request({"prompt": "Hi", "maxTokens": 50, "temperature": 0.5, "topP": 1, "stopSequences": ["##"],
                           "countPenalty": {"scale": 0}})
    assert roles(req) == [("user", "Hi")] and req.max_tokens == 50 and req.stop_sequences == ["##"]
    assert req.extra == {"countPenalty": {"scale": 0}}
    out = f.render_response(ChatResponse(content=[{"text": "Yo"}], stop_reason="max_tokens"), "ai21.j2-ultra-v1")
    assert out["completions"] == [{"data": {"text": "Yo", "tokens": []}, "finishReason": {"reason": "length"}}]
    assert isinstance(out["id"], int) and out["prompt"] == {"text": "", "tokens": []}
    assert f.streams is False
    assert raises(f.stream_encoder, "ai21.j2-ultra-v1") == "The model is unsupported for streaming"


# --- embeddings ---------------------------------------------------------------------------------

def test_titan_embed_v2():
    f = fam("titan-embed")
    req = f.parse_request({"inputText": "hello", "dimensions": 256, "normalize": True,
                           "embeddingTypes": ["float", "binary"]})
    assert isinstance(req, EmbedRequest) and req.texts == ["hello"] and req.dimensions == 256
    assert req.extra == {"normalize": True, "embeddingTypes": ["float", "binary"]}
    out = f.render_embed_response(EmbedResponse([[0.5, -0.25, 0.0]], 2), req=req,
                                  model_id="amazon.titan-embed-text-v2:0")
    assert out == {"embedding": [0.5, -0.25, 0.0], "inputTextTokenCount": 2,
                   "embeddingsByType": {"float": [0.5, -0.25, 0.0], "binary": [1, 0, 0]}}
    # V2 always has embeddingsByType; G1 never
    assert f.render_embed_response(EmbedResponse([[1.0]], 1), model_id="amazon.titan-embed-text-v2:0")[
        "embeddingsByType"] == {"float": [1.0]}
    assert f.render_embed_response(EmbedResponse([[1.0]], 1), model_id="amazon.titan-embed-text-v1") == {
        "embedding": [1.0], "inputTextTokenCount": 1}


@pytest.mark.parametrize("b,path", [({}, "inputText"), ({"inputText": ""}, "inputText"),
                                    ({"inputText": "x", "dimensions": 100}, "dimensions"),
                                    ({"inputText": "x", "normalize": "yes"}, "normalize"),
                                    ({"inputText": "x", "embeddingTypes": ["int8"]}, "embeddingTypes[0]"),
                                    ({"inputImage": "AAAA"}, "inputImage")])
def test_titan_embed_errors(b, path):
    assert raises(fam("titan-embed").parse_request, b).startswith(path + ": ")


def test_cohere_embed():
    f = fam("cohere-embed")
    req = f.parse_request({"texts": ["a", "b"], "input_type": "search_document", "truncate": "END"})
    assert req.texts == ["a", "b"] and req.extra == {"input_type": "search_document", "truncate": "END"}
    out = f.render_embed_response(EmbedResponse([[0.1], [0.2]], 2), req=req, model_id="cohere.embed-english-v3")
    assert out["embeddings"] == [[0.1], [0.2]] and out["response_type"] == "embeddings_floats"
    assert out["texts"] == ["a", "b"] and len(out["id"]) == 36
    req = f.parse_request({"texts": ["a"], "input_type": "search_query", "embedding_types": ["float"]})
    out = f.render_embed_response(EmbedResponse([[0.3]], 1), req=req)
    assert out["embeddings"] == {"float": [[0.3]]} and out["response_type"] == "embeddings_by_type"


@pytest.mark.parametrize("b,path,text", [
    ({"input_type": "search_query"}, "texts", "required"),
    ({"texts": [], "input_type": "search_query"}, "texts", "non-empty"),
    ({"texts": ["x"] * 97, "input_type": "search_query"}, "texts", "at most 96"),
    ({"texts": ["x", 1], "input_type": "search_query"}, "texts[1]", "string"),
    ({"texts": ["x"]}, "input_type", "required"),
    ({"texts": ["x"], "input_type": "search"}, "input_type", "search_document"),
    ({"texts": ["x"], "input_type": "clustering", "truncate": "MIDDLE"}, "truncate", "NONE, START, END"),
    ({"texts": ["x"], "input_type": "clustering", "embedding_types": ["int8"]}, "embedding_types[0]", "not supported"),
])
def test_cohere_embed_errors(b, path, text):
    msg = raises(fam("cohere-embed").parse_request, b)
    assert msg.startswith(path + ": ") and text in msg, msg


@pytest.mark.parametrize("name", ["titan-embed", "cohere-embed"])
def test_embedding_families_do_not_stream_or_chat(name):
    f = fam(name)
    assert f.kind == "embed" and f.streams is False
    assert raises(f.stream_encoder, "x") == "The model is unsupported for streaming"
    with pytest.raises(GatewayError):
        f.render_response(ChatResponse(content=[]), "x")


# --- properties every streaming family shares ---------------------------------------------------

STREAMING = sorted(n for n, f in FAMILIES.items() if f.streams)
RICH = ChatResponse(content=[{"reasoningContent": {"text": "hm", "signature": "s"}}, {"text": "Hello"},
                             {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"x": [1]}}}],
                    stop_reason="tool_use", usage=Usage(8, 4, 2, 1), latency_ms=511)


def test_the_streaming_set_is_what_we_expect():
    assert STREAMING == sorted(["anthropic-messages", "anthropic-text", "mistral-text", "mistral-chat", "meta-llama",
                                "titan-text", "nova", "cohere-command-r", "cohere-command", "ai21-jamba",
                                "openai-chat"])


@pytest.mark.parametrize("name", STREAMING)
def test_metrics_ride_on_the_last_chunk_only(name):
    chunks = feed_all(fam(name).stream_encoder("x.model"), response_to_events(RICH))
    json.dumps(chunks)  # plain JSON, no bytes or objects
    assert chunks[-1][METRICS_KEY] == {"inputTokenCount": 8, "outputTokenCount": 4, "invocationLatency": 511,
                                       "firstByteLatency": 511, "cacheReadInputTokenCount": 2,
                                       "cacheWriteInputTokenCount": 1}
    assert all(METRICS_KEY not in c for c in chunks[:-1])


@pytest.mark.parametrize("name", STREAMING)
def test_metadata_alone_still_yields_a_final_chunk(name):
    # an empty answer: the encoder must still end the stream with the metrics
    enc = fam(name).stream_encoder("x.model")
    out = enc.feed(StreamEvent("metadata", data={"usage": {"in": 3, "out": 0}, "latencyMs": 9, "firstByteLatencyMs": 4}))
    assert out and out[-1][METRICS_KEY] == {"inputTokenCount": 3, "outputTokenCount": 0, "invocationLatency": 9,
                                            "firstByteLatency": 4}


@pytest.mark.parametrize("name", STREAMING)
def test_stream_text_concatenates_to_the_answer(name):
    f = fam(name)
    chunks = feed_all(f.stream_encoder("x.model"), text_events("Hel", "lo", " world"))
    text = "".join(_chunk_text(name, c) for c in chunks)
    assert text == "Hello world"


def _chunk_text(name: str, c: dict) -> str:
    if name == "anthropic-messages":
        return c.get("delta", {}).get("text", "") if c["type"] == "content_block_delta" else ""
    if name == "anthropic-text":
        return c["completion"]
    if name == "mistral-text":
        return c["outputs"][0]["text"]
    if name == "mistral-chat":
        return c["choices"][0]["message"].get("content") or ""
    if name == "meta-llama":
        return c["generation"]
    if name == "titan-text":
        return c["outputText"]
    if name == "nova":
        return c.get("contentBlockDelta", {}).get("delta", {}).get("text", "")
    if name == "cohere-command-r":
        return c["text"] if c["event_type"] == "text-generation" else ""
    if name == "cohere-command":
        return c["generations"][0]["text"]
    return c["choices"][0]["delta"].get("content") or ""  # ai21-jamba, openai-chat


@pytest.mark.parametrize("name", STREAMING)
def test_encoders_are_independent(name):
    f = fam(name)
    a, b = f.stream_encoder("x.model"), f.stream_encoder("x.model")
    feed_all(a, text_events("one"))
    assert feed_all(b, text_events("two")) == feed_all(f.stream_encoder("x.model"), text_events("two"))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_renders_plain_json(name):
    f = fam(name)
    if f.kind == "embed":
        out = f.render_embed_response(EmbedResponse([[0.1, 0.2]], 3), model_id="x")
    else:
        out = f.render_response(RICH, "x.model")
    json.dumps(out)


def test_family_modules_import_no_io_libraries():
    code = ("import sys\n"
            "for m in ('trio', 'httpx', 'zmq', 'socket'): sys.modules[m] = None\n"
            "import finops.workers.formats.bedrock.converse, finops.workers.formats.bedrock.families\n"
            "from finops.workers.formats import meta, titan, nova, cohere, ai21, embeddings, prompts\n"
            "from finops.workers.formats.anthropic import invoke\n"
            "from finops.workers.formats.mistral import invoke\n"
            "from finops.workers.formats.openai import invoke\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
