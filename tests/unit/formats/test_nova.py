"""Amazon Nova on Bedrock InvokeModel (workers/formats/nova.py, bedrock-protocol.md 6.5)."""
from __future__ import annotations

from finops.shared.model import ChatResponse, ImageBlock, TextBlock, ToolChoice, Usage
from finops.workers.formats.bedrock.invoke import METRICS_KEY
from tests.unit.formats.family_support import JPEG, METRICS, PNG, b64, fam, feed_all, raises, text_events


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
    assert req.system == ("Be helpful.",)
    assert req.messages[0].content[1] == ImageBlock("png", PNG)
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k, req.stop_sequences) == (300, 0.3, 0.1, 20, ("END",))
    assert req.tools[0].name == "f" and req.tool_choice == ToolChoice("auto")
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
    resp = ChatResponse(content=[TextBlock("Hi")], usage=Usage(3, 2, 1, 0))
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
