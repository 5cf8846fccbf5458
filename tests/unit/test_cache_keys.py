"""The response cache's keys (workers/cache/keys.py): what makes two requests "the same question in
the same context". A scope key that misses a context part serves one conversation's answer to
another; one that includes the question stops paraphrases from ever matching; one that changes
between processes loses the cache on every restart."""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st
from msgspec.structs import replace

from finops.shared.model import (ChatRequest, DocumentBlock, ImageBlock, Message, TextBlock, Tool, ToolChoice,
                                 ToolResultBlock, ToolUseBlock)
from finops.workers.cache import keys
from finops.workers.formats.bedrock import converse, families

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
OTHER_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(1, 65))
OP, MODEL, OWNER = "converse", "anthropic.claude-3-haiku-20240307-v1:0", "key:vk-alice"


def base_request(question: str = "How do I reverse a list in Python?") -> ChatRequest:
    return ChatRequest(
        messages=[Message("user", [TextBlock("Hi, I write Python.")]),
                  Message("assistant", [TextBlock("Great, ask away.")]),
                  Message("user", [TextBlock(question)])],
        system=["You are terse."],
        max_tokens=256, temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["\n\nHuman:"],
        tools=[Tool("search", "web search", {"type": "object", "properties": {"q": {"type": "string"}}})],
        tool_choice=ToolChoice("auto"),
        extra={"anthropic_beta": ["x"]},
    )


def with_message(req: ChatRequest, i: int, *blocks, content=None) -> ChatRequest:
    """`req` with message `i`'s content replaced by `content`, or with `blocks` added to it."""
    m = req.messages[i]
    new = Message(m.role, (*m.content, *blocks) if content is None else content)
    return replace(req, messages=(*req.messages[:i], new, *req.messages[i + 1:]) if i != -1
                   else (*req.messages[:-1], new))


def keys_of(req: ChatRequest, op=OP, model=MODEL, owner=OWNER) -> tuple[str, str, str]:
    ctx, question = keys.split(req)
    scope = keys.scope_key(op, model, owner, ctx)
    return scope, keys.exact_key(scope, question), question


def scope_of(req: ChatRequest, op=OP, model=MODEL, owner=OWNER) -> str:
    return keys_of(req, op, model, owner)[0]


# --- determinism --------------------------------------------------------------------------------

def test_same_request_same_keys():
    assert keys_of(base_request()) == keys_of(base_request())
    scope, exact, _ = keys_of(base_request())
    assert len(scope) == len(exact) == 64 and int(scope, 16) >= 0 and scope != exact


def test_split_does_not_mutate_the_request():
    req = with_message(base_request(), -1, ImageBlock("png", PNG), ToolUseBlock("t", "n", {"deep": ["json"]}))
    before = copy.deepcopy(req)
    keys_of(req)
    assert req == before      # the pipeline still forwards the request after planning the cache


SUBPROCESS = r"""
import json
from finops.shared.model import ChatRequest, ImageBlock, Message, TextBlock, Tool
from finops.workers.cache import keys
req = ChatRequest(messages=[Message("user", [TextBlock("earlier")]), Message("assistant", [TextBlock("ok")]),
                            Message("user", [TextBlock("the question"), ImageBlock("png", bytes(range(32)))])],
                  system=["sys"], temperature=0.5, tools=[Tool("t", "d")], extra={"b": 1, "a": {"y": 2, "x": 1}})
ctx, q = keys.split(req)
s = keys.scope_key("converse", "m", "key:vk", ctx)
print(json.dumps([s, keys.exact_key(s, q), keys.explicit_key("converse", "m", "key:vk", "K")]))
"""


def _in_process_keys():
    req = ChatRequest(messages=[Message("user", [TextBlock("earlier")]), Message("assistant", [TextBlock("ok")]),
                                Message("user", [TextBlock("the question"), ImageBlock("png", bytes(range(32)))])],
                      system=["sys"], temperature=0.5, tools=[Tool("t", "d")],
                      extra={"a": {"x": 1, "y": 2}, "b": 1})      # other insertion order: keys are sorted
    ctx, q = keys.split(req)
    s = keys.scope_key("converse", "m", "key:vk", ctx)
    return [s, keys.exact_key(s, q), keys.explicit_key("converse", "m", "key:vk", "K")]


