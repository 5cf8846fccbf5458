"""The admin API over the governance store: virtual keys, teams and customers (the directory,
governance/directory.py). One function per route, each `(store, request) -> (status, JSON dict)`;
api.py's route table names them, and the `finops keys|teams|customers` CLI runs them through the
same table (api.call_store), so both share one set of rules and messages. They do blocking
database work (SQLite or PostgreSQL): the worker runs them in a thread.

    GET    /admin/keys[?team=ID]       {"keys": [key...]}        secrets masked ("fos-…abcd")
    POST   /admin/keys                 201 key, WITH its secret (the only time it is shown)
           body: name, team, models, providers, budgets, rate_limits, expires, enabled, tags; optional id, secret
    GET    /admin/keys/{id}            key, secret masked
    PATCH  /admin/keys/{id}            any field but id; "secret": "rotate" makes a new secret and
                                       returns it (any other string sets that secret)
    DELETE /admin/keys/{id}            {"deleted": id}
    GET    /admin/teams[?customer=ID]  {"teams": [team...]};  POST (body: id, name, customer, budgets,
    GET|PATCH|DELETE /admin/teams/{id}  rate_limits), the same as keys; a team with keys is not deleted
    GET    /admin/customers            {"customers": [...]}; POST (body: id, name, budgets, rate_limits),
    GET|PATCH|DELETE /admin/customers/{id}  a customer with teams is not deleted

Budgets are [{"amount_usd": 10, "period": "day", "env": "prod"}] (env optional), rate limits
[{"window": "minute", "requests": 100, "tokens": 50000, "env": "..."}] (requests and/or tokens),
`expires` ISO 8601 (naive = UTC), epoch seconds, or null for never: the config file's rules,
checked by the config module's own validators.

Refusals (`run`) are {"message": "..."}: 400 for an invalid body (the message starts with the
field), 404 unknown id, 409 id taken / still in use / declared in the config file (those rows are
read-only here: the file owns them), 503 the store stayed locked or PostgreSQL is unreachable (retry).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import sqlite3
import time

from finops.shared.config import ConfigError, read_budgets, read_rate_limits, parse_time
from finops.shared.governance import KEY_ID, Customer, Team, tag_problem

from ..governance.store import (SINGULAR, Conflict, InvalidReference, NotFound, StoreError, StoreUnavailable,
                                budgets_to_json, generate_key, new_secret, rate_limits_to_json)

_SECRET = re.compile(r"^[\x21-\x7e]{16,256}$")      # printable ASCII, no spaces: fits every header
MAX_NAME = 256          # characters of a key, team or customer name

KEY_FIELDS = ("name", "team", "models", "providers", "budgets", "rate_limits", "expires", "enabled", "tags")
TEAM_FIELDS = ("name", "customer", "budgets", "rate_limits")
CUSTOMER_FIELDS = ("name", "budgets", "rate_limits")


class BadRequest(Exception):
    """400; the message names the field."""


# --- JSON views ----------------------------------------------------------------------------------

def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat().replace("+00:00", "Z")


def mask(secret: str) -> str:
    """"fos-…abcd": enough to tell keys apart, nothing to use."""
    return ("fos-" if secret.startswith("fos-") else "") + "…" + secret[-4:]


def key_json(k, *, show_secret: bool = False, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    return {"id": k.id, "name": k.name, "team": k.team, "models": list(k.models), "providers": list(k.providers),
            "enabled": k.enabled, "expires": iso(k.expires_at),
            "expired": k.expires_at is not None and k.expires_at <= now,
            "budgets": budgets_to_json(k.budgets), "rate_limits": rate_limits_to_json(k.rate_limits),
            "created_at": iso(k.created_at), "source": k.source, "tags": dict(k.tags),
            "secret": k.secret if show_secret else mask(k.secret)}


def team_json(t: Team, source: str) -> dict:
    return {"id": t.id, "name": t.name, "customer": t.customer, "budgets": budgets_to_json(t.budgets),
            "rate_limits": rate_limits_to_json(t.rate_limits), "source": source}


def customer_json(c: Customer, source: str) -> dict:
    return {"id": c.id, "name": c.name, "budgets": budgets_to_json(c.budgets),
            "rate_limits": rate_limits_to_json(c.rate_limits), "source": source}


# --- validation ----------------------------------------------------------------------------------

def _body(body) -> dict:
    if body in (None, b"", ""):
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"body: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"body: expected a JSON object, got {type(doc).__name__}")
    return doc


def _check_known(doc: dict, known: tuple[str, ...]) -> None:
    for f in doc:
        if f not in known:
            if f == "id" and "id" not in known:
                raise BadRequest("id: cannot be changed (create a new one and delete this one)")
            raise BadRequest(f"{f}: unknown field (known: {', '.join(known)})")


def _id(v, field: str = "id") -> str:
    if not isinstance(v, str) or not KEY_ID.match(v):
        raise BadRequest(f"{field}: required, 3-128 letters, digits, '-' or '_'")
    return v


def _str(v, field: str, limit: int = MAX_NAME) -> str:
    if not isinstance(v, str):
        raise BadRequest(f"{field}: expected a string, got {type(v).__name__}")
    if len(v) > limit:
        raise BadRequest(f"{field}: at most {limit} characters")
    return v


def _ref(v, field: str) -> str:
    """A team or customer reference: "" (none) or an id."""
    if v in (None, ""):
        return ""
    return _id(v, field)


def _globs(v, field: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(g, str) and g for g in v):
        raise BadRequest(f"{field}: expected a non-empty list of globs like [\"anthropic.*\"] ([\"*\"] for all)")
    return tuple(v)


def _bool(v, field: str) -> bool:
    if not isinstance(v, bool):
        raise BadRequest(f"{field}: expected true or false, got {v!r}")
    return v


def _secret(v) -> str:
    if not isinstance(v, str) or not _SECRET.match(v):
        raise BadRequest("secret: 16-256 printable ASCII characters without spaces "
                         "(or leave it out to have one generated)")
    return v


def _common(doc: dict) -> dict:
    """name, budgets, rate_limits: present in every kind."""
    out: dict = {}
    if "name" in doc:
        out["name"] = _str(doc["name"], "name")
    if "budgets" in doc:
        out["budgets"] = read_budgets(doc["budgets"], "budgets")           # ConfigError -> 400
    if "rate_limits" in doc:
        out["rate_limits"] = read_rate_limits(doc["rate_limits"], "rate_limits")
    return out


def _key_changes(doc: dict) -> dict:
    """VirtualKey fields from a body's KEY_FIELDS (those present only)."""
    out = _common(doc)
    if "team" in doc:
        out["team"] = _ref(doc["team"], "team")
    for f in ("models", "providers"):
        if f in doc:
            out[f] = _globs(doc[f], f)
    if "enabled" in doc:
        out["enabled"] = _bool(doc["enabled"], "enabled")
    if "expires" in doc:
        out["expires_at"] = parse_time(doc["expires"], "expires")
    if "tags" in doc:
        problem = tag_problem(doc["tags"])
        if problem:
            raise BadRequest(f"tags: {problem}")
        out["tags"] = dict(doc["tags"])
    return out


