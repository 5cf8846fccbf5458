"""AI21 Jamba and Jurassic-2 on Bedrock InvokeModel (workers/formats/ai21.py, bedrock-protocol.md 6.7)."""
from __future__ import annotations

from finops.shared.model import ChatResponse, TextBlock, Usage
from finops.workers.formats.bedrock.invoke import METRICS_KEY
from tests.unit.formats.family_support import METRICS, fam, feed_all, raises, roles, text_events


# --- AI21 ---------------------------------------------------------------------------------------

def test_jamba_parse_render_stream():
    f = fam("ai21-jamba")
    req = f.parse_request({"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
                           "n": 1, "max_tokens": 10, "temperature": 0.7, "top_p": 1, "stop": ["\n"],
                           "frequency_penalty": 0.1, "presence_penalty": 0})
    assert req.system == ("Be brief",) and roles(req) == [("user", "Hi")]
    assert req.extra == {"frequency_penalty": 0.1, "presence_penalty": 0}
    out = f.render_response(ChatResponse(content=[TextBlock("Hello")], stop_reason="max_tokens", usage=Usage(3, 2)),
                            "ai21.jamba-1-5-mini-v1:0", response_id="r1")
    assert out == {"id": "r1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                             "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    chunks = feed_all(f.stream_encoder("ai21.jamba-1-5-mini-v1:0"), text_events("Hel", "lo"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert chunks[1]["choices"][0]["delta"] == {"content": "lo"}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[-1]["usage"]["total_tokens"] == 12 and chunks[-1][METRICS_KEY] == METRICS


def test_jurassic_parse_render_no_stream():
    f = fam("ai21-jurassic")
    req = f.parse_request({"prompt": "Hi", "maxTokens": 50, "temperature": 0.5, "topP": 1, "stopSequences": ["##"],
                           "countPenalty": {"scale": 0}})
    assert roles(req) == [("user", "Hi")] and req.max_tokens == 50 and req.stop_sequences == ("##",)
    assert req.extra == {"countPenalty": {"scale": 0}}
    out = f.render_response(ChatResponse(content=[TextBlock("Yo")], stop_reason="max_tokens"), "ai21.j2-ultra-v1")
    assert out["completions"] == [{"data": {"text": "Yo", "tokens": []}, "finishReason": {"reason": "length"}}]
    assert isinstance(out["id"], int) and out["prompt"] == {"text": "", "tokens": []}
    assert f.streams is False
    assert raises(f.stream_encoder, "ai21.j2-ultra-v1") == "The model is unsupported for streaming"
