"""Failure handling with the real processes: a worker killed mid-stream, SIGTERM drain, limits."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import httpx
import pytest
from botocore.exceptions import EventStreamError

from tests.helpers.gateway import Gateway

SLOW = """
[providers.mock]
kind = "mock"
chunks = 40
chunk_delay_ms = 50

[default_route]
provider = "mock"

[server]
drain_seconds = 15
max_body_bytes = 4096
"""

MSG = [{"role": "user", "content": [{"text": "a slow story"}]}]


@pytest.fixture(scope="module")
def slow_gateway(tmp_path_factory):
    with Gateway(tmp_path_factory.mktemp("slow"), SLOW, workers=2) as gw:
        yield gw


def test_worker_killed_mid_stream_ends_with_exception_frame_and_is_replaced(slow_gateway):
    gw = slow_gateway
    client = gw.client()
    before = set(gw.child_pids("workers"))
    assert len(before) == 2
    stream = client.converse_stream(modelId="m", messages=MSG)["stream"]
    it = iter(stream)
    first = [next(it) for _ in range(3)]
    assert "messageStart" in first[0]
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(EventStreamError) as e:
        for _ in it:
            pass
    assert e.value.response["Error"]["Code"] == "serviceUnavailableException"
    assert "retry" in e.value.response["Error"]["Message"].lower()
    assert time.monotonic() - t0 < 2.0, "the frontend should notice a dead worker at once"
    # the supervisor starts replacements and the gateway serves again
    gw.wait_ready(timeout=15, workers=2)
    after = set(gw.child_pids("workers"))
    assert len(after) == 2 and not (after & before)
    r = client.converse(modelId="m", messages=MSG)
    assert "a slow story" in r["output"]["message"]["content"][0]["text"]


def test_worker_killed_before_the_head_is_a_retryable_503(tmp_path):
    cfg = SLOW.replace('chunk_delay_ms = 50', 'chunk_delay_ms = 50\nlatency_ms = 3000')
    with Gateway(tmp_path, cfg, workers=1) as gw:
        client = gw.client()
        pids = gw.child_pids("workers")
        threading.Timer(0.5, lambda: [os.kill(p, signal.SIGKILL) for p in pids]).start()
        t0 = time.monotonic()
        with pytest.raises(client.exceptions.ServiceUnavailableException) as e:
            client.converse(modelId="m", messages=MSG)
        assert time.monotonic() - t0 < 2.5            # noticed at once, not after the 3 s answer
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        gw.wait_ready(timeout=15)
        # with the SDK's default retries, the same call rides over a restart
        retrying = gw.client(retries={"mode": "standard", "max_attempts": 3})
        assert retrying.converse(modelId="m", messages=MSG)["stopReason"] == "end_turn"


def test_body_over_limit_is_413_validation(slow_gateway):
    r = httpx.post(slow_gateway.endpoint + "/model/m/converse", content=b"x" * 5000)
    assert r.status_code == 413
    assert r.headers["x-amzn-errortype"] == "ValidationException"
    assert "max_body_bytes" in r.json()["message"]
    client = slow_gateway.client()
    with pytest.raises(client.exceptions.ValidationException, match="4096"):
        client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "y" * 5000}]}])


def test_sigterm_drains_in_flight_streams(tmp_path):
    gw = Gateway(tmp_path, SLOW, workers=1).start()
    try:
        client = gw.client()
        result = {}

        def consume():
            try:
                events = list(client.converse_stream(modelId="m", messages=MSG)["stream"])
                result["events"] = events
            except Exception as e:  # surfaced in the assertion below
                result["error"] = e

        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.4)  # the stream is running (40 chunks x 50 ms)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):
            httpx.post(gw.endpoint + "/model/m/converse", json={"messages": MSG}, timeout=2)
        t.join(20)
        assert "error" not in result, result.get("error")
        names = [next(iter(e)) for e in result["events"]]
        assert names[-2:] == ["messageStop", "metadata"]
        assert gw.proc.wait(20) == 0
    finally:
        gw.stop()


BIG = """
[providers.mock]
kind = "mock"
chunks = 2000

