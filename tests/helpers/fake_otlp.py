"""A fake OTLP/HTTP trace collector on loopback, for the tracing tests (needs the ``otel`` extra:
``opentelemetry-proto`` decodes the exports).

    with FakeOTLP() as collector:
        tracing = Tracing(endpoint=collector.url)        # http://127.0.0.1:PORT
        ...
        tracing.shutdown()
        spans = collector.wait_for(3, timeout=5)

It answers ``POST /v1/traces`` with ``content-type: application/x-protobuf``: decodes the body as an
``ExportTraceServiceRequest``, stores every span (`spans`, arrival order) as a plain dict (see
`span_dict`) and answers 200 with an empty ``ExportTraceServiceResponse``. Anything else gets 404
(other paths) or 415 (other content types) and stores nothing. ``.requests`` records every request
as ``(path, headers, span_count)``.

Scripting (the `FakeServer` machinery, with ``"*"`` as the only key): ``fake.script("*",
{"status": 503, "times": 2})`` answers the next two exports 503 and stores nothing from them;
``delay`` (seconds before answering) works too.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

from tests.helpers.fake_server import FakeServer, _Handler

__all__ = ["FakeOTLP", "span_dict"]

PROTOBUF = "application/x-protobuf"


def _value(v) -> Any:
    """An OTLP AnyValue as a Python value (arrays as lists, kvlists as dicts)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, which)


def _attributes(kvs) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def span_dict(span, resource: dict[str, Any], scope: str) -> dict[str, Any]:
    """One decoded span: name, kind ("SERVER", "CLIENT", ...), trace_id / span_id /
    parent_span_id (hex, parent "" for a root), attributes, status {"code": "UNSET" | "OK" |
    "ERROR", "message"}, start_ns / end_ns, resource (attributes), scope (instrumentation name)."""
    return {
        "name": span.name,
        "kind": PbSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "attributes": _attributes(span.attributes),
        "status": {"code": PbStatus.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                   "message": span.status.message},
        "start_ns": span.start_time_unix_nano,
        "end_ns": span.end_time_unix_nano,
        "resource": resource,
        "scope": scope,
    }


class FakeOTLP(FakeServer):
    """See the module docstring."""

    server_header = "FakeOTLP/1.0"
    _name = "fake-otlp"

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[dict[str, Any]] = []
        self._arrived = threading.Condition(self._lock)

    def reset(self) -> None:
        """Forget recorded requests, spans and scripts."""
        with self._lock:
            self.spans.clear()
        super().reset()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The stored spans once there are at least `n`; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.spans) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.spans)} spans arrived in {timeout}s, expected {n}")
                self._arrived.wait(left)
            return list(self.spans)

    def by_name(self, name: str) -> list[dict[str, Any]]:
        return [s for s in list(self.spans) if s["name"] == name]

    def _handle(self, h: _Handler) -> None:
        headers = self._headers_of(h)
        body = self._read_body(h, headers)
        path = h.path.split("?", 1)[0]
        if h.command != "POST" or path != "/v1/traces":
            self._record((path, headers, 0))
            return self._reply(h, 404, b"not found", "text/plain")
        if headers.get("content-type", "").split(";")[0].strip() != PROTOBUF:
            self._record((path, headers, 0))
            return self._reply(h, 415, b"unsupported content type", "text/plain")
        behavior = self._take_script(None)
        if self._pause(h, behavior.get("delay")):
            return
        status = int(behavior.get("status", 200))
        if status != 200:
            self._record((path, headers, 0))
            return self._reply(h, status, b"scripted failure", "text/plain")
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = [span_dict(span, _attributes(rs.resource.attributes), ss.scope.name)
                 for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        self._record((path, headers, len(spans)))
        with self._arrived:
            self.spans.extend(spans)
            self._arrived.notify_all()
        self._reply(h, 200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

    def _reply(self, h: _Handler, status: int, body: bytes, content_type: str) -> None:
        self._start_response(h, status, [("Content-Type", content_type), ("Content-Length", len(body))])
        self._write_body(h, body, {})