def _team_changes(doc: dict) -> dict:
    out = _common(doc)
    if "customer" in doc:
        out["customer"] = _ref(doc["customer"], "customer")
    return out


def _customer_changes(doc: dict) -> dict:
    return _common(doc)


# --- routes: one function per (method, path) of api.ROUTES ---------------------------------------

def _q(query: dict | None, name: str) -> str | None:
    v = (query or {}).get(name)
    if isinstance(v, (list, tuple)):
        v = v[-1] if v else None
    return v


def _read_only(kind: str, id: str) -> Conflict:
    return Conflict(f"{SINGULAR[kind]} {id!r} is declared in the config file, so it is read-only here: "
                    f"edit the config file instead (changes apply when the gateway restarts)")


def list_keys(store, req) -> tuple[int, dict]:
    team = _q(req.query, "team")
    now = time.time()
    return 200, {"keys": [key_json(k, now=now) for k in store.list_keys() if team is None or k.team == team]}


def create_key(store, req) -> tuple[int, dict]:
    doc = _body(req.body)
    _check_known(doc, ("id", "secret") + KEY_FIELDS)
    changes = _key_changes(doc)
    k = generate_key(id=_id(doc["id"]) if "id" in doc else None,
                     secret=_secret(doc["secret"]) if "secret" in doc else None)
    k = dataclasses.replace(k, **changes)
    store.put_key(k, create=True)
    return 201, key_json(k, show_secret=True)


