"""Governance: virtual keys, budgets and rate limits.

    (the data model, customers, teams, keys, budgets, rate limits, is finops.shared.governance)
    periods.py      calendar-aligned budget periods and rate-limit windows (pure)
    pricing.py      the pricing table and the cost of a request (pure)
    auth.py         which key a request presents (x-bf-vk, SigV4, Bearer) and whether it may (pure)
    ledger_state.py reserve / settle over budgets and rate limits, exact and in memory (pure)
    store.py        SQLite in the data dir: keys, teams, customers, and the ledger's snapshot
    ledger.py       the ledger actor process: owns LedgerState, persists it, answers workers
    client.py       the workers' side of the ledger protocol
"""
