"""Launch paths: `finops serve` with config errors and overrides, and honcho with the Procfile."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.gateway import Gateway

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