def _key(store, id: str, *, writable: bool = False):
    k = store.get_key(id)
    if k is None:
        raise NotFound(f"no key {id!r}")
    if writable and k.source == "config":
        raise _read_only("keys", id)
    return k


def get_key(store, req) -> tuple[int, dict]:
    return 200, key_json(_key(store, req.id))


def update_key(store, req) -> tuple[int, dict]:
    k = _key(store, req.id, writable=True)
    doc = _body(req.body)
    _check_known(doc, ("secret",) + KEY_FIELDS)
    changes = _key_changes(doc)
    rotated = False
    if "secret" in doc:
        rotated = doc["secret"] == "rotate"
        changes["secret"] = new_secret() if rotated else _secret(doc["secret"])
    k = dataclasses.replace(k, **changes)
    store.put_key(k)
    return 200, key_json(k, show_secret=rotated)


def delete_key(store, req) -> tuple[int, dict]:
    _key(store, req.id, writable=True)
    store.delete_key(req.id)
    return 200, {"deleted": req.id}


class Group:
    """What differs between teams and customers; their routes are the same (the methods below)."""

    def __init__(self, kind, cls, fields, changes, to_json, parent=None):
        self.kind, self.cls, self.fields, self.changes, self.to_json = kind, cls, fields, changes, to_json
        self.one = SINGULAR[kind]
        self.parent = parent            # the list filter: teams?customer=...

    def _get(self, store, id: str, *, writable: bool = False):
        obj = getattr(store, f"get_{self.one}")(id)
        if obj is None:
            raise NotFound(f"no {self.one} {id!r}")
        source = store.source_of(self.kind, id)
        if writable and source == "config":
            raise _read_only(self.kind, id)
        return obj, source

    def list(self, store, req) -> tuple[int, dict]:
        want = _q(req.query, self.parent) if self.parent else None
        src = store.sources(self.kind)
        return 200, {self.kind: [self.to_json(o, src.get(o.id, "api")) for o in getattr(store, f"list_{self.kind}")()
                                 if want is None or getattr(o, self.parent) == want]}

    def create(self, store, req) -> tuple[int, dict]:
        doc = _body(req.body)
        _check_known(doc, ("id",) + self.fields)
        obj = self.cls(id=_id(doc.get("id")), **self.changes(doc))
        getattr(store, f"put_{self.one}")(obj, create=True)
        return 201, self.to_json(obj, "api")

    def get(self, store, req) -> tuple[int, dict]:
        obj, source = self._get(store, req.id)
        return 200, self.to_json(obj, source)

    def update(self, store, req) -> tuple[int, dict]:
        obj, _ = self._get(store, req.id, writable=True)
        doc = _body(req.body)
        _check_known(doc, self.fields)
        obj = dataclasses.replace(obj, **self.changes(doc))
        getattr(store, f"put_{self.one}")(obj)
        return 200, self.to_json(obj, "api")

    def delete(self, store, req) -> tuple[int, dict]:
        self._get(store, req.id, writable=True)
        getattr(store, f"delete_{self.one}")(req.id)
        return 200, {"deleted": req.id}


TEAMS = Group("teams", Team, TEAM_FIELDS, _team_changes, team_json, "customer")
CUSTOMERS = Group("customers", Customer, CUSTOMER_FIELDS, _customer_changes, customer_json)


def run(handler, store, req) -> tuple[int, dict]:
    """`handler(store, req)`, its refusals as (status, {"message"}): never raises for a bad request."""
    try:
        return handler(store, req)
    except (BadRequest, ConfigError, InvalidReference) as e:
        return 400, {"message": str(e)}
    except NotFound as e:
        return 404, {"message": str(e)}
    except Conflict as e:
        return 409, {"message": str(e)}
    except StoreUnavailable as e:                # PostgreSQL down or busy: retry
        return 503, {"message": unavailable(store.ENGINE, e)}
    except StoreError as e:
        return 500, {"message": str(e)}
    except sqlite3.OperationalError as e:       # e.g. still locked after the busy timeout
        return 503, {"message": unavailable(store.ENGINE, e)}


def unavailable(engine: str, e: Exception) -> str:
    """The 503's message: which database, that the call may simply be retried, and why."""
    name = {"sqlite": "SQLite", "postgres": "PostgreSQL"}.get(engine, engine)
    return f"governance store unavailable, try again in a few seconds ({name}): {e}"
