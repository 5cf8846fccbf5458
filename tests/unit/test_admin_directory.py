"""The admin API over the governance store (workers/admin/directory.py through api.call_store, as
the CLI runs it): every route, every error."""
import json

import pytest

from finops.shared.config import build
from finops.workers.admin.api import call_store as handle
from finops.workers.admin.directory import mask

SECRET = "s" * 20


def call(store, method, path, body=None, query=None):
    raw = b"" if body is None else body if isinstance(body, (bytes, str)) else json.dumps(body).encode()
    return handle(store, method, path, query or {}, raw)


@pytest.fixture
def config_rows(store):
    """A customer, team and key declared in the config file."""
    g = build({"governance": {"customers": [{"id": "cfg-cust"}], "teams": [{"id": "cfg-team", "customer": "cfg-cust"}],
                              "keys": [{"id": "cfg-key", "secret": "c" * 20, "team": "cfg-team"}]}},
              "t", environ={}).governance
    store.sync_config(g)


# --- keys ----------------------------------------------------------------------------------------

def test_key_create_returns_the_secret_once(store):
    call(store, "POST", "/admin/teams", {"id": "research"})
    st, doc = call(store, "POST", "/admin/keys", {
        "name": "alice", "team": "research", "models": ["anthropic.*"], "providers": ["bedrock"],
        "budgets": [{"amount_usd": 10, "period": "day"}, {"amount_usd": 2.5, "period": "month", "env": "dev"}],
        "rate_limits": [{"window": "minute", "requests": 100}], "expires": "2030-01-01T00:00:00Z", "enabled": True})
    assert st == 201
    assert doc["id"].startswith("vk-") and doc["secret"].startswith("fos-") and len(doc["secret"]) == 44
    assert doc["name"] == "alice" and doc["team"] == "research" and doc["models"] == ["anthropic.*"]
    assert doc["providers"] == ["bedrock"] and doc["enabled"] is True and doc["source"] == "api"
    assert doc["expires"] == "2030-01-01T00:00:00Z" and doc["expired"] is False
    assert doc["budgets"] == [{"amount_usd": 10.0, "period": "day", "env": ""},
                              {"amount_usd": 2.5, "period": "month", "env": "dev"}]
    assert doc["rate_limits"] == [{"window": "minute", "requests": 100, "tokens": None, "env": ""}]
    k = store.get_key(doc["id"])
    assert k.secret == doc["secret"] and k.expires_at == 1893456000.0

    st, got = call(store, "GET", f"/admin/keys/{doc['id']}")
    assert st == 200 and got["secret"] == "fos-…" + doc["secret"][-4:] and doc["secret"] not in json.dumps(got)
    assert {**got, "secret": doc["secret"]} == doc

    st, listed = call(store, "GET", "/admin/keys")
    assert st == 200 and [k["id"] for k in listed["keys"]] == [doc["id"]]
    assert doc["secret"] not in json.dumps(listed)


def test_key_create_with_defaults_and_given_id_and_secret(store):
    st, doc = call(store, "POST", "/admin/keys", {"id": "my-key", "secret": "x" * 16})
    assert st == 201 and doc["id"] == "my-key" and doc["secret"] == "x" * 16
    assert doc["models"] == ["*"] and doc["providers"] == ["*"] and doc["enabled"] is True
    assert doc["expires"] is None and doc["budgets"] == [] and doc["team"] == "" and doc["name"] == ""
    st, doc = call(store, "POST", "/admin/keys", None)            # an empty body is an empty object
    assert st == 201
    st, doc = call(store, "POST", "/admin/keys", {"id": "my-key"})
    assert st == 409 and doc == {"message": "key 'my-key' already exists"}


def test_key_list_filters_by_team(store):
    call(store, "POST", "/admin/teams", {"id": "team1"})
    call(store, "POST", "/admin/keys", {"id": "k-in", "team": "team1"})
    call(store, "POST", "/admin/keys", {"id": "k-out"})
    assert [k["id"] for k in call(store, "GET", "/admin/keys", query={"team": ["team1"]})[1]["keys"]] == ["k-in"]
    assert [k["id"] for k in call(store, "GET", "/admin/keys", query={"team": ""})[1]["keys"]] == ["k-out"]


