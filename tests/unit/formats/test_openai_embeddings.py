"""Titan and Cohere embed requests to the OpenAI / Mistral embeddings API and back (formats/openai/embeddings.py)."""
from __future__ import annotations

import pytest

from finops.shared.errors import GatewayError
from finops.shared.model import EmbedRequest
from finops.workers.formats.embeddings import COHERE_EMBED, TITAN_EMBED
from finops.workers.formats.openai import embeddings


def test_titan_body_to_openai_and_mistral_requests():
    req = TITAN_EMBED.parse_request({"inputText": "hello there", "dimensions": 256, "normalize": True})
    assert embeddings.to_request(req, "text-embedding-3-small") == {
        "model": "text-embedding-3-small", "input": ["hello there"], "encoding_format": "float", "dimensions": 256}
    assert embeddings.to_request(req, "mistral-embed", "output_dimension")["output_dimension"] == 256
    plain = TITAN_EMBED.parse_request({"inputText": "x"})
    assert "dimensions" not in embeddings.to_request(plain, "m")


def test_cohere_body_sends_its_texts_only():
    req = COHERE_EMBED.parse_request({"texts": ["a", "b c"], "input_type": "search_query", "truncate": "END"})
    assert embeddings.to_request(req, "mistral-embed", "output_dimension") == {
        "model": "mistral-embed", "input": ["a", "b c"], "encoding_format": "float"}


def test_response_in_input_order_with_prompt_tokens():
    doc = {"object": "list", "model": "m", "usage": {"prompt_tokens": 7, "total_tokens": 7},
           "data": [{"object": "embedding", "index": 1, "embedding": [0.5, 0.5]},
                    {"object": "embedding", "index": 0, "embedding": [1, 0]}]}
    resp = embeddings.from_response(doc, "oa", 2)
    assert resp.embeddings == ([1.0, 0.0], [0.5, 0.5]) and resp.input_tokens == 7
    # rendered back as the client's family
    req = COHERE_EMBED.parse_request({"texts": ["a", "b"], "input_type": "clustering"})
    out = COHERE_EMBED.render_embed_response(resp, req=req, model_id="cohere.embed-english-v3")
    assert out["embeddings"] == [[1.0, 0.0], [0.5, 0.5]] and out["response_type"] == "embeddings_floats"
    titan = TITAN_EMBED.render_embed_response(embeddings.from_response(
        {"data": [{"index": 0, "embedding": [0.1]}], "usage": {"prompt_tokens": 3}}, "oa", 1),
        req=EmbedRequest(texts=("x",)), model_id="amazon.titan-embed-text-v2:0")
    assert titan == {"embedding": [0.1], "inputTextTokenCount": 3, "embeddingsByType": {"float": [0.1]}}


@pytest.mark.parametrize("doc", [{}, {"data": []}, {"data": [{"index": 0}]}, {"data": [{"embedding": "x"}]}])
def test_an_unreadable_answer_is_a_model_error(doc):
    with pytest.raises(GatewayError) as e:
        embeddings.from_response(doc, "oa", 1)
    assert e.value.code == "ModelErrorException"
