"""The directory of keys, teams and customers a process works from: the governance store (SQLite,
or PostgreSQL through its watcher: stores.py), with the entries declared in the config file on top (the file wins, so a process is right even before the
ledger has copied the file's entries into the store)."""
from __future__ import annotations

from finops.shared.config import Config
from finops.shared.governance import Directory


def load_directory(store, cfg: Config) -> Directory:
    d = store.load_directory() if store is not None else Directory()
    g = cfg.governance
    d.customers.update({c.id: c for c in g.customers})
    d.teams.update({t.id: t for t in g.teams})
    d.keys.update({k.id: k for k in g.keys})
    return d
