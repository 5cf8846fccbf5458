"""`finops keys|teams|customers`: main(argv, cfg) over the store in the data dir."""
import json

import pytest

from finops.shared.config import build
from finops.workers.governance.cli import main, parse_budget, parse_rate
from finops.workers.governance.store import Store


@pytest.fixture
def cfg(tmp_path):
    c = build({"server": {"data_dir": str(tmp_path)}}, "t", environ={})
    c.server.data_dir = str(tmp_path)
    return c


def run(cfg, capsys, *argv):
    code = main(list(argv), cfg)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(cfg, capsys, *argv):
    code, out, err = run(cfg, capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_keys_create_prints_id_secret_and_a_boto3_hint(cfg, capsys):
    assert run(cfg, capsys, "teams", "create", "research")[0] == 0
    code, out, err = run(cfg, capsys, "keys", "create", "--name", "alice", "--team", "research",
                         "--model", "anthropic.*", "--model", "amazon.*", "--provider", "bedrock",
                         "--budget", "10/day", "--budget", "2.5/month@dev", "--rate", "100r/minute",
                         "--rate", "50000t/hour", "--expires", "2030-01-01T00:00:00Z")
    assert code == 0 and err == ""
    with Store.open(cfg.server.data_dir) as s:
        [k] = s.list_keys()
    assert f"access key id: {k.id}" in out and f"secret:        {k.secret}" in out
    assert "shown only now" in out
    hint = [line for line in out.splitlines() if line.startswith("boto3:")]
    assert len(hint) == 1 and f'aws_access_key_id="{k.id}"' in hint[0]
    assert f'aws_secret_access_key="{k.secret}"' in hint[0] and 'endpoint_url="http://127.0.0.1:8080"' in hint[0]
    assert k.name == "alice" and k.team == "research" and k.models == ("anthropic.*", "amazon.*")
    assert k.providers == ("bedrock",) and k.expires_at == 1893456000.0 and k.enabled and k.source == "api"
    assert [(b.amount_usd, b.period, b.env) for b in k.budgets] == [(10.0, "day", ""), (2.5, "month", "dev")]
    assert [(r.window, r.requests, r.tokens) for r in k.rate_limits] == [("minute", 100, None), ("hour", None, 50000)]


def test_keys_create_json_and_options(cfg, capsys):
    doc = run_json(cfg, capsys, "keys", "create", "--id", "my-key", "--disabled")
    assert doc["id"] == "my-key" and doc["enabled"] is False and doc["secret"].startswith("fos-")


def test_keys_list_table_and_json(cfg, capsys):
    assert run(cfg, capsys, "keys", "list") == (0, "no keys\n", "")
    run(cfg, capsys, "teams", "create", "team1")
    run(cfg, capsys, "keys", "create", "--id", "key-a", "--name", "alice", "--team", "team1", "--budget", "10/day",
        "--budget", "$2.5/month@dev", "--expires", "2030-01-01")
    run(cfg, capsys, "keys", "create", "--id", "key-b")
    code, out, _ = run(cfg, capsys, "keys", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "NAME", "TEAM", "ENABLED", "EXPIRES", "BUDGETS", "SOURCE"]
    assert lines[1].split() == ["key-a", "alice", "team1", "yes", "2030-01-01T00:00:00Z", "10/day,", "2.5/month@dev", "api"]
    assert lines[2].split() == ["key-b", "-", "-", "yes", "never", "-", "api"]
    assert "fos-" not in out
    doc = run_json(cfg, capsys, "keys", "list", "--team", "team1")
    assert [k["id"] for k in doc["keys"]] == ["key-a"] and doc["keys"][0]["secret"].startswith("fos-…")


def test_keys_show_update_disable_enable_rotate_delete(cfg, capsys):
    created = run_json(cfg, capsys, "keys", "create", "--id", "key-a", "--budget", "1/day")
    code, out, _ = run(cfg, capsys, "keys", "show", "key-a")
    assert code == 0 and "id:          key-a" in out and f"secret:      fos-…{created['secret'][-4:]}" in out
    assert "budgets:     1/day" in out and created["secret"] not in out

    doc = run_json(cfg, capsys, "keys", "update", "key-a", "--name", "bob", "--rate", "5r/minute",
                   "--model", "m*", "--expires", "2030-01-01")
    assert doc["name"] == "bob" and doc["models"] == ["m*"] and doc["budgets"][0]["period"] == "day"
    assert doc["rate_limits"] == [{"window": "minute", "requests": 5, "tokens": None, "env": ""}]
    doc = run_json(cfg, capsys, "keys", "update", "key-a", "--no-budgets", "--no-rates", "--expires", "never")
    assert doc["budgets"] == [] and doc["rate_limits"] == [] and doc["expires"] is None

    assert run(cfg, capsys, "keys", "disable", "key-a")[:2] == (0, "Key key-a disabled.\n")
    assert run_json(cfg, capsys, "keys", "show", "key-a")["enabled"] is False
    assert run(cfg, capsys, "keys", "enable", "key-a")[:2] == (0, "Key key-a enabled.\n")

    code, out, _ = run(cfg, capsys, "keys", "rotate", "key-a")
    with Store.open(cfg.server.data_dir) as s:
        new = s.get_key("key-a").secret
    assert code == 0 and new != created["secret"] and f"secret:        {new}" in out and "boto3:" in out

    assert run(cfg, capsys, "keys", "delete", "key-a")[:2] == (0, "Deleted key key-a.\n")
    code, out, err = run(cfg, capsys, "keys", "show", "key-a")
    assert code == 1 and out == "" and err == "finops: no key 'key-a'\n"


def test_teams_and_customers(cfg, capsys):
    code, out, _ = run(cfg, capsys, "customers", "create", "acme", "--name", "Acme", "--budget", "1000/month")
    assert code == 0 and out.startswith("Created customer acme.") and "budgets:     1000/month" in out
    code, out, _ = run(cfg, capsys, "teams", "create", "research", "--customer", "acme", "--rate", "100r/minute@prod")
    assert code == 0 and "customer:    acme" in out and "rate limits: 100r/minute@prod" in out
    run(cfg, capsys, "keys", "create", "--id", "key-a", "--team", "research")

    code, out, _ = run(cfg, capsys, "teams", "list")
    assert out.splitlines()[1].split() == ["research", "-", "acme", "-", "100r/minute@prod", "api"]
    code, out, _ = run(cfg, capsys, "customers", "list")
    assert out.splitlines()[1].split() == ["acme", "Acme", "1000/month", "-", "api"]
    assert run_json(cfg, capsys, "teams", "list", "--customer", "nobody") == {"teams": []}

    code, out, err = run(cfg, capsys, "teams", "delete", "research")
    assert code == 1 and "team 'research' still has 1 key (key-a)" in err
    code, out, err = run(cfg, capsys, "customers", "delete", "acme")
    assert code == 1 and "customer 'acme' still has 1 team (research)" in err

    assert run_json(cfg, capsys, "teams", "update", "research", "--name", "R&D")["name"] == "R&D"
    run(cfg, capsys, "keys", "delete", "key-a")
    assert run(cfg, capsys, "teams", "delete", "research")[:2] == (0, "Deleted team research.\n")
    assert run(cfg, capsys, "customers", "delete", "acme")[0] == 0
    assert run(cfg, capsys, "customers", "list")[1] == "no customers\n"


def test_config_entries_are_listed_but_read_only(cfg, capsys):
    g = build({"governance": {"keys": [{"id": "cfg-key", "secret": "c" * 20}]}}, "t", environ={}).governance
    with Store.open(cfg.server.data_dir) as s:
        s.sync_config(g)
    code, out, _ = run(cfg, capsys, "keys", "list")
    assert "cfg-key" in out and out.splitlines()[1].split()[-1] == "config"
    for argv in (("keys", "disable", "cfg-key"), ("keys", "rotate", "cfg-key"), ("keys", "delete", "cfg-key")):
        code, out, err = run(cfg, capsys, *argv)
        assert code == 1 and "declared in the config file" in err


@pytest.mark.parametrize("argv,code,msg", [
    (("keys", "create", "--budget", "10/fortnight"), 2, "--budget '10/fortnight': the period must be one of minute"),
    (("keys", "create", "--budget", "ten/day"), 2, "--budget 'ten/day': expected AMOUNT/PERIOD[@ENV]"),
    (("keys", "create", "--rate", "100/minute"), 2, "--rate '100/minute': expected N{r|t}/WINDOW[@ENV]"),
    (("keys", "create", "--rate", "100r/eon"), 2, "--rate '100r/eon': the window must be one of"),
    (("keys", "create", "--team", "nope"), 1, "finops: team: no team 'nope'"),
    (("keys", "create", "--expires", "soon"), 1, "finops: expires: expected an ISO 8601 time"),
    (("keys", "create", "--model", ""), 1, "finops: models: expected a non-empty list"),
    (("keys", "update", "nope-key", "--name", "x"), 1, "finops: no key 'nope-key'"),
    (("keys", "update", "nope-key"), 2, "keys update: nothing to change"),
    (("keys", "update", "some-key", "--budget", "1/day", "--no-budgets"), 2, "--budget and --no-budgets"),
    (("teams", "create", "x"), 1, "finops: id: required, 3-128"),
    (("teams", "create", "team1", "--customer", "nope"), 1, "finops: customer: no customer 'nope'"),
    (("customers", "delete", "nobody"), 1, "finops: no customer 'nobody'"),
    (("keys",), 2, "the following arguments are required"),
    (("keys", "frobnicate"), 2, "invalid choice"),
    (("teams", "create"), 2, "the following arguments are required: id"),
    (("customers", "create", "acme", "--customer", "x"), 2, "unrecognized arguments"),
])
def test_errors(cfg, capsys, argv, code, msg):
    got, out, err = run(cfg, capsys, *argv)
    assert got == code and msg in err and out == ""


def test_help_exits_zero(cfg, capsys):
    code, out, _ = run(cfg, capsys, "keys", "create", "--help")
    assert code == 0 and "--budget AMOUNT/PERIOD[@ENV]" in out


def test_flag_parsers():
    assert parse_budget("10/day") == {"amount_usd": 10.0, "period": "day", "env": ""}
    assert parse_budget("$2.5/month@dev") == {"amount_usd": 2.5, "period": "month", "env": "dev"}
    assert parse_budget(".5/hour") == {"amount_usd": 0.5, "period": "hour", "env": ""}
    assert parse_rate("100r/minute") == {"window": "minute", "requests": 100, "env": ""}
    assert parse_rate("50000t/hour@prod") == {"window": "hour", "tokens": 50000, "env": "prod"}


def test_keys_show_prints_each_budgets_spend_and_forecast(cfg, capsys):
    """The ledger's spend (its last snapshot) and the forecast /admin/usage gives (the request log's
    shape carried to the reset: forecast.py), for the key's budget and its team's."""
    import time

    from finops.workers.governance.directory import load_directory
    from finops.workers.governance.periods import bounds as period_bounds
    from finops.workers.ledger.backend import open_backend
    from finops.workers.observe import logdb
    from finops.workers.observe.forecast import forecast
    from tests.helpers.logrows import insert, row

    run_json(cfg, capsys, "teams", "create", "team-1", "--budget", "50/month")
    run_json(cfg, capsys, "keys", "create", "--id", "key-a", "--team", "team-1", "--budget", "10/month")
    code, out, _ = run(cfg, capsys, "keys", "show", "key-a")     # nothing spent, nothing logged: no forecast
    assert code == 0 and "spend:       $0.0000 of the key 'key-a' monthly budget of $10 (resets" in out
    assert "$0.0000 of the team 'team-1' monthly budget of $50" in out
    assert "forecast" not in out

    with Store.open(cfg.server.data_dir) as s:                    # the ledger charged $3 and saved its counters
        ledger = open_backend(cfg, load_directory(s, cfg))
        ledger.run([("reserve", ("r1", "key-a", "", 5.0, 10, 0)), ("settle", ("r1", 3.0, 10, "key-a", "", 0.0))])
        s.save_snapshot(ledger.snapshot())
    now = time.time()
    start, end = period_bounds("month", now, "UTC")
    points = [(start + (now - start) * i / 11, 0.3) for i in range(1, 11)]
    db = logdb.open_db(cfg.server.data_dir)
    insert(db, [row(ts=t, vk="key-a", team="team-1", cost_usd=c) for t, c in points])
    db.close()

    [key, team] = sorted(run_json(cfg, capsys, "keys", "show", "key-a")["usage"], key=lambda u: u["limit_usd"])
    want = forecast(points, start, end, time.time(), limit=10.0, spent=3.0)
    assert key["spent_usd"] == pytest.approx(3.0) and team["spent_usd"] == pytest.approx(3.0)
    assert key["forecast_usd"] == pytest.approx(want.projected_usd, rel=1e-3) and key["forecast_usd"] > 3.0
    assert "forecast_usd" in team
    code, out, _ = run(cfg, capsys, "keys", "show", "key-a")
    assert code == 0 and "spend:       $3.0000 of the key 'key-a' monthly budget of $10 (resets" in out
    assert f"forecast ${key['forecast_usd']:.4f} at the reset" in out
    assert ("crosses the limit at" in out) == (key["forecast_crosses_at"] is not None)
