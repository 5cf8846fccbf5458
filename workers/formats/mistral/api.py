"""Canonical model <-> Mistral chat completions (docs.mistral.ai/api, POST /v1/chat/completions). Pure.

Mistral speaks a dialect of OpenAI Chat Completions, so this module is `openai_chat` with a
different `ChatStyle`, finish-reason table and field list; everything not listed here maps exactly
as the table in `openai_chat` says.

Where Mistral differs
---------------------
    ImageBlocks                         {"type": "image_url", "image_url": "data:image/png;base64,..."}
                                        (the string form of Mistral's ImageURLChunk)
    pdf documents                       ValidationException: Mistral chat takes documents only by URL
                                        (document_url), which the gateway cannot host; send the text
    doc/docx/xls/xlsx documents         ValidationException, as for OpenAI
    tool call ids                       must match ^[a-zA-Z0-9]{9}$: valid ids pass unchanged, any other
                                        id becomes 9 letters/digits hashed from it, the same for the
                                        toolUse and its toolResult (so they still match)
    tool messages                       also carry "name": the tool's name, from the toolUse with that id
                                        (left out when the request has no such toolUse)
    a user message right after a        Mistral rejects it ("Unexpected role 'user' after role 'tool'"):
      tool message                      the assistant message `BRIDGE` is put between them
    max_tokens                          "max_tokens" (always)
    ToolChoice("any")                   "any"
    stream=True                         "stream": true; no stream_options (usage comes in the last chunk)
    ChatRequest.extra                   only `MISTRAL_FIELDS` and dialect.passthrough_fields;
                                        "seed" becomes "random_seed" (an explicit random_seed wins)
    finish_reason model_length          max_tokens
    finish_reason error                 the answer failed: ModelErrorException (non-streaming), or the
                                        in-stream error (provider_errors.in_stream)
    content as parts                    text parts -> TextBlocks, {"type": "thinking", "thinking": [...]} ->
                                        ReasoningBlocks (Magistral), references ignored
    tool call arguments                 a JSON string or an object; both accepted

A final assistant message (a Converse "prefill") is sent as is: Mistral answers it with a
ValidationException of its own, because its `prefix` mode would echo the prefill in the answer,
which Bedrock clients do not expect.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from finops.shared.model import ChatRequest, ChatResponse

from ..common import ProviderAPI
from ..openai import api as oc

MISTRAL_FIELDS = frozenset({
    "random_seed", "response_format", "presence_penalty", "frequency_penalty", "safe_prompt", "n",
    "parallel_tool_calls", "prediction", "prompt_mode"})

MISTRAL_FINISH = {**oc.OPENAI_FINISH, "model_length": "max_tokens"}
MISTRAL_ERROR_FINISH = frozenset({"error"})

TOOL_ID = re.compile(r"[a-zA-Z0-9]{9}")
BRIDGE = "(tool results received)"


@dataclass(frozen=True, slots=True)
class MistralDialect:
    provider: str                                     # provider name from config, used in messages
    passthrough_fields: frozenset = frozenset()       # ChatRequest.extra keys to pass besides the documented


def mistral_tool_id(tid: str) -> str:
    """A tool call id Mistral accepts (^[a-zA-Z0-9]{9}$); the same input always gives the same id."""
    return tid if TOOL_ID.fullmatch(tid) else oc.hash_id(tid, 9)


def _image(url: str) -> dict:
    return {"type": "image_url", "image_url": url}


MISTRAL_STYLE = oc.ChatStyle(api="Mistral chat completions", image=_image, pdf=None, tool_id=mistral_tool_id,
                             any_choice="any", documented=MISTRAL_FIELDS, renames=(("seed", "random_seed"),),
                             tool_result_name=True, bridge_after_tool=BRIDGE)


def to_mistral_request(req: ChatRequest, model: str, *, stream: bool, dialect: MistralDialect) -> dict:
    """ChatRequest -> the Mistral chat completions request body.

    Raises:
        GatewayError(ValidationException): content Mistral cannot take, naming the block.
    """
    return oc.to_chat_request(req, model, stream=stream, provider=dialect.provider, style=MISTRAL_STYLE,
                         max_tokens_field="max_tokens", stream_usage=False,
                         passthrough=frozenset(dialect.passthrough_fields))


def from_mistral_response(doc: dict, *, provider: str) -> ChatResponse:
    """A Mistral chat completion -> ChatResponse.

    Raises:
        GatewayError(ModelErrorException): no choices[0].message, or finish_reason "error".
    """
    return oc.from_chat_response(doc, provider=provider, finish_table=MISTRAL_FINISH, error_finish=MISTRAL_ERROR_FINISH)


class MistralStreamDecoder(oc.OpenAIStreamDecoder):
    """Mistral chat completion chunks -> canonical StreamEvents. The chunks are OpenAI's shape;
    tool calls usually arrive whole, several in one chunk, and usage rides on the finish chunk."""

    finish_table = MISTRAL_FINISH
    error_finish = MISTRAL_ERROR_FINISH


API = ProviderAPI(to_mistral_request, from_mistral_response, MistralStreamDecoder)
