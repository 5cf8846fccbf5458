"""Canonical model <-> provider wire formats. Pure: functions over dicts and bytes, no I/O.

One module per provider API, each with the same three pieces:

    build_request(req: ChatRequest, model: str, *, stream: bool, dialect) -> dict
        the provider's JSON request body. Content the provider cannot take raises a
        ValidationException that names the provider and the block (e.g. ``messages[2].content[0]``).
    parse_response(doc: dict, *, provider: str) -> ChatResponse
        the provider's non-streaming answer. A shape we cannot read raises ModelErrorException.
    StreamDecoder(provider: str, input_tokens: int)
        .feed(event: str | None, data: dict) -> list[StreamEvent]   one parsed SSE event
        .finish() -> list[StreamEvent]                               at [DONE] / end of body
        turns the provider's SSE events into canonical StreamEvents in ConverseStream order
        (see `finops.shared.model`). A stream that ends before the provider said it was done
        raises ModelStreamErrorException; an in-stream provider error raises the mapped error.

    openai_chat.py          OpenAI Chat Completions (and every OpenAI-compatible server, Azure)
    mistral_chat.py         Mistral chat completions (an OpenAI dialect with its own rules)
    anthropic_messages.py   Anthropic Messages API
    sse.py                  the text/event-stream decoder the providers feed
    provider_errors.py      provider HTTP errors -> the AWS error a Bedrock client expects
"""
