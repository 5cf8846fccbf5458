"""Calendar-aligned budget periods and rate-limit windows. Pure: no I/O, stdlib zoneinfo only.

`bounds(period, t, tz)` returns the half-open interval [start, end), in epoch seconds, of the
period of kind `period` (one of PERIODS) that contains the instant `t`, in the IANA time zone `tz`.

Guarantees, for every period, zone and instant:

* start <= t < end, and both are whole seconds (floats with no fractional part);
* periods tile the time line: bounds(p, end) starts at `end`, and bounds(p, start - ε) ends at
  `start`. Two instants get the same interval exactly when they are in the same period.

How the periods are cut:

* day, week, month, year follow the local calendar of `tz`: a day starts at local midnight, a week
  on Monday at local midnight, a month on its 1st, a year on January 1st. Their length therefore
  follows the calendar: a day is 23 h or 25 h across a DST change (Europe/Paris 2026-03-29 is 23 h
  long), February has 29 days in leap years, a leap year 366 days. When a boundary's wall-clock time
  does not exist (a DST gap at midnight, as in America/Santiago), the period starts at the first
  instant after the gap; when it occurs twice (a fall-back at midnight, as in America/Havana), it
  starts at the first occurrence.
* minute and hour are fixed-length windows aligned on the local wall clock with the UTC offset in
  effect at `t`. So in a fall-back the repeated hour is two distinct hours, a skipped hour does not
  exist, and in zones offset by a half or quarter hour (Asia/Kolkata, Asia/Kathmandu) hours start
  at :30 or :15 UTC. A window containing an offset change that is not a multiple of its length
  (Australia/Lord_Howe's 30-minute DST, historic local mean times) is cut at the change.

`bounds` runs on every request: it remembers the last interval it returned for each (period, tz)
and returns it again, without computing anything, while t stays inside it.

`iso(t)` formats an instant as "2026-11-28T00:00:00Z" (UTC, whole seconds, rounded down).
"""
from __future__ import annotations

import math
import time
from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from finops.shared.governance import PERIODS

__all__ = ["PERIODS", "bounds", "iso"]

_UNIT = {"minute": 60, "hour": 3600}          # fixed-length windows, seconds
_EPOCH = date(1970, 1, 1)
_UTC_NAMES = ("UTC", "Etc/UTC", "Z")

_last: dict[tuple[str, str], tuple[float, float]] = {}   # (period, tz) -> last interval returned
_zones: dict[str, tzinfo] = {}


def bounds(period: str, t: float, tz: str = "UTC") -> tuple[float, float]:
    """The [start, end) in epoch seconds of the `period` containing instant `t` in zone `tz`.

    Raises ValueError for a period not in PERIODS and zoneinfo.ZoneInfoNotFoundError for an
    unknown zone name. `t` must lie within datetime's range (years 1 to 9998).
    """
    key = (period, tz)
    hit = _last.get(key)
    if hit is not None and hit[0] <= t < hit[1]:
        return hit
    zone = _zone(tz)
    if period in _UNIT:
        found = _window(_UNIT[period], t, zone)
    elif period in PERIODS:
        found = _calendar(period, t, zone)
    else:
        raise ValueError(f"unknown period {period!r} (known: {', '.join(PERIODS)})")
    _last[key] = found
    return found


def iso(t: float) -> str:
    """`t` as "YYYY-MM-DDTHH:MM:SSZ" in UTC, rounded down to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(t)))


# --- zones and offsets ------------------------------------------------------------------------

def _zone(tz: str) -> tzinfo:
    """The tzinfo for a zone name; UTC needs no tz database."""
    zone = _zones.get(tz)
    if zone is None:
        zone = timezone.utc if tz in _UTC_NAMES else ZoneInfo(tz)
        _zones[tz] = zone
    return zone


def _offset(x: int, zone: tzinfo) -> int:
    """UTC offset, in seconds, in effect in `zone` at instant `x`."""
    return int(datetime.fromtimestamp(x, zone).utcoffset().total_seconds())


def _wall(x: int, zone: tzinfo) -> datetime:
    """The naive local wall-clock time at instant `x`."""
    return datetime.fromtimestamp(x, zone).replace(tzinfo=None)


def _first_true(lo: int, hi: int, pred) -> int:
    """The smallest x in (lo, hi] with pred(x), given pred(lo) false, pred(hi) true, one change."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --- minute and hour: fixed windows -------------------------------------------------------------

def _window(unit: int, t: float, zone: tzinfo) -> tuple[float, float]:
    """The `unit`-second window containing t, aligned on the wall clock, cut at offset changes."""
    i = math.floor(t)                 # offsets change on whole seconds, so i and t share a window
    if zone is timezone.utc:
        start = i - i % unit
        return float(start), float(start + unit)
    off = _offset(i, zone)
    start = i - (i + off) % unit
    end = start + unit
    if _offset(start, zone) != off:   # the offset changed between start and t
        start = _first_true(start, i, lambda x: _offset(x, zone) == off)
    if _offset(end - 1, zone) != off:  # the offset changes between t and end
        end = _first_true(i, end - 1, lambda x: _offset(x, zone) != off)
    return float(start), float(end)


# --- day, week, month, year: the local calendar ---------------------------------------------------

def _calendar(period: str, t: float, zone: tzinfo) -> tuple[float, float]:
    """The calendar period containing t: from its first local day's start to the next one's."""
    # whole seconds: fromtimestamp rounds to the microsecond, which can carry t into the next day
    day = datetime.fromtimestamp(math.floor(t), zone).date()
    first = _period_start(period, day)
    while True:                       # runs once, except where a fall-back crosses midnight
        after = _period_next(period, first)
        start, end = _day_start(first, zone), _day_start(after, zone)
        if t < end:
            return float(start), float(end)
        first = after


def _period_start(period: str, d: date) -> date:
    """The first day of the period containing day d."""
    if period == "day":
        return d
    if period == "week":
        return d - timedelta(days=d.weekday())
    if period == "month":
        return d.replace(day=1)
    return date(d.year, 1, 1)


def _period_next(period: str, first: date) -> date:
    """The first day of the period after the one starting on `first`."""
    if period == "day":
        return first + timedelta(days=1)
    if period == "week":
        return first + timedelta(days=7)
    if period == "month":
        return date(first.year + 1, 1, 1) if first.month == 12 else date(first.year, first.month + 1, 1)
    return date(first.year + 1, 1, 1)


def _day_start(d: date, zone: tzinfo) -> int:
    """The first instant whose local wall-clock time is at or after d's midnight.

    That is midnight itself, its first occurrence when it occurs twice, or the end of the DST gap
    when it does not occur at all.
    """
    if zone is timezone.utc:
        return (d - _EPOCH).days * 86400
    midnight = datetime(d.year, d.month, d.day)
    early = int(midnight.replace(tzinfo=zone, fold=0).timestamp())   # first occurrence if it exists
    if _wall(early, zone) == midnight:
        return early
    # In a gap: fold=0 reads midnight with the offset before the change, fold=1 with the one after;
    # the change itself lies between the two and is the first instant past midnight.
    late = int(midnight.replace(tzinfo=zone, fold=1).timestamp())
    lo, hi = min(early, late), max(early, late)
    return _first_true(lo, hi, lambda x: _wall(x, zone) >= midnight)
