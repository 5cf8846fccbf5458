"""InvokeModel families (workers/formats/bedrock/families.py): detection by modelId and body, and
the properties every streaming family shares.

Each family's own parsing, rendering and stream chunks are tested in the file named after its module
(test_anthropic_invoke.py, test_meta.py ...), against the documented examples (bedrock-protocol.md
section 6).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from finops.shared.model import ChatResponse, EmbedResponse, Metadata, ReasoningBlock, TextBlock, ToolUseBlock, Usage
from finops.workers.formats.bedrock.families import FAMILIES, family_for, parse_invoke_request
from finops.workers.formats.bedrock.invoke import METRICS_KEY, model_id_candidates
from finops.workers.formats.common import response_to_events
from tests.unit.formats.family_support import (ANTH, APP_PROFILE, CLAUDE3, MSGS, fam, feed_all, raises, roles,
                                               text_events)


# --- detection ----------------------------------------------------------------------------------

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


# --- properties every streaming family shares ---------------------------------------------------

STREAMING = sorted(n for n, f in FAMILIES.items() if f.streams)
RICH = ChatResponse(content=[ReasoningBlock("hm", "s"), TextBlock("Hello"), ToolUseBlock("t1", "f", {"x": [1]})],
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
    out = enc.feed(Metadata(Usage(3, 0), 9, 4))
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
