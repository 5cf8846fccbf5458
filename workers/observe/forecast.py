"""A budget's projected spend at the end of its period: the one forecast everything uses (the
dashboard's burn-down, `/admin/usage`'s `forecast_usd`). Pure: numbers in, numbers out; the clock
is an argument.

    forecast(points, start, end, now, limit=10.0)      -> Forecast(spent_usd, projected_usd,
                                                           rate_usd_per_hour, crosses_at, ...)
    projected_at(f, t)                                 -> the projected cumulative spend at time t

`points` are the period's spend so far as (epoch seconds, USD) pairs: one per request, or one per
bucket of requests (the dashboard sums the log by the hour and places each bucket at its requests'
mean time). Points outside [start, now] are ignored.

The model: an exponentially weighted spend rate, carried linearly to the period's end.

    rate      = sum(usd_i * w(t_i)) / integral of w(t) dt over the observed window
    w(t)      = 2 ** (-(now - t) / half_life)
    projected = spent + rate * (end - now)

* Why weighted to recent hours and not linear on the period so far: the point of a forecast is to
  warn before the refusals start. A key whose spend jumps to ten times its usual rate on the 15th
  is, by the linear model, barely above its month's average; the weighted rate follows the jump
  within a half-life. The other way round, a burst on the 1st and then nothing would keep a linear
  forecast high all month; the weighted rate lets it decay, so the projection tends to what was
  spent.
* Dividing by the integral of the weights (not by their count) makes the estimate exact for a
  steady spend whatever the period's age, and equal to the linear model while the period is
  younger than a half-life: it only departs from "average so far" when there is history to weigh.
* half_life defaults to a tenth of the period (3 days for a 30-day month, about 17 hours for a
  week, 2.4 hours for a day): long enough that a night or a weekend does not zero the forecast,
  short enough to follow a change within days in a month.
* A period younger than one half-life is measured as if it were one half-life old (the time before
  the start counts as time with no spend): otherwise one request in the first minute of a month
  would project a forty-thousand-fold spend. The forecast starts cautious and catches up.
* `spent` (default: the sum of the points) may be given separately: the ledger's figure is the
  truth of what was charged, the points only give the shape (the log can lag or be pruned).
* Past the period's end (now >= end), or with nothing spent, the projection is what was spent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

MODEL = "ewma"
HALF_LIFE_FRACTION = 0.1     # of the period's length


@dataclass(frozen=True)
class Forecast:
    spent_usd: float            # spend so far
    projected_usd: float        # projected spend at the period's end
    rate_usd_per_hour: float    # the weighted spend rate the projection carries forward (not rounded)
    crosses_at: float | None    # when spend reaches `limit` (past or projected; None: not in this period)
    now: float                  # the clock the forecast was made at (clamped into the period)
    end: float
    half_life_s: float
    model: str = MODEL

    def over(self, limit: float) -> bool:
        """True when the projection passes `limit`."""
        return self.projected_usd > limit


def forecast(points: Iterable[tuple[float, float]], start: float, end: float, now: float, *,
             limit: float | None = None, spent: float | None = None,
             half_life: float | None = None) -> Forecast:
    """The projected spend at `end` of the period [start, end), seen at `now` (see the module doc)."""
    if not end > start:
        raise ValueError(f"a period must end after it starts (start={start}, end={end})")
    length = end - start
    h = float(half_life) if half_life is not None else length * HALF_LIFE_FRACTION
    if not h > 0:
        raise ValueError(f"half_life must be > 0, got {half_life}")
    t_now = min(max(float(now), start), end)
    pts = sorted((float(t), float(usd)) for t, usd in points if start <= t <= t_now)
    total = sum(usd for _, usd in pts)
    spent_usd = total if spent is None else float(spent)

    rate = 0.0                                             # USD per second
    if t_now < end and pts:
        window = max(t_now - start, h)
        weight = h / math.log(2) * (1 - 2 ** (-window / h))          # integral of w over the window
        rate = max(0.0, sum(usd * 2 ** (-(t_now - t) / h) for t, usd in pts) / weight)
    projected = spent_usd + rate * (end - t_now)
    return Forecast(spent_usd=round(spent_usd, 6), projected_usd=round(projected, 6),
                    rate_usd_per_hour=rate * 3600,
                    crosses_at=_crossing(pts, limit, spent_usd, rate, t_now, end),
                    now=t_now, end=end, half_life_s=h)


def _crossing(pts, limit, spent: float, rate: float, now: float, end: float) -> float | None:
    """When spend reaches `limit`: the first point where the cumulative spend did (or `now` when
    only `spent` says so), or the projected time, if it is before the period's end."""
    if limit is None:
        return None
    if spent >= limit:
        acc = 0.0
        for t, usd in pts:
            acc += usd
            if acc >= limit:
                return t
        return now
    if rate <= 0:
        return None
    t = now + (limit - spent) / rate
    return t if t < end else None


def projected_at(f: Forecast, t: float) -> float:
    """The projected cumulative spend at time `t` (>= f.now; capped at the period's end)."""
    return round(f.spent_usd + f.rate_usd_per_hour / 3600 * max(0.0, min(t, f.end) - f.now), 6)
