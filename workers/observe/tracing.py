"""OpenTelemetry traces of the requests a worker serves, exported over OTLP/HTTP. Off by default.

Turning it on: in the config, ::

    [observability]
    otlp_endpoint = "http://localhost:4318"     # OTLP/HTTP base URL; /v1/traces is appended
    otlp_headers = { authorization = "Bearer ..." }   # optional, sent with every export
    trace_sample_ratio = 1.0                    # share of new traces kept (0..1)
    service_name = "finops-gateway"

and the optional dependencies: ``pip install 'finops-gateway[otel]'``. With no endpoint nothing
from ``opentelemetry`` is imported and every span is a shared no-op object.

What is traced, one trace per request:

* ``bedrock <op>`` (e.g. ``bedrock converse``), kind SERVER, from the request's arrival to its end.
  Attributes: ``finops.request_id``, ``gen_ai.operation.name`` (``chat`` for converse* and
  invoke*, otherwise the op), ``gen_ai.request.model`` (the modelId the client asked for),
  ``rpc.system`` = ``aws-api``, ``rpc.service`` = ``BedrockRuntime``. When the client sent a valid
  W3C ``traceparent`` the span continues the client's trace (and its sampling decision);
  otherwise it starts a new trace, kept with probability ``trace_sample_ratio``.
* ``<provider> <model>``, kind CLIENT, a child of the request span, one per upstream attempt.
  Attributes: ``gen_ai.system`` (the provider), ``gen_ai.request.model`` (the upstream model),
  ``finops.attempt`` (1, 2, ...), ``finops.target`` (the route target).

The pipeline adds more with ``Span.set`` (``gen_ai__usage__input_tokens=...`` sets
``gen_ai.usage.input_tokens``) and marks failures with ``Span.error(code, message)``: status
ERROR, description ``"<code>: <message>"``, attribute ``error.type`` = code.

Export: the SDK's BatchSpanProcessor queues ended spans and exports them from its own thread, so
span calls never block the trio loop; a collector that is slow, failing or absent only loses
spans (the exporter logs its failures). Each worker process has its own private TracerProvider
(the global one is left alone) with resource attributes ``service.name``,
``service.instance.id`` (the pid) and ``resource_attributes``; ``OTEL_RESOURCE_ATTRIBUTES`` and
the exporter's ``OTEL_EXPORTER_OTLP_TRACES_*`` environment variables apply as usual underneath.
"""
from __future__ import annotations

import os
import threading

__all__ = ["Span", "Tracing", "TracingUnavailable"]


class TracingUnavailable(Exception):
    """An OTLP endpoint is configured but the OpenTelemetry packages are not installed."""


class Span:
    """One OpenTelemetry span. Methods never raise for bad attribute values (the SDK drops them)."""

    __slots__ = ("_span",)

    def __init__(self, span) -> None:
        self._span = span

    def set(self, **attrs) -> None:
        """Set attributes; ``__`` in a name stands for ``.``; None values are skipped."""
        self._span.set_attributes({k.replace("__", "."): v for k, v in attrs.items() if v is not None})

    def error(self, code: str, message: str) -> None:
        """Mark the span failed: status ERROR ``"<code>: <message>"``, attribute ``error.type``."""
        from opentelemetry.trace import Status, StatusCode

        self._span.set_status(Status(StatusCode.ERROR, f"{code}: {message}"))
        self._span.set_attribute("error.type", code)

    def end(self) -> None:
        """End the span now (hands it to the exporter's queue). Later calls do nothing."""
        if self._span.is_recording():
            self._span.end()

    @property
    def traceparent(self) -> str:
        """This span's W3C traceparent header value, formatted as the SDK's propagator does (its
        flags carry sampled, 0x01, and W3C level 2's random-trace-id, 0x02)."""
        ctx = self._span.get_span_context()
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


class _NoopSpan:
    """What a disabled `Tracing` hands out: the methods of `Span`, doing nothing."""

    __slots__ = ()
    traceparent = ""

    def set(self, **attrs) -> None:
        pass

    def error(self, code: str, message: str) -> None:
        pass

    def end(self) -> None:
        pass


_NOOP = _NoopSpan()


