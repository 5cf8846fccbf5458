"""Routing: which upstream target a request goes to, and when to stop sending it traffic.

    breaker.py  per-target circuit breakers (pure; clock injected)
    backoff.py  full-jitter exponential retry delays and deadline checks (pure)
"""
