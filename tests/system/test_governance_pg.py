"""Keys on PostgreSQL across nodes: two real `finops serve` nodes (each its own data dir and port)
share one PostgreSQL (`[governance] store = "postgres"`, enforced mode). A key created, disabled,
rotated or deleted through either node's admin API, or with `finops keys`, is in force on the other
node within 1 s, as the issue promises; PostgreSQL down, requests go on with the keys they had and
admin writes answer a retryable 503. Real boto3 clients, a real PostgreSQL
(tests/helpers/postgres_server.py).

How "within 1 s" is checked without depending on the machine's speed: the clock starts when the
admin call has returned (the change is committed), and the change counts as in force if a request
*sent* before that second was up got the new answer; then, once the second is over, every request
(spread over both of the node's workers) must get it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.helpers.gateway import Gateway
from tests.helpers.postgres_server import PostgresServer

ADMIN = "admin-token-for-pg-tests-0123"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MSG = [{"role": "user", "content": [{"text": "hi"}]}]
IN_FORCE = 1.0          # the bound: a change is in force on every node within 1 s
AFTER = 4               # requests that must all see the change once the second is over


def config(url: str) -> str:
    return f"""
[server]
workers = 2

[providers.mock]
kind = "mock"

[default_route]
provider = "mock"

[governance]
mode = "enforced"
admin_token = "{ADMIN}"
store = "postgres"
postgres_url = "{url}"
"""


def node(tmp_path, name: str, url: str) -> Gateway:
    d = tmp_path / name
    d.mkdir()
    return Gateway(d, config(url), extra_env={"FINOPS_NODE_NAME": name})


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, postgres):
    """Nodes a and b started at once on one empty database (both migrate it: safely)."""
    url = postgres.create_database()
    tmp = tmp_path_factory.mktemp("pgnodes")
    a, b = node(tmp, "a", url), node(tmp, "b", url)
    a.proc = b.proc = None
    try:
        for g in (a, b):                # both launched before either is waited for
            g.proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "finops"), "serve"],
                                      env=g.env(), stdout=open(g.log_path, "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
        for g in (a, b):
            g.wait_ready(workers=2)
        yield a, b
    finally:
        for g in (a, b):
            g.stop()


def client(gw, akid: str, secret: str):
    return boto3.client("bedrock-runtime", endpoint_url=gw.endpoint, region_name="us-east-1",
                        aws_access_key_id=akid, aws_secret_access_key=secret,
                        config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 1},
                                          read_timeout=30, connect_timeout=5))


def admin(gw, method: str, path: str, body=None) -> tuple[int, dict]:
    req = urllib.request.Request(gw.url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def outcome(gw, akid: str, secret: str) -> str:
    """"ok", or the error code the node answered."""
    try:
        client(gw, akid, secret).converse(modelId=MODEL, messages=MSG)
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


def in_force_within_a_second(gws, akid: str, secret: str, want: str, since: float) -> None:
    """On each node of `gws` (one or a list), a request sent within IN_FORCE s of `since` got
    `want`, and every request after that second does."""
    gws = gws if isinstance(gws, (list, tuple)) else [gws]
    for gw in gws:
        got = []
        while True:
            sent = time.monotonic()
            got.append(outcome(gw, akid, secret))
            if got[-1] == want:
                break
            if sent - since > IN_FORCE:
                break
            time.sleep(0.02)
        assert got[-1] == want and sent - since <= IN_FORCE, \
            f"{gw.url}: expected {want} within {IN_FORCE}s of the change; got {got}"
    time.sleep(max(0.0, since + IN_FORCE - time.monotonic()))
    for gw in gws:
        later = [outcome(gw, akid, secret) for _ in range(AFTER)]
        assert later == [want] * AFTER, f"{gw.url}: after {IN_FORCE}s some workers still answer otherwise: {later}"


def test_a_key_made_on_one_node_works_on_the_other_and_its_changes_follow_within_a_second(nodes):
    a, b = nodes
    status, key = admin(a, "POST", "/admin/keys", {"name": "shared"})
    since = time.monotonic()
    assert status == 201, key
    in_force_within_a_second(b, key["id"], key["secret"], "ok", since)
    assert outcome(a, key["id"], key["secret"]) == "ok"        # node a's own worker took it at once

    status, doc = admin(b, "PATCH", f"/admin/keys/{key['id']}", {"enabled": False})
    since = time.monotonic()
    assert status == 200 and doc["enabled"] is False, doc
    in_force_within_a_second(a, key["id"], key["secret"], "AccessDeniedException", since)

    status, doc = admin(a, "PATCH", f"/admin/keys/{key['id']}", {"enabled": True, "secret": "rotate"})
    since = time.monotonic()
    assert status == 200 and doc["secret"] != key["secret"], doc
    in_force_within_a_second(b, key["id"], doc["secret"], "ok", since)
    assert outcome(b, key["id"], key["secret"]) == "InvalidSignatureException"   # the old secret is dead

    status, _ = admin(b, "DELETE", f"/admin/keys/{key['id']}")
    since = time.monotonic()
    assert status == 200
    in_force_within_a_second(a, key["id"], doc["secret"], "UnrecognizedClientException", since)
    assert outcome(b, key["id"], doc["secret"]) == "UnrecognizedClientException"


def test_both_nodes_list_the_same_keys(nodes):
    a, b = nodes
    status, made = admin(b, "POST", "/admin/keys", {"name": "listed"})
    assert status == 201
    for g in (a, b):
        status, doc = admin(g, "GET", f"/admin/keys/{made['id']}")
        assert status == 200 and doc["name"] == "listed" and doc["secret"] != made["secret"]   # masked


def test_finops_keys_create_on_the_postgres_config_makes_a_key_both_nodes_accept(nodes, tmp_path):
    a, b = nodes
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
    env.update(FINOPS_CONFIG=a.config_path, FINOPS_DATA_DIR=str(tmp_path / "cli-data"))  # not a node's data dir
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "finops"), "keys", "create",
                          "--name", "from the cli", "--json"], capture_output=True, text=True, env=env, timeout=60)
    since = time.monotonic()
    assert out.returncode == 0, out.stderr
    key = json.loads(out.stdout)
    in_force_within_a_second([a, b], key["id"], key["secret"], "ok", since)
    assert not (tmp_path / "cli-data" / "governance.sqlite").exists()


def test_postgres_down_requests_go_on_and_admin_writes_answer_a_retryable_503(tmp_path):
    """Its own PostgreSQL, stopped mid-test: the node serves the keys it had, refuses admin writes
    with 503 ServiceUnavailableException naming PostgreSQL, and takes writes again once it is back."""
    with PostgresServer() as pg:
        url = pg.create_database()
        with node(tmp_path, "solo", url) as gw:
            status, key = admin(gw, "POST", "/admin/keys", {"name": "before"})
            assert status == 201
            assert outcome(gw, key["id"], key["secret"]) == "ok"
            pg.stop()
            assert [outcome(gw, key["id"], key["secret"]) for _ in range(AFTER)] == ["ok"] * AFTER
            req = urllib.request.Request(gw.url + "/admin/keys", method="POST", data=b'{"name": "during"}',
                                         headers={"authorization": f"Bearer {ADMIN}"})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=60)
            assert e.value.code == 503
            assert e.value.headers["x-amzn-errortype"].startswith("ServiceUnavailableException")
            message = json.loads(e.value.read())["message"]
            assert "PostgreSQL" in message and "try again" in message
            pg.start()
            deadline = time.monotonic() + 30
            while (status := admin(gw, "POST", "/admin/keys", {"name": "after"})[0]) == 503:
                assert time.monotonic() < deadline, "admin writes did not come back with PostgreSQL"
                time.sleep(0.2)
            assert status == 201
