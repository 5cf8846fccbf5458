"""workers/observe/tracing.py: no-op when disabled (and nothing from opentelemetry imported); when
enabled, the spans that reach a fake OTLP/HTTP collector (tests/helpers/fake_otlp.py) after
shutdown(), and a failing or absent collector never hurting the caller."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from finops.workers.observe.tracing import Tracing, TracingUnavailable

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
from opentelemetry import trace  # noqa: E402

from tests.helpers.fake_otlp import FakeOTLP  # noqa: E402

CLAUDE = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def collector():
    with FakeOTLP() as fake:
        yield fake


def _free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sampled(traceparent: str) -> bool:
    """The sampled bit of a traceparent's flags (the SDK also sets 0x02, W3C level 2's random-trace-id)."""
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 0x01)


# --- disabled -----------------------------------------------------------------------------------
def test_disabled_hands_out_one_shared_noop_span():
    tracing = Tracing()
    assert tracing.enabled is False
    span = tracing.request("rid", "converse", CLAUDE, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    up = tracing.upstream(span, "openai", "gpt-4o", 1, "openai/gpt-4o")
    assert up is span
    span.set(gen_ai__usage__input_tokens=3, x=None)
    span.error("ThrottlingException", "slow down")
    span.end()
    span.end()
    assert span.traceparent == ""
    tracing.shutdown()
    tracing.shutdown()


def test_disabled_imports_nothing_from_opentelemetry():
    # A fresh interpreter: this test process has opentelemetry loaded already.
    code = textwrap.dedent(f"""
        import sys
        from finops.workers.observe.tracing import Tracing
        t = Tracing(endpoint="", sample_ratio=0.5)
        s = t.request("rid", "converse", "m", "00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
        t.upstream(s, "openai", "gpt-4o", 1, "openai/gpt-4o").end()
        s.set(a=1); s.error("E", "m"); s.end(); t.shutdown()
        print(sorted(m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_endpoint_without_opentelemetry_installed_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # makes `import opentelemetry...` fail
    with pytest.raises(TracingUnavailable, match=r"pip install 'finops-gateway\[otel\]'"):
        Tracing(endpoint="http://127.0.0.1:4318")


# --- enabled --------------------------------------------------------------------------------------
def test_request_with_a_failed_and_a_successful_attempt(collector):
    before = trace.get_tracer_provider()
    tracing = Tracing(endpoint=collector.url, service_name="gw-test", headers={"authorization": "Bearer t0k"},
                      resource_attributes={"deployment.environment": "test"})
    assert tracing.enabled is True
    assert trace.get_tracer_provider() is before  # the global provider is left alone

    req = tracing.request("rid-1", "converse", CLAUDE)
    first = tracing.upstream(req, "openai", "gpt-4o", 1, "openai/gpt-4o")
    first.error("ThrottlingException", "Rate exceeded")
    first.end()
    second = tracing.upstream(req, "anthropic", "claude-3-7-sonnet", 2, "anthropic/claude-3-7-sonnet")
    second.set(gen_ai__usage__input_tokens=12, gen_ai__usage__output_tokens=7, gen_ai__response__id=None)
    second.end()
    req.set(finops__attempts=2, finops__fallback=True, finops__cost_usd=0.0012)
    req.end()
    req.end()  # idempotent
    traceparent = req.traceparent
    tracing.shutdown()

    spans = collector.wait_for(3)
    assert len(spans) == 3
    server = collector.by_name("bedrock converse")[0]
    attempt1 = collector.by_name("openai gpt-4o")[0]
    attempt2 = collector.by_name("anthropic claude-3-7-sonnet")[0]

    assert server["kind"] == "SERVER"
    assert server["parent_span_id"] == ""
    assert server["attributes"] == {
        "finops.request_id": "rid-1",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": CLAUDE,
        "rpc.system": "aws-api",
        "rpc.service": "BedrockRuntime",
        "finops.attempts": 2,
        "finops.fallback": True,
        "finops.cost_usd": 0.0012,
    }
    assert server["status"]["code"] == "UNSET"
    assert traceparent.startswith(f"00-{server['trace_id']}-{server['span_id']}-")
    assert _sampled(traceparent)

    for span in (attempt1, attempt2):
        assert span["kind"] == "CLIENT"
        assert span["trace_id"] == server["trace_id"]
        assert span["parent_span_id"] == server["span_id"]
        assert span["start_ns"] >= server["start_ns"] and span["end_ns"] <= server["end_ns"]
    assert attempt1["attributes"] == {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                                      "finops.attempt": 1, "finops.target": "openai/gpt-4o",
                                      "error.type": "ThrottlingException"}
    assert attempt1["status"] == {"code": "ERROR", "message": "ThrottlingException: Rate exceeded"}
    assert attempt2["attributes"] == {"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-7-sonnet",
                                      "finops.attempt": 2, "finops.target": "anthropic/claude-3-7-sonnet",
                                      "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 7}
    assert attempt2["status"]["code"] == "UNSET"

    resource = server["resource"]
    assert resource["service.name"] == "gw-test"
    assert resource["service.instance.id"] == str(os.getpid())
    assert resource["deployment.environment"] == "test"
    assert server["scope"] == "finops.gateway"

    path, headers, _ = collector.requests[0]
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["authorization"] == "Bearer t0k"


def test_operation_names(collector):
    tracing = Tracing(endpoint=collector.url)
    ops = ["converse", "converse-stream", "invoke", "invoke-with-response-stream", "count-tokens"]
    for op in ops:
        tracing.request("rid", op, CLAUDE).end()
    tracing.shutdown()
    collector.wait_for(len(ops))
    assert {s["name"]: s["attributes"]["gen_ai.operation.name"] for s in collector.spans} == {
        "bedrock converse": "chat",
        "bedrock converse-stream": "chat",
        "bedrock invoke": "chat",
        "bedrock invoke-with-response-stream": "chat",
        "bedrock count-tokens": "count-tokens",
    }


def test_a_valid_traceparent_is_continued(collector):
    tracing = Tracing(endpoint=collector.url)
    req = tracing.request("rid", "converse", CLAUDE, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    tracing.upstream(req, "openai", "gpt-4o", 1, "openai/gpt-4o").end()
    req.end()
    tracing.shutdown()
    collector.wait_for(2)
    server = collector.by_name("bedrock converse")[0]
    assert server["trace_id"] == CLIENT_TRACE
    assert server["parent_span_id"] == CLIENT_SPAN
    assert server["kind"] == "SERVER"
    assert collector.by_name("openai gpt-4o")[0]["trace_id"] == CLIENT_TRACE


@pytest.mark.parametrize("traceparent", [
    "garbage",
    f"00-{'0' * 32}-{CLIENT_SPAN}-01",                  # all-zero trace id
    f"00-{CLIENT_TRACE}-{'0' * 16}-01",                 # all-zero span id
    f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01",              # forbidden version
    f"00-{CLIENT_TRACE[:-1]}-{CLIENT_SPAN}-01",         # short trace id
])
def test_an_invalid_traceparent_starts_a_new_trace(collector, traceparent):
    tracing = Tracing(endpoint=collector.url)
    tracing.request("rid", "converse", CLAUDE, traceparent=traceparent).end()
    tracing.shutdown()
    [server] = collector.wait_for(1)
    assert server["parent_span_id"] == ""
    assert server["trace_id"] not in (CLIENT_TRACE, "0" * 32)


def test_sample_ratio_zero_exports_nothing(collector):
    tracing = Tracing(endpoint=collector.url, sample_ratio=0.0)
    req = tracing.request("rid", "converse", CLAUDE)
    up = tracing.upstream(req, "openai", "gpt-4o", 1, "openai/gpt-4o")
    up.set(gen_ai__usage__input_tokens=1)
    up.error("ThrottlingException", "Rate exceeded")
    up.end()
    req.end()
    assert not _sampled(req.traceparent)  # and says so downstream
    tracing.shutdown()
    assert collector.spans == [] and collector.requests == []


def test_the_clients_sampling_decision_wins(collector):
    tracing = Tracing(endpoint=collector.url, sample_ratio=0.0)
    tracing.request("kept", "converse", CLAUDE, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01").end()
    tracing.request("dropped", "converse", CLAUDE, traceparent=f"00-{'1' * 32}-{CLIENT_SPAN}-00").end()
    tracing.shutdown()
    [span] = collector.wait_for(1)
    assert span["attributes"]["finops.request_id"] == "kept"
    assert len(collector.spans) == 1


@pytest.mark.parametrize("suffix", ["", "/", "/v1/traces", "/v1/traces/"])
def test_endpoint_with_or_without_the_traces_path(collector, suffix):
    tracing = Tracing(endpoint=collector.url + suffix)
    tracing.request("rid", "converse", CLAUDE).end()
    tracing.shutdown()
    collector.wait_for(1)
    assert [r[0] for r in collector.requests] == ["/v1/traces"]


def _traffic(tracing: Tracing, n: int = 20) -> None:
    for i in range(n):
        req = tracing.request(f"rid-{i}", "converse", CLAUDE)
        up = tracing.upstream(req, "openai", "gpt-4o", 1, "openai/gpt-4o")
        up.error("ServiceUnavailableException", "down")
        up.end()
        req.end()


def test_a_failing_collector_does_not_hurt_the_caller(collector):
    collector.script("*", {"status": 503})
    tracing = Tracing(endpoint=collector.url, export_timeout_s=1.0)
    _traffic(tracing)
    started = time.monotonic()
    tracing.shutdown()
    assert time.monotonic() - started < 1.5
    assert collector.requests and collector.spans == []


def test_a_transient_503_is_retried(collector):
    collector.script("*", {"status": 503, "times": 1})
    tracing = Tracing(endpoint=collector.url, export_timeout_s=5.0)
    _traffic(tracing, n=1)
    tracing.shutdown()
    assert len(collector.wait_for(2)) == 2
    assert len(collector.requests) == 2


def test_an_absent_collector_does_not_hurt_the_caller():
    tracing = Tracing(endpoint=f"http://127.0.0.1:{_free_port()}", export_timeout_s=1.0)
    _traffic(tracing)
    started = time.monotonic()
    tracing.shutdown()
    # bounded by export_timeout_s, not by the SDK's own 30 s (the margin is for a loaded machine)
    assert time.monotonic() - started < 10
    tracing.shutdown()  # idempotent


def test_a_slow_collector_bounds_shutdown(collector):
    collector.script("*", {"delay": 30})
    tracing = Tracing(endpoint=collector.url, export_timeout_s=0.5)
    _traffic(tracing)
    started = time.monotonic()
    tracing.shutdown()
    assert time.monotonic() - started < 15        # not the collector's 30 s: bounded by export_timeout_s
    # spans ended after shutdown are dropped quietly
    tracing.request("late", "converse", CLAUDE).end()


def test_span_calls_do_not_wait_for_the_exporter(collector):
    # Every export hangs; 2,000 spans fill several batches (512), whose exports the processor's
    # thread starts meanwhile. Ending spans only queues them: had they waited for an export, they
    # would have taken at least its timeout.
    collector.script("*", {"delay": 10})
    timeout = 2.0
    tracing = Tracing(endpoint=collector.url, export_timeout_s=timeout)
    started = time.monotonic()
    _traffic(tracing, n=1000)
    elapsed = time.monotonic() - started
    tracing.shutdown()
    assert collector.spans == []
    assert elapsed < timeout, elapsed
