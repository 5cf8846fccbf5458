"""What every wire format shares: field checks, base64, images, ids, and the canonical stream of a
complete answer. Pure.

Field checks (`want_*`, `one_member`, `decode_b64`) validate a client's body the way Bedrock would:
a failure raises `fail(path, problem)`, a ValidationException (HTTP 400) whose message starts with
the path of the bad field (``messages[1].content[0].image.format``), then says what is wrong and
what to send instead. They are for what clients send; what a provider answers is checked by each
provider format, since a bad answer is a ModelErrorException, not the client's fault.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any, Callable, NamedTuple

from finops.shared import errors
from finops.shared.model import (BlockStop, ChatResponse, ImageBlock, ImageDelta, ImageStart,
                                 Message, MessageStart, MessageStop, Metadata, ReasoningBlock, ReasoningDelta,
                                 ReasoningSignatureDelta, RedactedReasoningBlock, RedactedReasoningDelta,
                                 StreamEvent, TextBlock, TextDelta, ToolInputDelta, ToolResultBlock, ToolUseBlock,
                                 ToolUseStart)

# --- field checks -------------------------------------------------------------------------------

def fail(path: str, problem: str) -> errors.GatewayError:
    """A ValidationException whose message starts with the field path."""
    return errors.validation(f"{path}: {problem}" if path else problem)


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def want_dict(v: Any, path: str) -> dict:
    if not isinstance(v, dict):
        raise fail(path, f"must be a JSON object, got {type_name(v)}")
    return v


def want_list(v: Any, path: str, *, min_len: int = 0, max_len: int | None = None,
              what: str = "items") -> list:
    if not isinstance(v, list):
        raise fail(path, f"must be a list of {what}, got {type_name(v)}")
    if len(v) < min_len:
        raise fail(path, f"must be a non-empty list of {what}" if min_len == 1
                   else f"must have at least {min_len} {what}")
    if max_len is not None and len(v) > max_len:
        raise fail(path, f"has {len(v)} {what}; at most {max_len} are allowed")
    return v


def want_str(v: Any, path: str, *, nonblank: bool = False, max_len: int | None = None,
             pattern: re.Pattern | None = None, hint: str = "") -> str:
    if not isinstance(v, str):
        raise fail(path, f"must be a string, got {type_name(v)}")
    if nonblank and not v.strip():
        raise fail(path, "is blank; send non-empty text")
    if max_len is not None and len(v) > max_len:
        raise fail(path, f"is {len(v)} characters long; at most {max_len} are allowed")
    if pattern is not None and not pattern.fullmatch(v):
        raise fail(path, f"{v!r} does not match the pattern {pattern.pattern}{hint}")
    return v


def want_int(v: Any, path: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise fail(path, f"must be an integer, got {type_name(v) if not isinstance(v, float) else v!r}")
    v = int(v)
    if lo is not None and v < lo:
        raise fail(path, f"must be at least {lo}, got {v}")
    if hi is not None and v > hi:
        raise fail(path, f"must be at most {hi}, got {v}")
    return v


def want_num(v: Any, path: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise fail(path, f"must be a number, got {type_name(v)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise fail(path, f"must be between {lo} and {hi}, got {v}")
    return float(v)


def want_bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise fail(path, f"must be true or false, got {type_name(v)}")
    return v


def want_enum(v: Any, path: str, allowed) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise fail(path, f"{v!r} is not valid; expected one of {', '.join(allowed)}")
    return v


def want_str_list(v: Any, path: str, *, max_len: int | None = None) -> list[str]:
    want_list(v, path, max_len=max_len, what="strings")
    for i, s in enumerate(v):
        want_str(s, f"{path}[{i}]", nonblank=False)
        if not s:
            raise fail(f"{path}[{i}]", "is empty; send a non-empty string")
    return list(v)


def one_member(v: Any, path: str, members, what: str) -> tuple[str, Any]:
    """The (name, value) of a tagged union object; `null` members count as absent."""
    want_dict(v, path)
    set_keys = [k for k, x in v.items() if x is not None]
    for k in set_keys:
        if k not in members:
            raise fail(path, f"unknown {what} {k!r}; expected one of {', '.join(members)}")
    if len(set_keys) != 1:
        got = "no member" if not set_keys else f"{len(set_keys)} members ({', '.join(set_keys)})"
        raise fail(path, f"a {what} must have exactly one member set, got {got}; "
                   f"use one of {', '.join(members)} per object")
    return set_keys[0], v[set_keys[0]]


def decode_b64(v: Any, path: str) -> bytes:
    """Decode a base64 blob field, rejecting anything that is not strict base64."""
    if not isinstance(v, str):
        raise fail(path, f"must be a base64 string, got {type_name(v)}")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise fail(path, "is not valid base64; send the raw bytes base64-encoded "
                   "(the AWS SDKs do this when given bytes)") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")



# --- images -------------------------------------------------------------------------------------

def sniff_image(data: bytes) -> str | None:
    """The image format the magic number says, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def check_image_bytes(data: bytes, fmt: str, path: str) -> bytes:
    """Raise unless `data` is non-empty and its magic number matches `fmt`."""
    if not data:
        raise fail(path, "is empty; send the image bytes")
    seen = sniff_image(data)
    if seen != fmt:
        looks = f"they look like {seen}" if seen else "no known image signature was found"
        raise fail(path, f"the bytes are not a valid {fmt} image ({looks}); "
                   f"fix the image format field or send a real {fmt} file")
    return data


