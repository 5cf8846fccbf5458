"""Governance: virtual keys, budgets and rate limits.

    (the data model, customers, teams, keys, budgets, rate limits, is finops.shared.governance)
    auth.py         which key a request presents (x-bf-vk, SigV4, Bearer) and whether it may (pure)
    bounds.py       upper bounds of the input tokens an upstream can report for a request (pure)
    governor.py     governance as the pipeline sees it: identify, admit, settle
    money.py        integer micro-dollars (pure)
    periods.py      calendar-aligned budget periods and rate-limit windows (pure)
    pricing.py      the pricing table and the cost of a request (pure)
    store.py        the store of keys, teams and customers (its logic, once, for both backends),
                    and its SQLite backend in the data dir, with the ledger's snapshot
    pg_store.py     the store's PostgreSQL backend, shared by several nodes
    pg_schema.py    PostgreSQL: connecting, the schema and its migrations
    pg_watch.py     the directory from PostgreSQL, kept current by a listener thread
    pg_spend.py     settled spend in PostgreSQL (what the Redis ledger is rebuilt from)
    directory.py    the directory a process works from: the store, the config file's entries on top
    cli.py          `finops keys|teams|customers`
(The ledger, its actor and its client are finops.workers.ledger.)
"""
