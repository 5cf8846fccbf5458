"""The governance ledger: budgets and rate-limit counters, exact across every worker.

    state.py        LedgerState: reserve / settle / expire over the counters, in memory (pure)
    redis_state.py  the same contract with the counters in Redis (one Lua script per operation)
    redis_lua.py    those scripts (text)
    actor.py        the ledger actor: one process per node owning the state, over ZeroMQ
    client.py       the workers' side: reserve with a reply, settles batched
"""