@pytest.mark.parametrize("hashseed", ["0", "12345", "random"])
def test_keys_are_the_same_in_a_fresh_process(hashseed):
    """No per-process salt (Python's hash()): a restarted gateway finds its cached answers."""
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    out = subprocess.run([sys.executable, "-c", SUBPROCESS], capture_output=True, text=True, env=env,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == _in_process_keys()


# --- context and question -------------------------------------------------------------------------

def test_question_is_only_the_last_user_text():
    ctx, q = keys.split(base_request("What is 2+2?"))
    assert q == "What is 2+2?"
    # the earlier user turn is context, not question
    assert ctx["messages"][0]["content"] == [{"text": "Hi, I write Python."}]
    assert ctx["messages"][-1] == {"role": "user", "content": []}


def test_several_text_blocks_are_joined_into_the_question():
    req = ChatRequest(messages=[Message("user", [TextBlock("part one, "), TextBlock("part two")])])
    assert keys.split(req)[1] == "part one, part two"


def test_non_text_blocks_of_the_last_message_stay_in_the_context():
    image = ImageBlock("png", PNG)
    document = DocumentBlock("notes", "txt", text="document body")
    tool_result = ToolResultBlock("t1", [TextBlock("42")], "success")
    req = ChatRequest(messages=[Message("user", [TextBlock("Describe these."), image, document, tool_result])])
    ctx, q = keys.split(req)
    assert q == "Describe these."
    kept = ctx["messages"][-1]["content"]
    assert len(kept) == 3
    assert kept[0] == {"image": {"format": "png", "bytes": {"$sha256": hashlib.sha256(PNG).hexdigest()}}}
    assert kept[1] == {"document": {"format": "txt", "name": "notes", "text": "document body"}}  # nested text
    assert kept[2] == {"toolResult": {"toolUseId": "t1", "content": [{"text": "42"}], "status": "success"}}


def test_tool_result_text_is_not_the_question():
    req = ChatRequest(messages=[
        Message("user", [TextBlock("weather?")]),
        Message("assistant", [ToolUseBlock("t1", "w", {})]),
        Message("user", [ToolResultBlock("t1", [TextBlock("sunny")])])])
    ctx, q = keys.split(req)
    assert q == ""
    other = with_message(req, -1, content=[ToolResultBlock("t1", [TextBlock("rain")])])
    assert scope_of(req) != scope_of(other)       # a different tool result is a different context


def test_assistant_last_request_has_an_empty_question():
    base = base_request()
    req = replace(base, messages=(*base.messages, Message("assistant", [TextBlock("Sure: ")])))
    ctx, q = keys.split(req)
    assert q == ""
    assert ctx["messages"][-1] == {"role": "assistant", "content": [{"text": "Sure: "}]}
    # the whole request is context: the prefill and the user's question both separate scopes
    other = with_message(req, -1, content=[TextBlock("Of course: ")])
    assert scope_of(req) != scope_of(other)
    other = with_message(req, len(req.messages) - 2, content=[TextBlock("another question")])
    assert scope_of(req) != scope_of(other)


def test_empty_messages():
    ctx, q = keys.split(ChatRequest(messages=[]))
    assert q == "" and ctx["messages"] == []


# --- every context part separates scopes; the question does not -----------------------------------

def _mutations():
    def tool(**kw):
        return lambda r: replace(r, tools=(replace(r.tools[0], **kw),))
    return {
        "system": lambda r: replace(r, system=(*r.system, "Answer in French.")),
        "system_text": lambda r: replace(r, system=("You are verbose.",)),
        "earlier_user_turn": lambda r: with_message(r, 0, content=[TextBlock("Hi, I write Rust.")]),
        "earlier_assistant_turn": lambda r: with_message(r, 1, content=[TextBlock("Fine.")]),
        "extra_turn": lambda r: replace(r, messages=(Message("user", [TextBlock("x")]), *r.messages)),
        "tools_added": lambda r: replace(r, tools=(*r.tools, Tool("calc"))),
        "tool_description": tool(description="other"),
        "tool_schema": tool(input_schema={"type": "object"}),
        "tools_removed": lambda r: replace(r, tools=()),
        "tool_choice": lambda r: replace(r, tool_choice=ToolChoice("any")),
        "tool_choice_none": lambda r: replace(r, tool_choice=None),
        "max_tokens": lambda r: replace(r, max_tokens=257),
        "temperature": lambda r: replace(r, temperature=0.3),
        "temperature_unset": lambda r: replace(r, temperature=None),
        "top_p": lambda r: replace(r, top_p=0.95),
        "top_k": lambda r: replace(r, top_k=41),
        "stop_sequences": lambda r: replace(r, stop_sequences=(*r.stop_sequences, "STOP")),
        "extra_added": lambda r: replace(r, extra={**r.extra, "thinking": {"type": "enabled"}}),
        "extra_value": lambda r: replace(r, extra={**r.extra, "anthropic_beta": ["y"]}),
        "image_in_last_message": lambda r: with_message(r, -1, ImageBlock("png", PNG)),
        "document_in_last_message": lambda r: with_message(r, -1, DocumentBlock("d", "pdf", data=b"%PDF-1.4")),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_context_part_changes_the_scope_key(name):
    a = base_request()
    b = MUTATIONS[name](base_request())
    assert b != a
    assert scope_of(a) != scope_of(b)
    # and so the exact key too, although the question is the same
    assert keys_of(a)[1] != keys_of(b)[1]
    assert keys_of(a)[2] == keys_of(b)[2] == "How do I reverse a list in Python?"


@pytest.mark.parametrize("part, value", [("op", "converse-stream"), ("model", "amazon.nova-lite-v1:0"),
                                         ("owner", "key:vk-bob"), ("owner", "anonymous"),
                                         ("owner", "shared:claude")])
def test_op_model_and_owner_change_the_scope_key(part, value):
    req = base_request()
    base = keys_of(req)
    other = keys_of(req, **{part: value})
    assert other[0] != base[0] and other[1] != base[1]


def test_the_question_does_not_change_the_scope_key():
    a, b = base_request("How do I reverse a list in Python?"), base_request("how to reverse a python list")
    assert scope_of(a) == scope_of(b)
    assert keys_of(a)[1] != keys_of(b)[1]


def test_image_bytes_count_by_content():
    def with_image(data):
        return with_message(base_request(), -1, ImageBlock("png", data))
    same = bytes(bytearray(PNG))          # equal content, another object
    assert scope_of(with_image(PNG)) == scope_of(with_image(same))
    assert scope_of(with_image(bytearray(PNG))) == scope_of(with_image(PNG))
    assert scope_of(with_image(PNG)) != scope_of(with_image(OTHER_PNG))
    # an image in an earlier turn too
    r1 = with_message(base_request(), 0, ImageBlock("png", PNG))
    r2 = with_message(base_request(), 0, ImageBlock("png", OTHER_PNG))
    assert scope_of(r1) != scope_of(r2)


def test_extra_field_order_does_not_matter():
    a = replace(base_request(), extra={"x": 1, "y": {"p": 1, "q": 2}})
    b = replace(base_request(), extra={"y": {"q": 2, "p": 1}, "x": 1})
    assert scope_of(a) == scope_of(b)


def test_message_boundary_is_part_of_the_context():
    """Moving text between turns is another conversation, even with the same concatenation."""
    a = ChatRequest(messages=[Message("user", [TextBlock("ab")]), Message("assistant", [TextBlock("c")]),
                              Message("user", [TextBlock("q")])])
    b = ChatRequest(messages=[Message("user", [TextBlock("a")]), Message("assistant", [TextBlock("bc")]),
                              Message("user", [TextBlock("q")])])
    assert scope_of(a) != scope_of(b)


# --- exact and explicit keys -----------------------------------------------------------------------

def test_exact_key_normalises_whitespace_and_unicode():
    scope = scope_of(base_request())
    k = keys.exact_key(scope, "What is  the café?")
    assert keys.exact_key(scope, "  What is\tthe\n café?  ") == k
    assert keys.exact_key(scope, "What is the cafe\u0301?") == k        # NFD -> NFC
    assert keys.exact_key(scope, "What is the café?") == k


def test_exact_key_is_case_sensitive_and_question_sensitive():
    scope = scope_of(base_request())
    k = keys.exact_key(scope, "print(x)")
    assert keys.exact_key(scope, "Print(x)") != k
    assert keys.exact_key(scope, "print(y)") != k
    assert keys.exact_key(scope, "print (x)") != k        # whitespace inside a word boundary matters
    assert keys.exact_key(scope_of(base_request(), owner="key:other"), "print(x)") != k


def test_normalise():
    assert keys.normalise("  a \u00a0 b\r\n\tc ") == "a b c"
    assert keys.normalise("e\u0301") == "\u00e9"
    assert keys.normalise("ABC") == "ABC"


def test_explicit_key_separates_owner_op_and_model_and_ignores_the_question():
    k = keys.explicit_key(OP, MODEL, OWNER, "faq-1")
    assert keys.explicit_key(OP, MODEL, OWNER, "faq-1") == k
    assert keys.explicit_key(OP, MODEL, "key:vk-bob", "faq-1") != k
    assert keys.explicit_key(OP, MODEL, "anonymous", "faq-1") != k
    assert keys.explicit_key("converse-stream", MODEL, OWNER, "faq-1") != k
    assert keys.explicit_key(OP, "amazon.nova-lite-v1:0", OWNER, "faq-1") != k
    assert keys.explicit_key(OP, MODEL, OWNER, "faq-2") != k
    # the explicit key takes no question, and never collides with the exact key of a request
    scope, exact, _ = keys_of(base_request())
    assert k not in (scope, exact)


def test_explicit_key_cannot_be_forged_by_separator_tricks():
    assert keys.explicit_key("a", "b|c", "o", "k") != keys.explicit_key("a", "b", "c|o", "k")
    assert keys.scope_key("a", "b", "o", {}) != keys.scope_key("a", "", "o", {"b": None})


# --- owners ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key_id, shared, expected", [
    ("vk-1", None, "key:vk-1"),
    (None, None, "anonymous"),
    ("", None, "anonymous"),
    ("vk-1", "claude", "shared:claude"),
    (None, "claude", "shared:claude"),
])
def test_owner(key_id, shared, expected):
    assert keys.owner(key_id, shared) == expected


