"""Each process imports only what it runs (README "Performance": idle memory).

Every module a process imports stays in its RSS for the process's life: botocore with urllib3
(about 15 MiB), psycopg with libpq (about 20), prometheus_client (about 12, ssl included), trio
(about 15, ssl included), OpenSSL itself (hashlib, secrets: 3.4). Each process's entry module must
load with the heavy packages it never uses on the default configuration blocked: the ledger and the
observer are blocking actors (no trio), nothing but a configured PostgreSQL store or log imports
psycopg, nothing but a bedrock provider or a SigV4 check imports botocore, the observer renders
metrics without prometheus_client (observe/exposition.py), and the supervisor carries no config
loader (it is exec'd with a plan: launcher/supervisor.py).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from finops.shared.lazy import lazy
from tests.unit.test_layering import BLOCKER   # python -c BLOCKER MODULE a,b: import MODULE with a, b blocked


ENTRY_MODULES = {
    "finops.launcher.supervisor": ("msgspec", "tomllib", "trio", "zmq", "ssl", "_hashlib", "email", "http",
                                   "psycopg", "botocore", "prometheus_client"),
    "finops.workers.ledger.actor": ("trio", "ssl", "_hashlib", "psycopg", "botocore", "prometheus_client",
                                    "hypercorn", "h11", "httpx"),
    "finops.workers.observe.actor": ("trio", "ssl", "_hashlib", "http", "email", "psycopg", "botocore",
                                     "prometheus_client", "hypercorn", "h11", "httpx"),
    "finops.workers.worker": ("psycopg", "botocore", "prometheus_client", "hypercorn"),
    "finops.frontend.server": ("psycopg", "botocore", "prometheus_client", "sqlite3"),
}


@pytest.mark.parametrize("module", sorted(ENTRY_MODULES))
def test_a_process_loads_without_what_it_never_runs(module):
    r = subprocess.run([sys.executable, "-c", BLOCKER, module, ",".join(ENTRY_MODULES[module])],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_blocker_blocks():
    """The check above can fail: the worker does import trio."""
    r = subprocess.run([sys.executable, "-c", BLOCKER, "finops.workers.worker", "trio"], capture_output=True, text=True)
    assert r.returncode != 0 and "imported trio, which is blocked here" in r.stderr


def test_a_lazy_module_is_imported_on_first_use_and_then_is_the_module():
    r = subprocess.run([sys.executable, "-c", """
import sys
from finops.shared.lazy import lazy
json = lazy("json", globals())
assert "json" not in sys.modules and type(json).__name__ == "LazyModule"
assert json.dumps([1]) == "[1]"
assert "json" in sys.modules and json is sys.modules["json"]
"""], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_lazy_module_without_a_namespace_stays_a_proxy():
    m = lazy("colorsys")
    assert m.rgb_to_hsv(0.0, 0.0, 0.0) == (0.0, 0.0, 0.0) and "imported" in repr(m)
    with pytest.raises(AttributeError):
        m.no_such_function


def test_signing_and_checking_sigv4_never_import_botocore():
    """The bedrock provider signs and the frontend's SigV4 check verifies with finops.shared.sigv4
    alone: botocore (and its 15 MiB) is a test oracle, not a run-time dependency."""
    code = BLOCKER.replace("importlib.import_module(sys.argv[1])", """
from datetime import datetime, timezone
from finops.shared import config as configmod, sigv4
from finops.workers.providers.registry import build_provider
from finops.workers.request import Attempt
cfg = configmod.build({"providers": {"b": {"kind": "bedrock", "region": "us-east-1",
                                           "keys": [{"access_key_id": "AKID", "secret_access_key": "s"}]}},
                       "default_route": {"provider": "b"}}, "test")
p = build_provider(cfg.providers["b"])
a = Attempt(number=1, target="b/*", provider="b", upstream_model="m:1", fallback=False, key_index=0,
            key=p.cfg.keys[0], key_circuit="", op="converse", model_id="m", headers={}, started=0.0)
url, headers = p.signed_request(a, b"{}")
now = datetime.now(timezone.utc)
h = sigv4.sign_headers("POST", "http://127.0.0.1:8080/model/m%3A1/converse", {"content-type": "application/json"},
                       b"{}", access_key_id="AKID", secret_key="s", region="us-east-1", now=now)
sigv4.verify("POST", "http", "127.0.0.1:8080", "/model/m%3A1/converse", {k.lower(): v for k, v in h.items()},
             b"{}", "s", now)
""")
    r = subprocess.run([sys.executable, "-c", code, "unused", "botocore"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