@pytest.mark.parametrize("body,msg", [
    ({"budgets": [{"amount_usd": 10, "period": "fortnight"}]}, "budgets[0].period: must be one of"),
    ({"budgets": {"amount_usd": 10}}, "budgets: expected a list"),
    ({"budgets": [{"amount_usd": -1, "period": "day"}]}, "budgets[0].amount_usd: must be >= 0"),
    ({"budgets": [{"amount_usd": 1, "period": "day", "cap": 2}]}, "budgets[0].cap: unknown key"),
    ({"rate_limits": [{"window": "minute"}]}, "rate_limits[0]: give requests = N, tokens = N, or both"),
    ({"rate_limits": [{"window": "minute", "requests": 1.5}]}, "rate_limits[0].requests: must be an integer"),
    ({"rate_limits": [{"window": "eon", "tokens": 5}]}, "rate_limits[0].window: must be one of"),
    ({"expires": "next tuesday"}, "expires: expected an ISO 8601 time"),
    ({"expires": True}, "expires: expected an ISO 8601 time"),
    ({"name": 5}, "name: expected a string"),
    ({"name": "x" * 300}, "name: at most 256 characters"),
    ({"team": "a b"}, "team: required, 3-128 letters"),
    ({"team": "nope"}, "team: no team 'nope'"),
    ({"models": []}, "models: expected a non-empty list of globs"),
    ({"providers": "bedrock"}, "providers: expected a non-empty list of globs"),
    ({"enabled": "yes"}, "enabled: expected true or false"),
    ({"id": "no spaces"}, "id: required, 3-128 letters"),
    ({"secret": "short"}, "secret: 16-256 printable ASCII characters"),
    ({"secret": "has a space in it!!"}, "secret: 16-256 printable ASCII characters"),
    ({"colour": "red"}, "colour: unknown field (known: id, secret, name, team"),
])
def test_key_create_validation(store, body, msg):
    st, doc = call(store, "POST", "/admin/keys", body)
    assert st == 400 and doc["message"].startswith(msg), doc
    assert store.list_keys() == []


@pytest.mark.parametrize("body,msg", [
    (b"{not json", "body: not valid JSON"),
    (b"[1, 2]", "body: expected a JSON object, got list"),
    (b"\xff\xfe", "body: not valid JSON"),
])
def test_bad_bodies(store, body, msg):
    for method, path in (("POST", "/admin/keys"), ("POST", "/admin/teams"), ("POST", "/admin/customers")):
        st, doc = call(store, method, path, body)
        assert st == 400 and doc["message"].startswith(msg)


def test_key_patch(store):
    call(store, "POST", "/admin/teams", {"id": "team1"})
    _, created = call(store, "POST", "/admin/keys", {"id": "key1", "name": "a", "budgets": [{"amount_usd": 1, "period": "day"}]})
    st, doc = call(store, "PATCH", "/admin/keys/key1", {"name": "b", "team": "team1", "enabled": False,
                                                      "expires": 1893456000, "models": ["m*"],
                                                      "rate_limits": [{"window": "hour", "tokens": 9}]})
    assert st == 200 and doc["name"] == "b" and doc["team"] == "team1" and doc["enabled"] is False
    assert doc["expires"] == "2030-01-01T00:00:00Z" and doc["models"] == ["m*"]
    assert doc["budgets"] == created["budgets"]                       # untouched fields stay
    assert doc["secret"] == mask(created["secret"]) and doc["created_at"] == created["created_at"]
    st, doc = call(store, "PATCH", "/admin/keys/key1", {"expires": None, "team": "", "budgets": []})
    assert st == 200 and doc["expires"] is None and doc["team"] == "" and doc["budgets"] == []
    k = store.get_key("key1")
    assert k.expires_at is None and k.team == "" and k.enabled is False and k.secret == created["secret"]


def test_key_patch_secret_rotate_and_set(store):
    _, created = call(store, "POST", "/admin/keys", {"id": "key1"})
    st, doc = call(store, "PATCH", "/admin/keys/key1", {"secret": "rotate"})
    assert st == 200 and doc["secret"].startswith("fos-") and doc["secret"] != created["secret"]
    assert store.get_key("key1").secret == doc["secret"]
    st, doc = call(store, "PATCH", "/admin/keys/key1", {"secret": "y" * 20})
    assert st == 200 and doc["secret"] == "…yyyy" and store.get_key("key1").secret == "y" * 20


@pytest.mark.parametrize("body,msg", [
    ({"id": "other"}, "id: cannot be changed"),
    ({"secret": "tiny"}, "secret: 16-256"),
    ({"team": "nope"}, "team: no team 'nope'"),
    ({"budgets": [{"period": "day"}]}, "budgets[0]: expected {amount_usd = N"),
    ({"what": 1}, "what: unknown field (known: secret, name"),
])
def test_key_patch_validation(store, body, msg):
    call(store, "POST", "/admin/keys", {"id": "key1", "name": "keep"})
    st, doc = call(store, "PATCH", "/admin/keys/key1", body)
    assert st == 400 and doc["message"].startswith(msg), doc
    assert store.get_key("key1").name == "keep"