# --- canonical content --------------------------------------------------------------------------

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]+")     # Bedrock's tool name pattern, which every format enforces


def tool_uses(content) -> list[ToolUseBlock]:
    return [b for b in content if type(b) is ToolUseBlock]


def check_tool_blocks_need_config(messages: list[Message], has_tools: bool, path: str) -> None:
    if has_tools:
        return
    for m in messages:
        for b in m.content:
            if type(b) in (ToolUseBlock, ToolResultBlock):
                raise fail(path, "must be defined when messages contain toolUse or toolResult "
                           "blocks; add toolConfig.tools with the tools the conversation uses")


def make_id(prefix: str, *parts: str, n: int = 24) -> str:
    """A deterministic id (formats may not use randomness): prefix + hash of parts."""
    h = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return prefix + h[:n]


def compact_json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


class ProviderAPI(NamedTuple):
    """A provider API's three entry points (`formats/<api>/api.py`), as the JSON providers call them."""
    to_request: Callable        # (ChatRequest, model, *, stream, dialect) -> the request body
    from_response: Callable     # (the answer document, *, provider) -> ChatResponse
    stream_decoder: type        # (provider, input_tokens) -> .feed(event, data) / .finish(): StreamEvents


# --- the canonical stream of a complete answer ----------------------------------------------------

def response_to_events(resp: ChatResponse) -> list[StreamEvent]:
    """The ConverseStream event sequence real Bedrock would send for a complete response.

    Text blocks get no start event; a tool use gets a ToolUseStart and its input as one JSON
    delta; reasoning becomes a text delta then a signature delta. Documents and tool results are
    input only: an answer never streams them, and they take no block index.
    """
    evs: list[StreamEvent] = [MessageStart()]
    index = 0
    for block in resp.content:
        deltas = _block_events(block, index)
        if deltas:
            evs += deltas
            evs.append(BlockStop(index))
            index += 1
    evs.append(MessageStop(resp.stop_reason))
    evs.append(Metadata(resp.usage, int(resp.latency_ms)))
    return evs


def _block_events(b, index: int) -> list[StreamEvent]:
    match b:
        case TextBlock():
            return [TextDelta(index, b.text)]
        case ToolUseBlock():
            return [ToolUseStart(index, b.tool_use_id, b.name),
                    ToolInputDelta(index, json.dumps(b.input, separators=(",", ":")))]
        case ImageBlock():
            return [ImageStart(index, b.format), ImageDelta(index, b.data)]
        case ReasoningBlock():
            out: list[StreamEvent] = [ReasoningDelta(index, b.text)]
            if b.signature:
                out.append(ReasoningSignatureDelta(index, b.signature))
            return out
        case RedactedReasoningBlock():
            return [RedactedReasoningDelta(index, b.data)]
    return []
