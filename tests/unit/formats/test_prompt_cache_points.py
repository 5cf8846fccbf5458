"""Converse cachePoints: kept in the canonical request where they stood, at most four, and placed
as Anthropic cache_control breakpoints on the item before each one. Pure."""
from __future__ import annotations

import pytest

from finops.shared.errors import GatewayError
from finops.shared.model import CachePoint, ChatRequest, Message, ReasoningBlock, TextBlock, Tool
from finops.workers.formats.anthropic import api as am
from finops.workers.formats.bedrock import converse as cv

CP = {"cachePoint": {"type": "default"}}
TOOL = {"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}
DIALECT = am.AnthropicDialect("anthropic")


def user(*blocks):
    return {"role": "user", "content": [{"text": b} if isinstance(b, str) else b for b in blocks]}


def build(req: ChatRequest) -> dict:
    return am.to_anthropic_request(req, "claude", stream=False, dialect=DIALECT)


def test_points_are_kept_where_they_stood():
    req = cv.parse_request({
        "system": [{"text": "s0"}, CP, {"text": "s1"}],
        "messages": [user("a", CP, "b"), {"role": "assistant", "content": [{"text": "c"}, CP]}, user("d")],
        "toolConfig": {"tools": [TOOL, {"cachePoint": {"type": "default", "ttl": "1h"}}]}})
    assert req.cache_points == (CachePoint("tools", 1, 0, "1h"), CachePoint("system", 1),
                                CachePoint("messages", 1, 0), CachePoint("messages", 1, 1))
    assert req.system == ("s0", "s1") and [len(m.content) for m in req.messages] == [2, 1, 1]


def test_a_request_without_points_has_none():
    assert cv.parse_request({"messages": [user("hi")]}).cache_points == ()


@pytest.mark.parametrize("point,path", [
    ({"cachePoint": {}}, "cachePoint.type"),
    ({"cachePoint": {"type": "other"}}, "cachePoint.type"),
    ({"cachePoint": {"type": "default", "ttl": "2h"}}, "cachePoint.ttl"),
])
def test_bad_points_are_validation_errors(point, path):
    with pytest.raises(GatewayError) as ei:
        cv.parse_request({"messages": [user("hi", point)]})
    assert ei.value.code == "ValidationException" and path in ei.value.message


def test_five_points_are_refused_four_are_not():
    four = {"system": [{"text": "a"}, CP, {"text": "b"}, CP], "messages": [user("c", CP, "d", CP)]}
    assert len(cv.parse_request(four).cache_points) == 4
    five = {**four, "toolConfig": {"tools": [TOOL, CP]}}
    with pytest.raises(GatewayError) as ei:
        cv.parse_request(five)
    assert ei.value.code == "ValidationException" and "5 cachePoint blocks" in ei.value.message
    assert "at most 4" in ei.value.message


def test_cache_control_goes_on_the_item_before_each_point():
    body = build(cv.parse_request({
        "system": [{"text": "s0"}, CP, {"text": "s1"}],
        "messages": [user("a", CP, "b"), {"role": "assistant", "content": [{"text": "c"}]}, user("d", CP)],
        "toolConfig": {"tools": [TOOL, CP]}}))
    eph = {"type": "ephemeral"}
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object"}, "cache_control": eph}]
    assert body["system"] == [{"type": "text", "text": "s0", "cache_control": eph}, {"type": "text", "text": "s1"}]
    m = body["messages"]
    assert m[0]["content"] == [{"type": "text", "text": "a", "cache_control": eph}, {"type": "text", "text": "b"}]
    assert m[1]["content"] == [{"type": "text", "text": "c"}]
    assert m[2]["content"] == [{"type": "text", "text": "d", "cache_control": eph}]


def test_a_point_first_in_its_list_marks_the_item_before_it_in_prefix_order():
    # first in the system list -> the last tool; first in a message -> the previous message's last block
    body = build(cv.parse_request({"system": [CP, {"text": "s"}], "messages": [user("a"), user(CP, "b")],
                                   "toolConfig": {"tools": [TOOL]}}))
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["system"][0] and "cache_control" not in body["messages"][1]["content"][0]


def test_a_point_with_nothing_before_it_marks_nothing():
    req = ChatRequest([Message("user", [TextBlock("a")])], cache_points=[CachePoint("system", 0)])
    assert "cache_control" not in str(build(req))


def test_ttl_1h_is_sent_and_two_points_on_one_item_are_one_breakpoint():
    req = ChatRequest([Message("user", [TextBlock("a")])], system=["s"],
                      cache_points=[CachePoint("system", 1, 0, "1h"), CachePoint("messages", 0, 0)])
    body = build(req)
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["messages"][0]["content"][0] == {"type": "text", "text": "a"}


def test_a_dropped_unsigned_reasoning_block_moves_the_mark_to_the_block_before():
    req = ChatRequest([Message("user", [TextBlock("q")]),
                       Message("assistant", [TextBlock("t"), ReasoningBlock("unsigned")]),
                       Message("user", [TextBlock("q2")])],
                      cache_points=[CachePoint("messages", 2, 1)])
    body = build(req)
    assert body["messages"][1]["content"] == [{"type": "text", "text": "t", "cache_control": {"type": "ephemeral"}}]


def test_providers_without_breakpoints_ignore_points():
    from finops.workers.formats.openai import api as oa
    req = cv.parse_request({"system": [{"text": "s"}, CP], "messages": [user("a", CP)]})
    assert "cache" not in str(oa.to_openai_request(req, "gpt-4o", stream=False, dialect=oa.OpenAIDialect("openai")))


def test_tools_keep_their_order_with_points():
    req = ChatRequest([Message("user", [TextBlock("a")])], tools=[Tool("f"), Tool("g")],
                      cache_points=[CachePoint("tools", 1)])
    assert [("cache_control" in t) for t in build(req)["tools"]] == [True, False]