def test_key_delete_and_not_found(store):
    call(store, "POST", "/admin/keys", {"id": "key1"})
    assert call(store, "DELETE", "/admin/keys/key1") == (200, {"deleted": "key1"})
    assert store.get_key("key1") is None
    for method in ("GET", "PATCH", "DELETE"):
        assert call(store, method, "/admin/keys/key1", {}) == (404, {"message": "no key 'key1'"})


def test_expired_flag(store):
    st, doc = call(store, "POST", "/admin/keys", {"id": "key1", "expires": "2001-01-01"})
    assert st == 201 and doc["expired"] is True


# --- teams and customers ---------------------------------------------------------------------------

def test_team_and_customer_crud(store):
    st, c = call(store, "POST", "/admin/customers", {"id": "acme", "name": "Acme",
                                                     "budgets": [{"amount_usd": 1000, "period": "month"}]})
    assert st == 201 and c == {"id": "acme", "name": "Acme", "budgets": [{"amount_usd": 1000.0, "period": "month", "env": ""}],
                               "rate_limits": [], "source": "api"}
    st, t = call(store, "POST", "/admin/teams", {"id": "research", "customer": "acme",
                                                 "rate_limits": [{"window": "minute", "requests": 5, "env": "prod"}]})
    assert st == 201 and t["customer"] == "acme" and t["source"] == "api"
    assert t["rate_limits"] == [{"window": "minute", "requests": 5, "tokens": None, "env": "prod"}]
    call(store, "POST", "/admin/teams", {"id": "loners"})
    assert call(store, "GET", "/admin/teams/research") == (200, t)
    assert call(store, "GET", "/admin/customers/acme") == (200, c)
    assert [x["id"] for x in call(store, "GET", "/admin/teams")[1]["teams"]] == ["loners", "research"]
    assert [x["id"] for x in call(store, "GET", "/admin/teams", query={"customer": "acme"})[1]["teams"]] == ["research"]
    assert call(store, "GET", "/admin/customers")[1] == {"customers": [c]}

    st, team2 = call(store, "PATCH", "/admin/teams/research", {"name": "R&D", "customer": ""})
    assert st == 200 and team2["name"] == "R&D" and team2["customer"] == "" and team2["rate_limits"] == t["rate_limits"]
    st, c2 = call(store, "PATCH", "/admin/customers/acme", {"budgets": []})
    assert st == 200 and c2["budgets"] == [] and c2["name"] == "Acme"

    assert call(store, "DELETE", "/admin/teams/research") == (200, {"deleted": "research"})
    assert call(store, "DELETE", "/admin/customers/acme") == (200, {"deleted": "acme"})
    assert call(store, "GET", "/admin/teams/research") == (404, {"message": "no team 'research'"})
    assert call(store, "PATCH", "/admin/customers/acme", {}) == (404, {"message": "no customer 'acme'"})


def test_team_and_customer_errors(store):
    assert call(store, "POST", "/admin/teams", {"name": "x"})[1]["message"].startswith("id: required")
    assert call(store, "POST", "/admin/customers", {"id": "x"})[1]["message"].startswith("id: required, 3-128")
    assert call(store, "POST", "/admin/teams", {"id": "team1", "customer": "nope"}) == \
        (400, {"message": "customer: no customer 'nope'"})
    assert call(store, "POST", "/admin/customers", {"id": "cust1", "customer": "x"})[1]["message"].startswith(
        "customer: unknown field (known: id, name, budgets, rate_limits)")
    call(store, "POST", "/admin/customers", {"id": "cust1"})
    call(store, "POST", "/admin/teams", {"id": "team1", "customer": "cust1"})
    assert call(store, "POST", "/admin/teams", {"id": "team1"}) == (409, {"message": "team 'team1' already exists"})
    assert call(store, "POST", "/admin/customers", {"id": "cust1"}) == (409, {"message": "customer 'cust1' already exists"})
    assert call(store, "PATCH", "/admin/teams/team1", {"id": "team2"})[1]["message"].startswith("id: cannot be changed")
    assert call(store, "PATCH", "/admin/teams/team1", {"budgets": "lots"})[0] == 400
    call(store, "POST", "/admin/keys", {"id": "key1", "team": "team1"})
    st, doc = call(store, "DELETE", "/admin/teams/team1")
    assert st == 409 and doc["message"].startswith("team 'team1' still has 1 key (key1)")
    st, doc = call(store, "DELETE", "/admin/customers/cust1")
    assert st == 409 and doc["message"].startswith("customer 'cust1' still has 1 team (team1)")