[default_route]
provider = "mock"
"""


def test_slow_reader_holds_the_worker_back_and_disconnect_cancels(tmp_path):
    """A client that stops reading makes the worker stop producing (credit), and its disconnect
    cancels the request instead of letting it run to the end."""
    import json
    import socket

    from tests.helpers.gateway import request_log

    with Gateway(tmp_path, BIG, workers=1) as gw:
        text = "z" * (16 * 1024 * 1024)   # a 16 MB answer in 2000 chunks of 8 KB
        body = json.dumps({"messages": [{"role": "user", "content": [{"text": text}]}]}).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(b"POST /bedrock/model/m/converse-stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        s.recv(1024)            # the head and the first frames arrive...
        time.sleep(2.0)         # ...then the client stops reading
        s.close()
        deadline = time.monotonic() + 10
        rows = []
        while time.monotonic() < deadline and not rows:
            rows = [r for r in request_log(gw.data_dir) if r["op"] == "converse-stream"]
            time.sleep(0.1)
        assert rows, "the request never ended"
        assert rows[0]["error"] == "cancelled"
        assert rows[0]["messages"] < 600, rows[0]   # window + socket buffers, not the 2000 chunks
        # the worker is fine afterwards
        assert gw.client().converse(modelId="m", messages=[{"role": "user", "content": [{"text": "ok"}]}])


def test_client_gone_cancels_a_slow_non_streaming_request(tmp_path):
    import json
    import socket

    from tests.helpers.gateway import request_log

    cfg = '[providers.m]\nkind = "mock"\nlatency_ms = 5000\n[default_route]\nprovider = "m"\n'
    with Gateway(tmp_path, cfg, workers=1) as gw:
        body = json.dumps({"messages": MSG}).encode()
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"POST /bedrock/model/m/converse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)
        s.close()
        deadline = time.monotonic() + 4
        rows = []
        while time.monotonic() < deadline and not rows:
            rows = request_log(gw.data_dir)
            time.sleep(0.1)
        assert rows and rows[0]["error"] == "cancelled", rows
        assert rows[0]["latency_ms"] < 4000       # stopped, not run to the 5 s answer


def test_sigterm_to_every_process_at_once_still_drains(tmp_path):
    """honcho, systemd and Ctrl-C signal all processes together; workers must not drop their
    streams, and frontends must not take a draining worker for a dead one."""
    gw = Gateway(tmp_path, SLOW, workers=2, honcho=True).start()
    try:
        client = gw.client()
        result = {}

        def consume():
            try:
                result["events"] = list(client.converse_stream(modelId="m", messages=MSG)["stream"])
            except Exception as e:  # surfaced in the assertion below
                result["error"] = e

        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.4)
        for pid in gw.child_pids("workers") + gw.child_pids("frontend"):
            os.kill(pid, signal.SIGTERM)
        t.join(20)
        assert "error" not in result, result.get("error")
        names = [next(iter(e)) for e in result["events"]]
        assert names[-2:] == ["messageStop", "metadata"]
        text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in result["events"] if "contentBlockDelta" in e)
        assert text.endswith("a slow story")
    finally:
        gw.stop()


def test_an_idle_keep_alive_connection_does_not_hold_the_drain(tmp_path):
    """A client that got its streamed answer and keeps the connection open (every pooled SDK
    client) must not make SIGTERM wait out server.drain_seconds: the finished request's
    disconnect watcher used to cancel hypercorn mid-bookkeeping, leaving the connection busy."""
    cfg = ('[server]\ndrain_seconds = 10\n[providers.m]\nkind = "mock"\nlatency_ms = 80\n'
           '[default_route]\nprovider = "m"\n')
    gw = Gateway(tmp_path, cfg, workers=1).start()
    try:
        c = gw.client()
        events = list(c.converse_stream(modelId="m", messages=MSG)["stream"])
        assert "metadata" in events[-1]
        c.converse(modelId="m", messages=MSG)          # slower than 50 ms: gets the watcher too
        t = time.monotonic()
        gw.stop()
        took = time.monotonic() - t
    finally:
        gw.stop()
    assert took < 5.0, f"stopping took {took:.1f}s with an idle keep-alive connection open"


# --- no live worker: requests wait for one (server.worker_wait_seconds) --------------------------------

MOCK = '[providers.m]\nkind = "mock"\n[default_route]\nprovider = "m"\n'


@contextlib.contextmanager
def every_worker_killed_with_restarts_held(gw):
    """SIGKILL every worker while the supervisor is stopped (SIGSTOP), so no replacement comes up
    until the block ends (SIGCONT); the block starts once the frontend counts no live worker. This
    is the moment right after start, or while every worker restarts, held open for a test."""
    os.kill(gw.proc.pid, signal.SIGSTOP)
    try:
        pids = gw.child_pids("workers")
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while gw.health()["workers_live"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gw.health()["workers_live"] == 0
        yield
    finally:
        os.kill(gw.proc.pid, signal.SIGCONT)


def test_a_request_while_every_worker_restarts_waits_for_one(tmp_path):
    """No 503 for a request that arrives when no worker is live yet: it waits (up to
    server.worker_wait_seconds) and is served by the first worker that comes up. (A generous
    wait here: a worker takes 1-2 s to start, more on a loaded machine.)"""
    with Gateway(tmp_path, "[server]\nworker_wait_seconds = 30\n" + MOCK, workers=2) as gw:
        client = gw.client()                      # no retries: a 503 would fail the call
        with every_worker_killed_with_restarts_held(gw):
            resume = threading.Timer(0.3, os.kill, (gw.proc.pid, signal.SIGCONT))   # restarts go on
            resume.start()
            try:
                r = client.converse(modelId="m", messages=MSG)
            finally:
                resume.cancel()
        assert "a slow story" in r["output"]["message"]["content"][0]["text"]


def test_no_worker_within_the_wait_is_a_503_naming_the_setting(tmp_path):
    with Gateway(tmp_path, "[server]\nworker_wait_seconds = 0.5\n" + MOCK, workers=1) as gw:
        client = gw.client()
        with every_worker_killed_with_restarts_held(gw):
            with pytest.raises(client.exceptions.ServiceUnavailableException) as e:
                client.converse(modelId="m", messages=MSG)
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert "server.worker_wait_seconds" in e.value.response["Error"]["Message"]
            with pytest.raises(client.exceptions.ServiceUnavailableException, match="worker_wait_seconds"):
                client.converse_stream(modelId="m", messages=MSG)
        gw.wait_ready(timeout=15)
        assert client.converse(modelId="m", messages=MSG)["stopReason"] == "end_turn"


def test_health_is_not_held_and_a_client_gone_while_held_leaves_nothing(tmp_path):
    """/health is a probe: with no live worker it answers 503 at once, even when requests wait
    a minute. A client that gives up while its request waits takes the request with it: no
    worker runs it once one is back."""
    from tests.helpers.gateway import request_log

    with Gateway(tmp_path, "[server]\nworker_wait_seconds = 60\n" + MOCK, workers=1) as gw:
        with every_worker_killed_with_restarts_held(gw):
            r = httpx.get(gw.url + "/health", timeout=5)
            assert r.status_code == 503 and r.json()["workers_live"] == 0
            with pytest.raises(httpx.ReadTimeout):          # held: no answer, and no 503
                httpx.post(gw.endpoint + "/model/m/converse", json={"messages": MSG}, timeout=1)
        gw.wait_ready(timeout=15)
        rid = gw.client().converse(modelId="m", messages=MSG)["ResponseMetadata"]["RequestId"]
        deadline = time.monotonic() + 10
        rows = []
        while time.monotonic() < deadline and not any(row["id"] == rid for row in rows):
            rows = request_log(gw.data_dir)
            time.sleep(0.1)
        assert [row["id"] for row in rows] == [rid]          # the abandoned request never ran

GOVERNED = """
[server]
workers = 2