@pytest.mark.parametrize("name, expected", [
    (None, None),
    ("anonymous", "anonymous"),
    ("shared:claude", "shared:claude"),
    ("vk-1", "key:vk-1"),
    ("AKIAEXAMPLE", "key:AKIAEXAMPLE"),
])
def test_owner_named(name, expected):
    assert keys.owner_named(name) == expected


def test_owner_named_matches_what_owner_stores():
    """`finops cache clear --key vk-1` must name the owner the entries were stored under."""
    assert keys.owner_named("vk-1") == keys.owner("vk-1")
    assert keys.owner_named("anonymous") == keys.owner(None)
    assert keys.owner_named("shared:r") == keys.owner("vk-1", "r")


# --- properties ------------------------------------------------------------------------------------

_text = st.text(max_size=40)
_block = st.one_of(
    st.builds(TextBlock, _text),
    st.builds(lambda b: ImageBlock("png", b), st.binary(max_size=16)),
    st.builds(lambda t: ToolResultBlock("t", [TextBlock(t)]), _text),
)
_turn = st.builds(Message, st.sampled_from(["user", "assistant"]), st.lists(_block, max_size=3))
_requests = st.builds(
    lambda turns, last_extra, system, temp, top_k, tools, extra: ChatRequest(
        messages=turns + [Message("user", last_extra)], system=system, temperature=temp, top_k=top_k,
        tools=tools, extra=extra),
    st.lists(_turn, max_size=4),
    st.lists(_block.filter(lambda b: type(b) is not TextBlock), max_size=2),
    st.lists(_text, max_size=2),
    st.one_of(st.none(), st.floats(0, 1)),
    st.one_of(st.none(), st.integers(0, 500)),
    st.lists(st.builds(Tool, st.text(min_size=1, max_size=8)), max_size=2),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), _text), max_size=2),
)


