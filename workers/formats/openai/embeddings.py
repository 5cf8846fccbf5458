"""The OpenAI embeddings API (`POST {base_url}/embeddings`), which Mistral speaks too. Pure.

    {"model", "input": [str, ...], "dimensions"?  (Mistral: "output_dimension"), "encoding_format": "float"}
    -> {"object": "list", "data": [{"object": "embedding", "index", "embedding": [float, ...]}],
        "model", "usage": {"prompt_tokens", "total_tokens"}}      (Mistral adds "id")

Titan and Cohere embed bodies (formats/embeddings.py) arrive here as an EmbedRequest: their texts
are the `input`, Titan V2's `dimensions` is asked for as the target's own dimensions field. What
has no counterpart is not sent: Cohere's `input_type` (OpenAI and Mistral embed every text the
same way) and `truncate` (both refuse an input over the model's limit, as Cohere's "NONE" does);
the vectors come back as the provider made them (OpenAI and Mistral return unit-length vectors,
which is what Titan's default `normalize: true` asks for). Usage is the provider's `prompt_tokens`.
"""
from __future__ import annotations

from finops.shared.model import EmbedRequest, EmbedResponse

from .. import provider_errors


def to_request(req: EmbedRequest, model: str, dimensions_field: str = "dimensions") -> dict:
    body: dict = {"model": model, "input": list(req.texts), "encoding_format": "float"}
    if req.dimensions:
        body[dimensions_field] = req.dimensions
    return body


def from_response(doc: dict, provider: str, n_texts: int) -> EmbedResponse:
    """The vectors in input order, and the input tokens; a ModelErrorException for an answer
    that is not the documented shape."""
    data = doc.get("data")
    if not isinstance(data, list) or len(data) != n_texts:
        raise provider_errors.bad_body(provider, 200, b"", f"an embeddings answer without {n_texts} vector(s) in data")
    try:
        ordered = sorted(data, key=lambda d: d.get("index", 0))
        vectors = tuple([float(x) for x in d["embedding"]] for d in ordered)
    except (TypeError, KeyError, ValueError, AttributeError):
        raise provider_errors.bad_body(provider, 200, b"", "an embeddings answer whose data is not float vectors") from None
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
    tokens = usage.get("prompt_tokens", usage.get("total_tokens", 0))
    return EmbedResponse(vectors, tokens if isinstance(tokens, int) and tokens >= 0 else 0)
