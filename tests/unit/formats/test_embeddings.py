"""Titan Embeddings and Cohere Embed on Bedrock InvokeModel (workers/formats/embeddings.py,
bedrock-protocol.md 6.6 and 6.8)."""
from __future__ import annotations

import pytest

from finops.shared.errors import GatewayError
from finops.shared.model import ChatResponse, EmbedRequest, EmbedResponse
from tests.unit.formats.family_support import fam, raises


# --- embeddings ---------------------------------------------------------------------------------

def test_titan_embed_v2():
    f = fam("titan-embed")
    req = f.parse_request({"inputText": "hello", "dimensions": 256, "normalize": True,
                           "embeddingTypes": ["float", "binary"]})
    assert isinstance(req, EmbedRequest) and req.texts == ("hello",) and req.dimensions == 256
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
    assert req.texts == ("a", "b") and req.extra == {"input_type": "search_document", "truncate": "END"}
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
