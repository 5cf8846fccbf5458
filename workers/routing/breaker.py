"""Circuit breakers, one per named upstream target (pure: no I/O, the clock is injected).

Guarantees:

* Unknown names are closed; a name gets state only once an outcome is recorded for it.
* Closed -> open when either
    - ``consecutive_failures`` failures arrive in a row (any success resets the run), or
    - the outcomes of the last ``window_seconds`` number at least ``min_requests`` and
      at least ``failure_rate`` of them are failures. Outcomes older than
      ``window_seconds`` (``t <= now - window_seconds``) no longer count.
* Open: ``allow`` is False until ``open_seconds`` have passed since opening; from then on the
  breaker is half-open (``state`` reports ``"half_open"``).
* Half-open: ``allow`` returns True at most ``half_open_probes`` times (a probe is taken when
  ``allow`` returns True), then False. A probe success closes the breaker and resets all
  counters; a probe failure reopens it for a fresh ``open_seconds``.
* Outcomes reported while open, or while half-open before any probe was taken, come from
  requests admitted before the breaker opened; they are ignored.
* ``allow`` on a closed breaker is a dict lookup and a state check (no clock read).
  ``success``/``failure`` are O(1) amortised; per-name state is a few counters plus a deque of
  ``(t, ok)`` outcomes pruned to the window.
* Not thread-safe: meant for one worker's event loop.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

__all__ = ["BreakerPolicy", "Breakers", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    consecutive_failures: int = 5      # open after this many failures in a row
    failure_rate: float = 0.5          # ...or when at least this share of the last `window_seconds` failed
    min_requests: int = 20             #    (only once the window holds this many outcomes)
    window_seconds: float = 30.0
    open_seconds: float = 30.0         # how long an open breaker sends no traffic
    half_open_probes: int = 1          # requests let through when open_seconds have passed

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be >= 1")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.min_requests < 1:
            raise ValueError("min_requests must be >= 1")
        if self.window_seconds <= 0 or self.open_seconds < 0:
            raise ValueError("window_seconds must be > 0 and open_seconds >= 0")
        if self.half_open_probes < 1:
            raise ValueError("half_open_probes must be >= 1")


class _Breaker:
    __slots__ = ("state", "in_a_row", "window", "window_failures", "opened_at", "probes")

    def __init__(self) -> None:
        self.state = CLOSED            # CLOSED or OPEN; half-open is OPEN past open_seconds
        self.in_a_row = 0
        self.window: deque[tuple[float, bool]] = deque()
        self.window_failures = 0
        self.opened_at: float | None = None
        self.probes = 0                # probes taken since the open period ended


class Breakers:
    """A registry of circuit breakers keyed by target name. See the module docstring."""

    def __init__(self, policy: BreakerPolicy = BreakerPolicy(), clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self._clock = clock
        self._b: dict[str, _Breaker] = {}

    # -- hot path --------------------------------------------------------------------------

    def allow(self, name: str) -> bool:
        b = self._b.get(name)
        if b is None or b.state is CLOSED:
            return True
        if self._clock() - b.opened_at < self.policy.open_seconds:
            return False
        if b.probes < self.policy.half_open_probes:
            b.probes += 1
            return True
        return False

    # -- outcomes --------------------------------------------------------------------------

    def success(self, name: str) -> None:
        b = self._b.get(name)
        if b is None:
            b = self._b[name] = _Breaker()
        if b.state is OPEN:
            if b.probes:               # a half-open probe came back fine
                self._close(b)
            return
        now = self._clock()
        b.in_a_row = 0
        b.window.append((now, True))
        self._prune(b, now)

    def failure(self, name: str) -> None:
        b = self._b.get(name)
        if b is None:
            b = self._b[name] = _Breaker()
        now = self._clock()
        if b.state is OPEN:
            if b.probes:               # a half-open probe failed: open again
                b.in_a_row += 1
                self._open(b, now)
            return
        b.in_a_row += 1
        b.window.append((now, False))
        b.window_failures += 1
        self._prune(b, now)
        p = self.policy
        n = len(b.window)
        if b.in_a_row >= p.consecutive_failures or (
            n >= p.min_requests and b.window_failures >= p.failure_rate * n
        ):
            self._open(b, now)

    # -- inspection ------------------------------------------------------------------------

    def state(self, name: str) -> str:
        b = self._b.get(name)
        if b is None or b.state is CLOSED:
            return CLOSED
        if self._clock() - b.opened_at >= self.policy.open_seconds:
            return HALF_OPEN
        return OPEN

    def snapshot(self) -> dict[str, dict]:
        now = self._clock()
        out: dict[str, dict] = {}
        for name, b in self._b.items():
            self._prune(b, now)
            if b.state is CLOSED:
                state, retry_in = CLOSED, 0.0
            else:
                left = b.opened_at + self.policy.open_seconds - now
                state, retry_in = (OPEN, left) if left > 0 else (HALF_OPEN, 0.0)
            out[name] = {
                "state": state,
                "failures_in_a_row": b.in_a_row,
                "window_requests": len(b.window),
                "window_failures": b.window_failures,
                "opened_at": b.opened_at,
                "retry_in_s": retry_in,
            }
        return out

    # -- internals -------------------------------------------------------------------------

    def _prune(self, b: _Breaker, now: float) -> None:
        horizon = now - self.policy.window_seconds
        w = b.window
        while w and w[0][0] <= horizon:
            _, ok = w.popleft()
            if not ok:
                b.window_failures -= 1

    def _open(self, b: _Breaker, now: float) -> None:
        b.state = OPEN
        b.opened_at = now
        b.probes = 0
        b.window.clear()
        b.window_failures = 0

    def _close(self, b: _Breaker) -> None:
        b.state = CLOSED
        b.opened_at = None
        b.probes = 0
        b.in_a_row = 0
        b.window.clear()
        b.window_failures = 0