class Tracing:
    """Built once per worker process from the observability config. See the module docstring."""

    enabled: bool

    def __init__(self, endpoint: str = "", service_name: str = "finops-gateway", headers: dict | None = None,
                 sample_ratio: float = 1.0, export_timeout_s: float = 5.0,
                 resource_attributes: dict | None = None):
        """`endpoint` "" disables tracing. Otherwise it is the collector's OTLP/HTTP base URL
        (``http://collector:4318``; ``/v1/traces`` is appended unless already there). `headers` go
        with every export; `export_timeout_s` bounds one export (retries included) and `shutdown`.
        `resource_attributes` are added to (and may override) service.name / service.instance.id.
        `sample_ratio` outside 0..1 raises the SDK's ValueError. Raises `TracingUnavailable` when an endpoint is set and OpenTelemetry is not installed."""
        self.enabled = bool(endpoint)
        self._provider = None
        if not self.enabled:
            return
        try:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as e:
            raise TracingUnavailable(
                f"observability.otlp_endpoint is set but OpenTelemetry is not installed ({e}); "
                "pip install 'finops-gateway[otel]'") from e

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        self._export_timeout_s = export_timeout_s
        self._exporter = OTLPSpanExporter(endpoint=url, headers=headers or None, timeout=export_timeout_s)
        resource = Resource.create({"service.name": service_name, "service.instance.id": str(os.getpid()),
                                    **(resource_attributes or {})})
        self._provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
                                        shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(self._exporter))
        self._tracer = self._provider.get_tracer("finops.gateway")
        self._extract = TraceContextTextMapPropagator().extract
        self._in_context = trace.set_span_in_context
        self._server, self._client = trace.SpanKind.SERVER, trace.SpanKind.CLIENT

    def request(self, rid: str, op: str, model_id: str, traceparent: str = "") -> Span | _NoopSpan:
        """Start the request's SERVER span, continuing the client's trace when `traceparent` (the
        incoming header) is valid."""
        if not self.enabled:
            return _NOOP
        return Span(self._tracer.start_span(
            f"bedrock {op}", context=self._extract({"traceparent": traceparent}), kind=self._server,
            attributes={
                "finops.request_id": rid,
                "gen_ai.operation.name": "chat" if op.startswith(("converse", "invoke")) else op,
                "gen_ai.request.model": model_id,
                "rpc.system": "aws-api",
                "rpc.service": "BedrockRuntime",
            }))

    def upstream(self, parent: Span | _NoopSpan, provider: str, model: str, attempt: int,
                 target: str) -> Span | _NoopSpan:
        """Start the CLIENT span of one upstream attempt, a child of the request span `parent`."""
        if not self.enabled:
            return _NOOP
        return Span(self._tracer.start_span(
            f"{provider} {model}", context=self._in_context(parent._span), kind=self._client,
            attributes={
                "gen_ai.system": provider,
                "gen_ai.request.model": model,
                "finops.attempt": attempt,
                "finops.target": target,
            }))

    def finish(self, span: Span | _NoopSpan, request, outcome) -> None:
        """End the request's span, with what the request used, cost and who served it
        (workers/request.py: Request, Outcome); the attributes are built only when tracing is on."""
        if self.enabled:
            last = outcome.progress.last if outcome.progress else None
            span.set(gen_ai__usage__input_tokens=outcome.usage.get("in"),
                     gen_ai__usage__output_tokens=outcome.usage.get("out"), finops__cost_usd=outcome.cost_usd,
                     finops__cache=outcome.cache or None,
                     finops__virtual_key=request.key.id if request.key is not None else None,
                     finops__provider=last.provider if last else None)
        span.end()

    def shutdown(self) -> None:
        """Export the spans still queued and stop the exporter. Blocks for up to about
        `export_timeout_s` (call it after trio.run returns, or through trio.to_thread.run_sync);
        spans not exported by then are dropped. Spans ended after this are dropped too. Idempotent."""
        provider, self._provider = self._provider, None
        if provider is None:
            return
        # The SDK's own shutdown waits up to 30 s for the export thread: run it aside and bound it.
        flusher = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
        flusher.start()
        flusher.join(self._export_timeout_s)
        if flusher.is_alive():
            # Abandon it: the export in progress stops retrying, the batches still queued fail at once.
            self._exporter.shutdown()
