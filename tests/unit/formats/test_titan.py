"""Amazon Titan Text on Bedrock InvokeModel (workers/formats/titan.py, bedrock-protocol.md 6.4)."""
from __future__ import annotations

import pytest

from finops.shared.model import ChatResponse, TextBlock, Usage
from finops.workers.formats.bedrock.invoke import METRICS_KEY
from tests.unit.formats.family_support import METRICS, fam, feed_all, raises, roles, text_events


# --- Titan text ---------------------------------------------------------------------------------

def test_titan_parse_documented():
    req = fam("titan-text").parse_request({"inputText": "User: Tell me a story\nBot:", "textGenerationConfig": {
        "temperature": 0.7, "topP": 0.9, "maxTokenCount": 512, "stopSequences": ["|"]}})
    assert roles(req) == [("user", "Tell me a story")]
    assert (req.temperature, req.top_p, req.max_tokens, req.stop_sequences) == (0.7, 0.9, 512, ("|",))


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
    out = fam("titan-text").render_response(ChatResponse(content=[TextBlock("Once")], stop_reason=stop,
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
