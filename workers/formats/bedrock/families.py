"""Model-family native formats for InvokeModel and InvokeModelWithResponseStream. Pure.

`family_for(model_id, body)` picks the `Family` that reads a native body and writes the native
answer and stream chunks. Each vendor's formats live in its own module under workers/formats/:

    anthropic/invoke.py     anthropic-messages, anthropic-text (legacy Text Completions)
    mistral/invoke.py       mistral-text, mistral-chat
    openai/invoke.py        openai-chat (any other `messages` body)
    meta.py                 meta-llama
    titan.py                titan-text
    nova.py                 nova
    cohere.py               cohere-command-r, cohere-command
    ai21.py                 ai21-jamba, ai21-jurassic
    embeddings.py           titan-embed, cohere-embed
    bedrock/invoke.py       the Family, PromptFamily and StreamEncoder bases, invocation metrics, model ids

A Family has `name`, `kind` ("chat" | "embed"), `streams`, `parse_request(body)`,
`render_response(resp, model_id)`, `render_embed_response(resp, req=..., model_id=...)` and
`stream_encoder(model_id)`, whose `feed(ev)` turns canonical stream events into native chunk dicts
(the last chunk after the `metadata` event carries "amazon-bedrock-invocationMetrics").

Detection
---------
The modelId decides first: region prefixes (us., eu., apac., global. ...) are stripped, and for an
ARN the part after the last "/" is used (then earlier parts, for custom-model ARNs). When no known
vendor prefix matches (application inference profiles, custom names, unknown vendors) the body
shape decides, in this order: anthropic_version; messages with schemaVersion or inferenceConfig
(Nova); messages (OpenAI-like); prompt + max_tokens_to_sample (Claude text); prompt + max_gen_len
(Llama); prompt (Mistral text); inputText (Titan: embeddings unless textGenerationConfig is present
or the body has no embedding field); message (Command R); texts (Cohere Embed).
"""
from __future__ import annotations

from finops.shared.model import ChatRequest, EmbedRequest

from .converse import fail
from .invoke import METRICS_KEY, Family, StreamEncoder, base_model_id, invocation_metrics, model_id_candidates
from ..ai21 import JAMBA, JURASSIC
from ..anthropic.invoke import MESSAGES as ANTHROPIC_MESSAGES, TEXT as ANTHROPIC_TEXT
from ..cohere import COMMAND, COMMAND_R
from ..embeddings import COHERE_EMBED, TITAN_EMBED
from ..meta import LLAMA
from ..mistral.invoke import MISTRAL_CHAT, MISTRAL_TEXT
from ..nova import NOVA
from ..openai.invoke import GENERIC as OPENAI_CHAT
from ..titan import TITAN_TEXT

__all__ = ["METRICS_KEY", "Family", "StreamEncoder", "FAMILIES", "family_for", "base_model_id", "invocation_metrics",
           "parse_invoke_request"]

FAMILIES: dict[str, Family] = {f.name: f for f in (
    ANTHROPIC_MESSAGES, ANTHROPIC_TEXT, MISTRAL_TEXT, MISTRAL_CHAT, LLAMA, TITAN_TEXT, TITAN_EMBED, NOVA,
    COHERE_EMBED, COMMAND_R, COMMAND, JAMBA, JURASSIC, OPENAI_CHAT)}

# Models Bedrock serves on InvokeModel whose formats this gateway does not translate.
UNSUPPORTED_PREFIXES = ("amazon.titan-image", "amazon.nova-canvas", "amazon.nova-reel", "amazon.nova-sonic",
                        "amazon.nova-2-sonic", "stability.", "cohere.rerank", "amazon.rerank", "luma.",
                        "twelvelabs.")


def _anthropic(body: dict) -> Family:
    return ANTHROPIC_TEXT if "prompt" in body and "messages" not in body else ANTHROPIC_MESSAGES


def _mistral(body: dict) -> Family:
    return MISTRAL_CHAT if "messages" in body else MISTRAL_TEXT


def _ai21(body: dict) -> Family:
    return JAMBA if "messages" in body else JURASSIC


# (prefix, family or body -> family); first match wins, so longer prefixes come first.
PREFIXES = (
    ("anthropic.", _anthropic),
    ("meta.", LLAMA),
    ("mistral.", _mistral),
    ("amazon.titan-embed", TITAN_EMBED),
    ("amazon.titan-", TITAN_TEXT),
    ("amazon.nova-", NOVA),
    ("cohere.embed", COHERE_EMBED),
    ("cohere.command-r", COMMAND_R),
    ("cohere.command", COMMAND),
    ("ai21.jamba", JAMBA),
    ("ai21.j2", _ai21),
)

_TITAN_EMBED_FIELDS = ("dimensions", "normalize", "embeddingTypes", "inputImage", "embeddingConfig")


def _by_prefix(model_id: str, body: dict) -> Family | None:
    for base in model_id_candidates(model_id):
        if base.startswith(UNSUPPORTED_PREFIXES):
            raise fail("modelId", f"{base!r} is an image, video, speech or rerank model; this gateway only "
                       "translates text chat and text embedding models on InvokeModel")
        for prefix, fam in PREFIXES:
            if base.startswith(prefix):
                return fam if isinstance(fam, Family) else fam(body)
    return None


def _by_body(body: dict) -> Family | None:
    if "anthropic_version" in body:
        return ANTHROPIC_MESSAGES
    if "messages" in body:
        return NOVA if "schemaVersion" in body or "inferenceConfig" in body else OPENAI_CHAT
    if "prompt" in body:
        if "max_tokens_to_sample" in body:
            return ANTHROPIC_TEXT
        if "max_gen_len" in body:
            return LLAMA
        return MISTRAL_TEXT
    if "inputText" in body:
        if "textGenerationConfig" not in body and any(k in body for k in _TITAN_EMBED_FIELDS):
            return TITAN_EMBED
        return TITAN_TEXT
    if "message" in body:
        return COMMAND_R
    if "texts" in body:
        return COHERE_EMBED
    return None


def family_for(model_id: str, body: dict) -> Family:
    """The family whose native format `body` is, for a call to `model_id`.

    Raises:
        ValidationException: the body is not a JSON object, the model is of a kind this gateway
            does not translate, or neither the id nor the body shape names a known family.
    """
    if not isinstance(body, dict):
        raise fail("body", "must be a JSON object; InvokeModel bodies are the model's native JSON request")
    fam = _by_prefix(model_id, body) or _by_body(body)
    if fam is None:
        raise fail("body", f"cannot tell the request format for model {model_id!r}: the id has no known vendor "
                   "prefix and the body has none of messages, prompt, inputText, message or texts; "
                   "send the model's native request body")
    return fam


def parse_invoke_request(model_id: str, body: dict) -> tuple[Family, ChatRequest | EmbedRequest]:
    """Convenience: detect the family and parse the body with it."""
    fam = family_for(model_id, body)
    return fam, fam.parse_request(body)