def _with_question(req: ChatRequest, question: str) -> ChatRequest:
    return with_message(req, -1, content=(TextBlock(question), *req.messages[-1].content))


@settings(max_examples=200, deadline=None)
@given(_requests, _text, _text)
def test_only_the_last_user_text_changing_keeps_the_scope(req, q1, q2):
    a, b = _with_question(req, q1), _with_question(req, q2)
    sa, ea, qa = keys_of(a)
    sb, eb, qb = keys_of(b)
    assert (qa, qb) == (q1, q2)
    assert sa == sb
    assert (ea == eb) == (keys.normalise(q1) == keys.normalise(q2))


@settings(max_examples=200, deadline=None)
@given(_requests, _text, st.integers(0, 10),
       _block.filter(lambda b: type(b) is not TextBlock) | _text.map(lambda t: TextBlock(t + "!")))
def test_a_change_to_an_earlier_turn_changes_the_scope(req, q, where, block):
    a = _with_question(req, q)
    i = where % len(a.messages)
    if i == len(a.messages) - 1 and type(block) is TextBlock:
        # text in the last message would be question
        b = replace(a, messages=(Message("user", [block]), *a.messages))
    else:
        b = with_message(a, i, block)
    assert scope_of(a) != scope_of(b)


# --- keys of parsed requests are pinned --------------------------------------------------------------
# A cache outlives the gateway's code: entries stored by one version must still be found by the next
# (a change of the canonical form bumps keys.VERSION instead). These are the keys of requests each
# client format parses into, with every kind of content block, as the gateway computed them when
# this test was written; a refactoring of the canonical model must leave them unchanged.

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


