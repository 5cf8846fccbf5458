"""Retry delays: "full jitter" exponential backoff, and whether a wait still fits a deadline (pure).

Guarantees:

* ``delay(attempt)`` (attempt 0 = the first retry) is ``rng() * min(cap, base * 2**attempt)``,
  so with ``rng`` in [0, 1) it lies in [0, min(cap, base * 2**attempt)]; it never exceeds
  ``cap`` and does not overflow for large attempts. Negative attempts raise ValueError.
* ``fits(deadline, now, delay, reserve)`` is True iff ``now + delay + reserve <= deadline``.
"""
from __future__ import annotations

import random
from typing import Callable

__all__ = ["delay", "fits"]


def delay(attempt: int, base: float = 0.2, cap: float = 2.0, rng: Callable[[], float] = random.random) -> float:
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # 2**attempt grows past any useful cap quickly; clamp the exponent so huge attempts can't overflow.
    ceiling = min(cap, base * 2.0 ** min(attempt, 1000))
    return rng() * ceiling


def fits(deadline: float, now: float, delay: float, reserve: float = 0.05) -> bool:
    return now + delay + reserve <= deadline
