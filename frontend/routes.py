"""Raw request target -> (operation, modelId). Pure.

Routing happens on the RAW path (ASGI `raw_path`), because botocore percent-encodes the whole
modelId label, `/` and `:` included, and the decoded `path` would split an ARN into segments.
The modelId segment is percent-decoded exactly once; `+` stays `+` (clients send a literal plus
as `%2B`, and a bare `+` in a path is a plus, not a space).

    POST {prefix}/model/{modelId}/{converse|converse-stream|invoke|invoke-with-response-stream|count-tokens}
    POST {prefix}/guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply     (ApplyGuardrail)

ApplyGuardrail's operation is "apply-guardrail", and its `model_id` the guardrail identifier
(decoded once, like a modelId); the worker reads the version from the raw target it is sent.

`prefix` is `/bedrock`; a request without it is answered too, so an endpoint_url of
`http://host:port` (no prefix) still works.
"""
from __future__ import annotations

from urllib.parse import unquote_to_bytes

from finops.shared import errors

CONVERSE = "converse"
CONVERSE_STREAM = "converse-stream"
INVOKE = "invoke"
INVOKE_STREAM = "invoke-with-response-stream"
COUNT_TOKENS = "count-tokens"
APPLY_GUARDRAIL = "apply-guardrail"

OPERATIONS = {
    CONVERSE: ("Converse", False),
    CONVERSE_STREAM: ("ConverseStream", True),
    INVOKE: ("InvokeModel", False),
    INVOKE_STREAM: ("InvokeModelWithResponseStream", True),
    COUNT_TOKENS: ("CountTokens", False),
}
STREAMING = frozenset(op for op, (_, s) in OPERATIONS.items() if s)

PREFIX = b"/bedrock"
MAX_MODEL_ID_BYTES = 2048          # the Bedrock Runtime model: modelId is 1 to 2048 characters (bedrock-protocol.md 1.1)


class Route:
    __slots__ = ("op", "model_id")

    def __init__(self, op: str, model_id: str):
        self.op = op
        self.model_id = model_id

    def __repr__(self) -> str:
        return f"Route({self.op!r}, {self.model_id!r})"


def match(method: str, raw_path: bytes) -> Route:
    """Resolve a request, or raise GatewayError (404 unknown path, 405 wrong method, 400 bad id)."""
    path = raw_path
    if path.startswith(PREFIX + b"/"):
        path = path[len(PREFIX):]
    # collapse a doubled slash after the prefix (endpoint_url ending in "/")
    while path.startswith(b"//"):
        path = path[1:]
    parts = path.split(b"/")
    # ['', 'guardrail', '<id>', 'version', '<version>', 'apply']
    if (len(parts) == 6 and parts[0] == b"" and parts[1] == b"guardrail" and parts[3] == b"version"
            and parts[5] == b"apply"):
        return _guardrail(method, parts[2], parts[4])
    # ['', 'model', '<id>', '<action>']
    if len(parts) != 4 or parts[0] != b"" or parts[1] != b"model":
        raise _unknown(raw_path)
    action = parts[3].decode("ascii", "replace")
    if action not in OPERATIONS:
        raise _unknown(raw_path)
    if method != "POST":
        raise errors.GatewayError(
            "MethodNotAllowedException",
            f"{OPERATIONS[action][0]} takes POST, not {method}.", 405)
    raw_id = parts[2]
    if not raw_id:
        raise errors.validation("modelId: empty; the path must be /model/{modelId}/" + action)
    if len(raw_id) > MAX_MODEL_ID_BYTES:
        raise errors.validation(f"modelId: longer than {MAX_MODEL_ID_BYTES} bytes")
    try:
        model_id = unquote_to_bytes(raw_id).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.validation("modelId: not valid UTF-8 after percent-decoding") from None
    return Route(action, model_id)


def _guardrail(method: str, raw_id: bytes, raw_version: bytes) -> Route:
    if method != "POST":
        raise errors.GatewayError("MethodNotAllowedException", f"ApplyGuardrail takes POST, not {method}.", 405)
    if not raw_id or not raw_version:
        raise errors.validation("guardrailIdentifier and guardrailVersion: both are required in "
                                "/guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply")
    if len(raw_id) > MAX_MODEL_ID_BYTES:
        raise errors.validation(f"guardrailIdentifier: longer than {MAX_MODEL_ID_BYTES} bytes")
    try:
        guardrail_id = unquote_to_bytes(raw_id).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.validation("guardrailIdentifier: not valid UTF-8 after percent-decoding") from None
    return Route(APPLY_GUARDRAIL, guardrail_id)


def _unknown(raw_path: bytes) -> errors.GatewayError:
    shown = raw_path[:200].decode("ascii", "replace")
    return errors.GatewayError(
        "UnknownOperationException",
        f"No Bedrock Runtime operation at {shown}. Expected POST "
        "/bedrock/model/{modelId}/(converse|converse-stream|invoke|invoke-with-response-stream|count-tokens) "
        "or /bedrock/guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply.",
        404)