B64_PNG = base64.b64encode(PNG).decode()
PINNED_BODIES = {
    "converse-every-block": {
        "system": [{"text": "You are terse."}, {"cachePoint": {"type": "default"}}],
        "messages": [
            {"role": "user", "content": [
                {"text": "Look at these."},
                {"image": {"format": "png", "source": {"bytes": B64_PNG}}},
                {"document": {"format": "pdf", "name": "report", "source": {"bytes": _b64(b"%PDF-1.4 x")}}},
                {"document": {"name": "notes", "source": {"text": "plain notes"}, "context": "ctx"}},
                {"guardContent": {"text": {"text": "guarded"}}},
                {"citationsContent": {"content": [{"text": "cited"}]}}]},
            {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
                {"reasoningContent": {"redactedContent": _b64(b"\x01\x02")}},
                {"text": "Calling."},
                {"toolUse": {"toolUseId": "tu_1", "name": "lookup", "input": {"q": "x", "n": [1, 2.5]}}}]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "tu_1", "status": "error", "content": [
                    {"text": "found"}, {"json": {"k": "v"}},
                    {"image": {"format": "png", "source": {"bytes": B64_PNG}}},
                    {"document": {"format": "txt", "name": "d", "source": {"bytes": _b64(b"doc text")}}}]}},
                {"text": "And now?"}]}],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "description": "Look up", "inputSchema": {
                           "json": {"type": "object", "properties": {"q": {"type": "string"}}}}}}],
                       "toolChoice": {"tool": {"name": "lookup"}}},
        "additionalModelRequestFields": {"top_k": 40, "thinking": {"type": "enabled"}}},
    "converse-tool-choice-any": {
        "messages": [{"role": "user", "content": [{"text": "What is 2+2?"}]}],
        "toolConfig": {"tools": [{"toolSpec": {"name": "calc", "inputSchema": {"json": {"type": "object"}}}}],
                       "toolChoice": {"any": {}}}},
    "anthropic.claude-3-haiku-20240307-v1:0": {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "system": "sys", "top_k": 5,
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64_PNG}},
                {"type": "document", "title": "t", "source": {"type": "text", "media_type": "text/plain",
                                                              "data": "doc"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "redacted_thinking", "data": _b64(b"zz")},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42", "is_error": True},
                {"type": "text", "text": "next?"}]}],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"}, "anthropic_beta": ["x"]},
    "openai.gpt-oss-120b-1:0": {
        "messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "user", "content": [{"type": "text", "text": "q"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64_PNG}}]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "required", "max_tokens": 50, "temperature": 1.5, "stop": "X", "seed": 3},
    "cohere.command-r-v1:0": {
        "message": "", "preamble": "pre", "p": 0.5, "k": 3,
        "chat_history": [{"role": "USER", "message": "hi"},
                         {"role": "CHATBOT", "message": "ok", "tool_calls": [{"name": "f", "parameters": {"a": 1}}]}],
        "tool_results": [{"call": {"name": "f", "parameters": {"a": 1}}, "outputs": [{"r": 1}]},
                         {"call": {"name": "g"}, "outputs": [{"r": 2}]}],
        "tools": [{"name": "f", "description": "d", "parameter_definitions": {"a": {"type": "int", "required": True}}},
                  {"name": "g", "description": "d"}]},
    "meta.llama3-2-11b-instruct-v1:0": {
        "prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nDescribe<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "max_gen_len": 20, "images": [B64_PNG]},
    "amazon.titan-text-express-v1": {
        "inputText": "User: hi\nBot: hello\nUser: again\nBot:",
        "textGenerationConfig": {"maxTokenCount": 9, "stopSequences": ["|"]}},
    "amazon.nova-lite-v1:0": {
        "schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"max_new_tokens": 10, "topK": 4, "foo": 1}},
}


def _parsed(name: str) -> ChatRequest:
    body = PINNED_BODIES[name]
    if name.startswith("converse"):
        return converse.parse_request(body)
    return families.family_for(name, body).parse_request(body)


PINNED = {
    "converse-every-block": ("73aa0ccc66135920bfb61edc445cf58b952bc33220c07ab11124279074c3c892",
                             "9d44f3d45d002dd13c11a9229a84ec512509e0a4cd32049690b56f9ab56bd96d"),
    "converse-tool-choice-any": ("f43731982c48e0523be9ee9afae8b182e50bf4772fcde4613689b12572a4394f",
                                 "c0c4015b04541da6676d9d9c5bd5d68b3ae5a4f93d275b62f70f97702882c2b2"),
    "anthropic.claude-3-haiku-20240307-v1:0": ("5282f9a1d49fb876087bd4fc679ece84b8d9f11a7f033ae506d9a0f940e5f705",
                                               "7a3f8d99b2d2597c4e3ec594f3cd326bda455d84d1c87512512af3a82bf2303b"),
    "openai.gpt-oss-120b-1:0": ("d3ee8e17a2736d7af6a3b705e51736abe8dd73106b47bc70dd0033858cac84fc",
                                "438439f2fac7e6070204525c9a09b4827bbe781de2cb06e4ce332cf6135a5dac"),
    "cohere.command-r-v1:0": ("a7cbaa0d0c11ef10bc6ab21fe06a45b80d8f033de2e583c8ab8f2b392a0fbce0",
                              "16cdd96664b0b103d9385437ca799e8f91d559442bf22c471eb52c2ec08610ca"),
    "meta.llama3-2-11b-instruct-v1:0": ("9434a07ebbc8e5ce09be8c9097b4bb2ad67caa112b2a85522d7d75e9f61d3aca",
                                        "fd44ad4442459f57368d9014c9fd885471f79bc92af74282b69cdff3268da7c8"),
    "amazon.titan-text-express-v1": ("8bf7d1c2308997f6f4da688ef57aa9ec3823765070c6de57664cfe9a215cd42a",
                                     "1fa0dc65bf2eb52bfa35c85cc18f46d7c4295205c1a26971ebdae0397e3cd008"),
    "amazon.nova-lite-v1:0": ("71e2274a458bd9781138c1cd2faf934492eadf787e45129d923fb07171f8e48a",
                              "f877e488ab6f21fdf33b2f0889197208880499aebd9eda84f56ed2e11f8c577b"),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_keys_of_parsed_requests_are_pinned(name):
    ctx, q = keys.split(_parsed(name))
    scope = keys.scope_key("converse", "m", "key:vk", ctx)
    assert (scope, keys.exact_key(scope, q)) == PINNED[name]
