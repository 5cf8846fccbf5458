"""Every wire format the gateway speaks, one place per format, both directions in it. Pure:
functions and small sans-I/O objects over dicts, bytes and the canonical model's frozen records;
no I/O, no clock, no randomness.

Between every format sits the canonical model (`finops.shared.model`). A client's body is parsed
into it, a provider's answer is read into it, and the answer is rendered from it into what the
client asked for. Direction is in the names: `parse_*` (a client's body -> canonical) and
`render_*` (canonical -> the client's answer) on the Bedrock side; `to_<api>_request` (canonical ->
a provider's request) and `from_<api>_response` (a provider's answer -> canonical) on the provider
side, with a `<Api>StreamDecoder` for its SSE events.

    common.py               field checks, base64, image sniffing, ids, the canonical stream of an answer
    bedrock/converse.py     Converse, ConverseStream, CountTokens bodies
    bedrock/invoke.py       InvokeModel bodies: the Family / PromptFamily / StreamEncoder bases, metrics, model ids
    bedrock/families.py     family_for(model_id, body): which family an InvokeModel body is
    bedrock/usage.py        the token usage Bedrock reports in its answers (the bedrock provider)
    anthropic/invoke.py     Claude Messages and Text Completions as InvokeModel bodies
    anthropic/api.py        the Anthropic Messages API (the anthropic provider), and Claude bodies passed through
    openai/invoke.py        OpenAI-like InvokeModel bodies (gpt-oss, DeepSeek, Qwen ...)
    openai/api.py           Chat Completions (the openai provider: OpenAI, Azure, compatible servers)
    mistral/invoke.py       Mistral text and chat InvokeModel bodies
    mistral/api.py          Mistral chat completions (the mistral provider)
    meta.py, titan.py, nova.py, cohere.py, ai21.py, embeddings.py   the other InvokeModel families
    prompts.py              chat-template prompt strings -> messages (the text-completion bodies)
    sse.py                  the text/event-stream decoder the providers' streams go through
    provider_errors.py      provider HTTP and in-stream errors -> the AWS error a Bedrock client expects

A provider format's three entry points (openai shown; anthropic and mistral have the same):

    to_openai_request(req: ChatRequest, model: str, *, stream: bool, dialect) -> dict
        the provider's JSON request body. Content the provider cannot take raises a
        ValidationException that names the provider and the block (e.g. ``messages[2].content[0]``).
    from_openai_response(doc: dict, *, provider: str) -> ChatResponse
        the provider's non-streaming answer. A shape we cannot read raises ModelErrorException.
    OpenAIStreamDecoder(provider: str, input_tokens: int)
        .feed(event: str | None, data: dict) -> list[StreamEvent]   one parsed SSE event
        .finish() -> list[StreamEvent]                               at [DONE] / end of body
        turns the provider's SSE events into canonical StreamEvents in ConverseStream order
        (see `finops.shared.model`). A stream that ends before the provider said it was done
        raises ModelStreamErrorException; an in-stream provider error raises the mapped error.
"""
