"""Launch paths: `finops serve` with config errors and overrides, and honcho with the Procfile."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers.gateway import Gateway, free_port

FINOPS = os.path.join(os.path.dirname(sys.executable), "finops")
MSG = [{"role": "user", "content": [{"text": "via honcho"}]}]


def test_procfile_with_honcho_and_several_workers(tmp_path):
    with Gateway(tmp_path, honcho=True, workers=3, frontends=2) as gw:
        gw.wait_ready(workers=3)
        assert len(gw.child_pids("workers")) == 3
        assert len(gw.child_pids("frontend")) == 2
        client = gw.client()
        for _ in range(6):  # both frontends share the port; every request is served
            r = client.converse(modelId="amazon.nova-lite-v1:0", messages=MSG)
            assert "via honcho" in r["output"]["message"]["content"][0]["text"]
        events = list(client.converse_stream(modelId="amazon.nova-lite-v1:0", messages=MSG)["stream"])
        assert "metadata" in events[-1]


BAD_CONFIGS = [
    ("[server]\nport = \"eighty\"\n", "server.port: expected int"),
    ("[server]\nwokers = 2\n", "server.wokers: unknown key"),
    ("[server]\nworker_wait_seconds = -1\n", "server.worker_wait_seconds: must be a number of seconds >= 0"),
    ("[providers.a]\nkind = \"nope\"\n", "providers.a.kind"),
    ("[providers.a]\nkind = \"bedrock\"\nkeys = [{access_key_id = \"${FINOPS_TEST_UNSET_VAR}\", secret_access_key = \"x\"}]\n",
     "FINOPS_TEST_UNSET_VAR"),
    ("[providers.a]\nkind = \"mock\"\n[[routes]]\nmodels = [\"x*\"]\nprovider = \"b\"\n", "routes[0].provider"),
    ("[server\n", "invalid TOML"),
]


@pytest.mark.parametrize("text,fragment", BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_config_is_refused_with_the_key_named(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
    r = subprocess.run([FINOPS, "serve", "--config", str(path)], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2
    assert fragment in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_env_expansion_and_port_override(tmp_path):
    cfg = ("[server]\nport = 1\n[providers.m]\nkind = \"mock\"\nchunks = \"${FINOPS_TEST_CHUNKS:-3}\"\n"
           "[default_route]\nprovider = \"m\"\n")
    (tmp_path / "c.toml").write_text(cfg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
    env["FINOPS_TEST_CHUNKS"] = "many"
    r = subprocess.run([FINOPS, "check-config", "--config", str(tmp_path / "c.toml")], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 2 and "providers.m.chunks: expected int, got 'many'" in r.stderr, r.stderr
    # with the default (3) it starts, and FINOPS_PORT (set by the harness) overrides port = 1
    with Gateway(tmp_path, cfg) as gw:
        events = list(gw.client().converse_stream(modelId="x", messages=MSG)["stream"])
        assert sum(1 for e in events if "contentBlockDelta" in e) == 3


def test_model_without_route_is_resource_not_found(tmp_path):
    cfg = '[providers.m]\nkind = "mock"\n[[routes]]\nmodels = ["anthropic.*"]\nprovider = "m"\n'
    with Gateway(tmp_path, cfg) as gw:
        c = gw.client()
        assert c.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=MSG)["stopReason"] == "end_turn"
        with pytest.raises(c.exceptions.ResourceNotFoundException, match="meta.llama3-8b-instruct-v1:0"):
            c.converse(modelId="meta.llama3-8b-instruct-v1:0", messages=MSG)
        with pytest.raises(c.exceptions.ResourceNotFoundException, match="routes"):
            c.invoke_model_with_response_stream(modelId="meta.llama3-8b-instruct-v1:0", body=b'{"prompt": "x"}')


def test_a_port_already_taken_stops_serve_with_the_reason_instead_of_restarting(tmp_path):
    """The frontend says it cannot start (a dedicated exit code) and the supervisor stops: no
    restart loop behind a gateway that will never listen."""
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))        # no SO_REUSEPORT: the frontend's bind fails
        holder.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
        env.update(FINOPS_DATA_DIR=str(tmp_path / "data"), FINOPS_PORT=str(port), FINOPS_HOST="127.0.0.1")
        r = subprocess.run([FINOPS, "serve"], capture_output=True, text=True, timeout=60, env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"cannot listen on 127.0.0.1:{port}" in out, out
    assert "frontend cannot start" in out and out.count("started frontend#0") == 1, out


def test_a_frontend_restart_that_finds_its_port_taken_keeps_trying(tmp_path):
    """Once the gateway has served, a frontend that dies and cannot listen again (another process
    took the port meanwhile) is retried with backoff, not a reason to stop everything: when the
    port is free again, the same `finops serve` serves again."""
    with Gateway(tmp_path) as gw:
        [pid] = gw.child_pids("frontend")
        with socket.socket() as squatter:
            os.kill(gw.proc.pid, signal.SIGSTOP)     # the supervisor waits while the port changes hands
            try:
                os.kill(pid, signal.SIGKILL)
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # past TIME_WAIT; no REUSEPORT
                deadline = time.monotonic() + 10
                while True:                 # free once the dead frontend's listening socket is gone
                    try:
                        squatter.bind(("127.0.0.1", gw.port))
                        break
                    except OSError:
                        assert time.monotonic() < deadline, "the killed frontend's port never came free"
                        time.sleep(0.01)
            finally:
                os.kill(gw.proc.pid, signal.SIGCONT)
            squatter.listen()
            deadline = time.monotonic() + 20
            while gw.log().count(f"cannot listen on 127.0.0.1:{gw.port}") < 2:
                assert time.monotonic() < deadline, gw.log()[-3000:]
                time.sleep(0.1)
            assert gw.proc.poll() is None, gw.log()[-3000:]          # still supervising
        gw.wait_ready(timeout=30)
        r = gw.client().converse(modelId="amazon.nova-lite-v1:0", messages=MSG)
        assert r["output"]["message"]["content"][0]["text"].endswith("via honcho")
        assert "Stopping." not in gw.log()