# --- config-sourced rows are read-only --------------------------------------------------------------

@pytest.mark.usefixtures("config_rows")
@pytest.mark.parametrize("kind,id", [("keys", "cfg-key"), ("teams", "cfg-team"), ("customers", "cfg-cust")])
def test_config_rows_are_read_only(store, kind, id):
    st, doc = call(store, "GET", f"/admin/{kind}/{id}")
    assert st == 200 and doc["source"] == "config"
    assert any(x["id"] == id and x["source"] == "config" for x in call(store, "GET", f"/admin/{kind}")[1][kind])
    for method, body in (("PATCH", {"name": "x"}), ("DELETE", None)):
        st, doc = call(store, method, f"/admin/{kind}/{id}", body)
        assert st == 409 and "declared in the config file" in doc["message"] and "edit the config file" in doc["message"]
    st, doc = call(store, "POST", f"/admin/{kind}", {"id": id})
    assert st == 409 and "already exists" in doc["message"]


@pytest.mark.usefixtures("config_rows")
def test_api_keys_may_join_a_config_team(store):
    st, doc = call(store, "POST", "/admin/keys", {"team": "cfg-team"})
    assert st == 201 and doc["team"] == "cfg-team"


# --- routing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/admin", "/admin/", "/admin/users", "/admin/keys/key1/extra", "/model/x/converse",
                                  "/adminx/keys", "keys"])
def test_unknown_routes(store, path):
    st, doc = call(store, "GET", path)
    assert st == 404 and "no admin route" in doc["message"]


@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", "/admin/keys", "GET, POST"), ("DELETE", "/admin/teams", "GET, POST"),
    ("POST", "/admin/keys/key1", "GET, PATCH, DELETE"), ("PUT", "/admin/customers/cust1", "GET, PATCH, DELETE")])
def test_wrong_methods(store, method, path, allowed):
    st, doc = call(store, method, path)
    assert st == 405 and doc["message"].endswith(f"(allowed: {allowed})")


def test_trailing_slash_query_string_lowercase_method_and_quoted_ids(store):
    assert call(store, "post", "/admin/keys/", {"id": "k_1"})[0] == 201
    assert call(store, "get", "/admin/keys?x=1")[1]["keys"][0]["id"] == "k_1"
    assert call(store, "GET", "/admin/keys/k%5F1")[0] == 200
    assert handle(store, "GET", "/admin/keys", None, None)[0] == 200


def test_store_busy_is_503(store, monkeypatch):
    import sqlite3

    def locked():
        raise sqlite3.OperationalError("database is locked")
    monkeypatch.setattr(store, "list_keys", locked)
    st, doc = call(store, "GET", "/admin/keys")
    assert st == 503 and "database is locked" in doc["message"]


def test_key_tags_through_the_api_and_the_config(store):
    st, doc = call(store, "POST", "/admin/keys", {"id": "tagged", "secret": "t" * 20, "tags": {"team": "ads"}})
    assert st == 201 and doc["tags"] == {"team": "ads"}
    st, doc = call(store, "PATCH", "/admin/keys/tagged", {"tags": {"team": "search", "cost_center": "cc 1"}})
    assert st == 200 and doc["tags"] == {"team": "search", "cost_center": "cc 1"}
    assert store.get_key("tagged").tags == {"team": "search", "cost_center": "cc 1"}
    for bad in ({"team": 1}, ["team"], {"bad'name": "x"}, {f"k{i}": "v" for i in range(17)}):
        st, doc = call(store, "PATCH", "/admin/keys/tagged", {"tags": bad})
        assert st == 400 and doc["message"].startswith("tags:"), doc
    g = build({"governance": {"keys": [{"id": "cfg-tags", "secret": "c" * 20, "tags": {"team": "cfg"}}]}},
              "t", environ={}).governance
    store.sync_config(g)
    assert store.get_key("cfg-tags").tags == {"team": "cfg"}
    with pytest.raises(Exception, match="tags"):
        build({"governance": {"keys": [{"id": "cfg-bad", "secret": "c" * 20, "tags": {"team": 3}}]}}, "t", environ={})
