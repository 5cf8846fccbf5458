"""scripts/fleet.py's config writing: the shared config it gives every node is valid TOML that the
gateway accepts, with the shared backends set and the user's own choices kept."""
from __future__ import annotations

import datetime as dt
import os
import sys
import tomllib

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import fleet  # noqa: E402

from finops.shared import config as configmod  # noqa: E402

REDIS, PG = "redis://127.0.0.1:6390/0", "postgresql://finops:pw@127.0.0.1:5439/finops"


@pytest.mark.parametrize("doc", [
    {"a": 1, "b": 2.5, "c": True, "d": "x \"quoted\" \\ back\nslash", "e": [1, 2], "f": []},
    {"t": {"u": {"v": 1}}, "pricing": {"*": {"input": 3.0}, "anthropic.claude-*": {"output": 15.0}}},
    {"routes": [{"models": ["a.*"], "provider": "p", "cache": {"ttl": "1h"}}, {"models": ["b"], "provider": "q"}]},
    {"keys": [{"id": "k", "budgets": [{"amount_usd": 1.0, "period": "day"}], "expires": dt.datetime(2030, 1, 1)}]},
    {"empty": {}, "unicode": "héllo ×"},
])
def test_toml_dumps_reads_back_the_same(doc):
    assert tomllib.loads(fleet.toml_dumps(doc)) == doc


def test_the_demo_config_is_a_valid_gateway_config_on_redis_and_postgres():
    cfg, admin = fleet.fleet_config(fleet.MOCK, REDIS, PG, workers=2)
    text = fleet.toml_dumps(cfg)
    c = configmod.build(tomllib.loads(text), "fleet")
    g = c.governance
    assert (g.ledger, g.redis_url, g.store, g.postgres_url, g.mode) == ("redis", REDIS, "postgres", PG, "enforced")
    assert g.admin_token == admin and admin.startswith("fleet-admin-")
    assert [k.id for k in g.keys] == [fleet.DEMO_KEY]
    assert c.server.workers == 2 and c.server.host == "127.0.0.1"


def test_a_given_config_keeps_its_choices_and_loses_per_node_settings():
    base = tomllib.loads('[server]\nport = 9999\nworkers = 4\nnode_name = "x"\n'
                        '[governance]\nmode = "open"\nadmin_token = "mine-0123456789"\nledger = "local"\n'
                        '[providers.m]\nkind = "mock"\n[default_route]\nprovider = "m"\n')
    cfg, admin = fleet.fleet_config(base, REDIS, PG, workers=2)
    assert admin == "mine-0123456789"
    assert cfg["governance"]["mode"] == "open" and cfg["governance"]["ledger"] == "redis"
    assert cfg["server"] == {"workers": 4, "host": "127.0.0.1"}       # port, node name: per node, on the command line
    assert base["governance"]["ledger"] == "local"                   # the caller's dict is not changed
    configmod.build(tomllib.loads(fleet.toml_dumps(cfg)), "fleet")
