"""What the model-family tests share: sample images and ids, and small helpers to call a family
(by its name in FAMILIES), expect a ValidationException, and run a stream encoder."""
from __future__ import annotations

import base64

import pytest

from finops.shared.errors import GatewayError
from finops.shared.model import (BlockStop, ChatRequest, MessageStart, MessageStop, Metadata, StreamEvent, TextDelta,
                                 Usage, text_of)
from finops.workers.formats.bedrock.families import FAMILIES

PNG = b"\x89PNG\r\n\x1a\nfakepng"
JPEG = b"\xff\xd8\xff\xe0fakejpeg"
APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5"
CLAUDE3 = "anthropic.claude-3-haiku-20240307-v1:0"
ANTH = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
MSGS = {"messages": [{"role": "user", "content": "hi"}]}
LLAMA3 = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a bot.<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fam(name: str):
    return FAMILIES[name]


def raises(fn, *a) -> str:
    with pytest.raises(GatewayError) as ei:
        fn(*a)
    assert ei.value.code == "ValidationException" and ei.value.status == 400
    return ei.value.message


def roles(req: ChatRequest) -> list[tuple[str, str]]:
    return [(m.role, text_of(m.content)) for m in req.messages]


def feed_all(encoder, events) -> list[dict]:
    out = []
    for e in events:
        out += encoder.feed(e)
    return out


def text_events(*parts, stop="end_turn", usage=Usage(8, 4), latency=511, first_byte=358) -> list[StreamEvent]:
    evs: list[StreamEvent] = [MessageStart()]
    evs += [TextDelta(0, p) for p in parts]
    evs += [BlockStop(0), MessageStop(stop)]
    return evs + [Metadata(usage, latency, first_byte)]


METRICS = {"inputTokenCount": 8, "outputTokenCount": 4, "invocationLatency": 511, "firstByteLatency": 358}
