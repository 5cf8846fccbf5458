"""Meta Llama on Bedrock InvokeModel (workers/formats/meta.py, bedrock-protocol.md 6.3)."""
from __future__ import annotations

from finops.shared.model import ChatResponse, ImageBlock, TextBlock, Usage
from finops.workers.formats.bedrock.invoke import METRICS_KEY
from tests.unit.formats.family_support import JPEG, LLAMA3, METRICS, b64, fam, feed_all, raises, roles, text_events


# --- Meta Llama ---------------------------------------------------------------------------------

def test_llama_parse_documented():
    req = fam("meta-llama").parse_request({"prompt": LLAMA3, "temperature": 0.5, "top_p": 0.9, "max_gen_len": 512})
    assert req.system == ("You are a bot.",) and roles(req)[-1] == ("user", "What is 2+2?")
    assert (req.temperature, req.top_p, req.max_tokens) == (0.5, 0.9, 512)


def test_llama_vision_images():
    req = fam("meta-llama").parse_request({"prompt": "Describe", "images": [b64(JPEG)]})
    assert req.messages[0].content == (ImageBlock("jpeg", JPEG), TextBlock("Describe"))
    msg = raises(fam("meta-llama").parse_request, {"prompt": "x", "images": [b64(b"text")]})
    assert msg.startswith("images[0]: ")


def test_llama_errors():
    f = fam("meta-llama")
    assert raises(f.parse_request, {"max_gen_len": 5}).startswith("prompt: required")
    assert raises(f.parse_request, {"prompt": "x", "max_gen_len": 0}).startswith("max_gen_len: must be at least 1")
    assert raises(f.parse_request, {"prompt": "x", "top_p": 1.2}).startswith("top_p: must be between")


def test_llama_render_and_stream():
    f = fam("meta-llama")
    out = f.render_response(ChatResponse(content=[TextBlock("4")], usage=Usage(14, 205), stop_reason="max_tokens"), "m")
    assert out == {"generation": "4", "prompt_token_count": 14, "generation_token_count": 205, "stop_reason": "length"}
    chunks = feed_all(f.stream_encoder("meta.llama3-8b-instruct-v1:0", input_tokens=14), text_events("Hello", " there"))
    assert [c["generation"] for c in chunks] == ["Hello", " there", ""]
    assert [c["prompt_token_count"] for c in chunks] == [14, None, None]       # only in the first chunk
    assert [c["stop_reason"] for c in chunks] == [None, None, "stop"]          # only in the last chunk
    assert chunks[-1]["generation_token_count"] == 4 and chunks[-1][METRICS_KEY] == METRICS
