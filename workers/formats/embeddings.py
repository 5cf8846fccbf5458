"""Embedding formats: Amazon Titan Embeddings (G1, V2) and Cohere Embed. Pure.

bedrock-protocol.md 6.6 and 6.8. Both parse to `EmbedRequest` and render from `EmbedResponse`;
neither streams (ValidationException "The model is unsupported for streaming").

Titan takes one `inputText`; V2 adds `dimensions` (256/512/1024), `normalize` and
`embeddingTypes` (float, binary) and always answers with `embeddingsByType`. Cohere takes up to 96
`texts` with a required `input_type`; only float embeddings are produced by this gateway.
"""
from __future__ import annotations

from finops.shared.model import ChatResponse, EmbedRequest, EmbedResponse

from .bedrock.invoke import Family, base_model_id, leftovers
from .common import fail, make_id, want_bool, want_dict, want_enum, want_int, want_list, want_str, want_str_list

TITAN_DIMENSIONS = (256, 512, 1024)
TITAN_TYPES = ("float", "binary")
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary")


class _Embed(Family):
    kind = "embed"
    streams = False
    max_tokens_path = ()

    image_field = ""        # where the body would carry images, which this gateway does not embed
    text_field = ""         # where it carries the texts
    text_hint = ""          # what to send there

    def render_response(self, resp: ChatResponse, model_id: str, *, response_id: str | None = None) -> dict:
        raise fail("body", f"{self.name} is an embedding format; use render_embed_response")

    def check_input(self, body: dict) -> None:
        """The body is an object with texts (required) and no images."""
        want_dict(body, "body")
        if body.get(self.image_field) is not None:
            raise fail(self.image_field, f"image embeddings are not supported by this gateway; send {self.text_field}")
        if body.get(self.text_field) is None:
            raise fail(self.text_field, f"required; send {self.text_hint}")


class TitanEmbed(_Embed):
    name = "titan-embed"
    image_field, text_field, text_hint = "inputImage", "inputText", "the text to embed"

    def parse_request(self, body: dict) -> EmbedRequest:
        self.check_input(body)
        text = want_str(body["inputText"], "inputText", nonblank=True)
        dimensions = None
        if body.get("dimensions") is not None:
            dimensions = want_int(body["dimensions"], "dimensions")
            if dimensions not in TITAN_DIMENSIONS:
                raise fail("dimensions", f"{dimensions} is not valid; use 256, 512 or 1024")
        extra = leftovers(body, {"inputText", "dimensions"})
        if body.get("normalize") is not None:
            want_bool(body["normalize"], "normalize")
        if body.get("embeddingTypes") is not None:
            types = want_list(body["embeddingTypes"], "embeddingTypes", min_len=1, what="embedding types")
            for i, t in enumerate(types):
                want_enum(t, f"embeddingTypes[{i}]", TITAN_TYPES)
        return EmbedRequest(texts=[text], dimensions=dimensions, extra=extra)

    def render_embed_response(self, resp: EmbedResponse, *, req: EmbedRequest | None = None,
                              model_id: str = "") -> dict:
        emb = resp.embeddings[0] if resp.embeddings else []
        out = {"embedding": emb, "inputTextTokenCount": resp.input_tokens}
        base = base_model_id(model_id)
        if base.startswith(("amazon.titan-embed-text-v1", "amazon.titan-embed-g1")):
            return out
        types = (req.extra.get("embeddingTypes") if req else None) or ["float"]
        by_type = {}
        if "float" in types:
            by_type["float"] = emb
        if "binary" in types:
            by_type["binary"] = [1 if x > 0 else 0 for x in emb]
        out["embeddingsByType"] = by_type
        return out


class CohereEmbed(_Embed):
    name = "cohere-embed"
    image_field, text_field, text_hint = "images", "texts", "a list of 1 to 96 strings"

    def parse_request(self, body: dict) -> EmbedRequest:
        self.check_input(body)
        texts = want_str_list(want_list(body["texts"], "texts", min_len=1, max_len=96, what="strings"), "texts")
        if body.get("input_type") is None:
            raise fail("input_type", f"required; one of {', '.join(COHERE_INPUT_TYPES)}")
        want_enum(body["input_type"], "input_type", COHERE_INPUT_TYPES)
        if body.get("truncate") is not None:
            want_enum(body["truncate"], "truncate", ("NONE", "START", "END"))
        if body.get("embedding_types") is not None:
            types = want_list(body["embedding_types"], "embedding_types", min_len=1, what="embedding types")
            for i, t in enumerate(types):
                want_enum(t, f"embedding_types[{i}]", COHERE_TYPES)
                if t != "float":
                    raise fail(f"embedding_types[{i}]", f"{t!r} embeddings are not supported by this gateway; "
                               "use [\"float\"]")
        return EmbedRequest(texts=texts, extra=leftovers(body, {"texts"}))

    def render_embed_response(self, resp: EmbedResponse, *, req: EmbedRequest | None = None,
                              model_id: str = "") -> dict:
        texts = list(req.texts) if req else []
        rid = make_id("", model_id, *texts, n=32)
        rid = f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:]}"
        if req and req.extra.get("embedding_types"):
            return {"embeddings": {"float": list(resp.embeddings)}, "id": rid,
                    "response_type": "embeddings_by_type", "texts": texts}
        return {"embeddings": list(resp.embeddings), "id": rid, "response_type": "embeddings_floats", "texts": texts}


TITAN_EMBED = TitanEmbed()
COHERE_EMBED = CohereEmbed()