[providers.mock]
kind = "mock"
latency_ms = 20
chunks = 8
chunk_delay_ms = 10

[default_route]
provider = "mock"

[pricing."*"]
input = 1000.0
output = 1000.0

[governance]
mode = "enforced"
admin_token = "admin-token-for-kill-tests"

[[governance.keys]]
id = "vk-load"
secret = "load-secret-0123456789abcdef"
budgets = [{amount_usd = 100000, period = "day"}]
"""


def test_killed_workers_lose_no_request_log_row_and_no_spend(tmp_path):
    """Requests from 12 threads while workers are SIGKILLed three times (as an out-of-memory killer
    would): every request is in the log exactly once, answered ones as answered and failed ones with
    the error the client got; the ledger's spend equals the log's, to the micro-dollar (a killed
    worker's reservations are charged by the ledger, and the log shows those charges)."""
    import json
    import urllib.request

    from botocore.exceptions import ClientError

    from tests.helpers.gateway import request_log

    with Gateway(tmp_path, GOVERNED, workers=2) as gw:
        client = gw.client()

        def add_key(request, **kwargs):
            request.headers.add_header("x-bf-vk", "load-secret-0123456789abcdef")
        client.meta.events.register_first("before-sign.bedrock-runtime.*", add_key)
        stop = threading.Event()
        seen: list[tuple[str, str, int]] = []          # (request id, outcome, HTTP status)
        lock = threading.Lock()

        def load(i):
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if (i + n) % 2:
                        r = client.converse(modelId="m", messages=MSG, inferenceConfig={"maxTokens": 50})
                        out = (r["ResponseMetadata"]["RequestId"], "ok", 200)
                    else:
                        r = client.converse_stream(modelId="m", messages=MSG, inferenceConfig={"maxTokens": 50})
                        rid = r["ResponseMetadata"]["RequestId"]
                        try:
                            for _ in r["stream"]:
                                pass
                            out = (rid, "ok", 200)
                        except EventStreamError as e:
                            out = (rid, e.response["Error"]["Code"], 200)
                except ClientError as e:
                    out = (e.response["ResponseMetadata"]["RequestId"], e.response["Error"]["Code"],
                           e.response["ResponseMetadata"]["HTTPStatusCode"])
                with lock:
                    seen.append(out)

        threads = [threading.Thread(target=load, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        killed = 0
        try:
            for _ in range(3):
                time.sleep(1.5)
                pids = gw.child_pids("workers")
                os.kill(pids[0], signal.SIGKILL)
                killed += 1
                gw.wait_ready(timeout=15, workers=2)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert killed == 3
        failed = [s for s in seen if s[1] != "ok"]
        assert len(seen) > 200 and failed, (len(seen), failed)    # the kills did cut requests short
        ids = {rid for rid, _, _ in seen}
        assert len(ids) == len(seen)

        def admin(path):
            req = urllib.request.Request(gw.url + path, headers={"Authorization": "Bearer admin-token-for-kill-tests"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        # rows land within a second; the ledger charges a dead worker's reservations within two
        deadline = time.monotonic() + 20
        while True:
            rows = {r["id"]: r for r in request_log(gw.data_dir)}
            usage = [u for u in admin("/admin/usage?key=vk-load")["usage"] if u["kind"] == "budget"][0]
            logged = round(sum(r["cost_usd"] for r in rows.values()), 6)
            if (ids <= set(rows) and usage["reserved_usd"] == 0 and logged == usage["spent_usd"]) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ids <= set(rows), f"{len(ids - set(rows))} of {len(ids)} requests are not in the log"
        assert len(rows) == len(ids)                                   # and nothing else is
        for rid, outcome, status in seen:
            row = rows[rid]
            if outcome == "ok":
                assert (row["status"], row["error"]) == (200, ""), row
            else:
                assert row["status"] == status and row["error"].lower() == outcome.lower(), (outcome, row)
        assert usage["reserved_usd"] == 0
        assert logged == usage["spent_usd"] > 0
