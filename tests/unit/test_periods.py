"""Calendar-aligned periods (workers/governance/periods.py): every period, boundaries, DST, leap years.

Expected values are written out by hand as UTC instants, not recomputed with the module's method.
"""
from __future__ import annotations

import zoneinfo
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from finops.shared import governance
from finops.workers.governance import periods
from finops.workers.governance.periods import PERIODS, bounds, iso

H = 3600
D = 86400
US = 1e-6


def utc(y, mo, d, h=0, mi=0, s=0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc).timestamp()


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts without remembered intervals (some tests then exercise the memory)."""
    periods._last.clear()
    yield
    periods._last.clear()


def test_periods_are_the_shared_ones():
    assert PERIODS is governance.PERIODS
    assert PERIODS == ("minute", "hour", "day", "week", "month", "year")


# --- ordinary instants ----------------------------------------------------------------------------

T = utc(2026, 11, 27, 9, 54, 32) + 0.5        # a Friday


@pytest.mark.parametrize("period, start, end", [
    ("minute", utc(2026, 11, 27, 9, 54), utc(2026, 11, 27, 9, 55)),
    ("hour", utc(2026, 11, 27, 9), utc(2026, 11, 27, 10)),
    ("day", utc(2026, 11, 27), utc(2026, 11, 28)),
    ("week", utc(2026, 11, 23), utc(2026, 11, 30)),
    ("month", utc(2026, 11, 1), utc(2026, 12, 1)),
    ("year", utc(2026, 1, 1), utc(2027, 1, 1)),
])
def test_utc_ordinary_instant(period, start, end):
    assert bounds(period, T) == (start, end)
    assert bounds(period, T, "UTC") == (start, end)
    assert bounds(period, T, "Etc/UTC") == (start, end)


@pytest.mark.parametrize("period, start, end", [
    ("minute", utc(2026, 11, 27, 9, 54), utc(2026, 11, 27, 9, 55)),
    ("hour", utc(2026, 11, 27, 9), utc(2026, 11, 27, 10)),
    ("day", utc(2026, 11, 26, 23), utc(2026, 11, 27, 23)),
    ("week", utc(2026, 11, 22, 23), utc(2026, 11, 29, 23)),
    ("month", utc(2026, 10, 31, 23), utc(2026, 11, 30, 23)),
    ("year", utc(2025, 12, 31, 23), utc(2026, 12, 31, 23)),
])
def test_paris_ordinary_instant(period, start, end):
    assert bounds(period, T, "Europe/Paris") == (start, end)


@pytest.mark.parametrize("tz, period, start, end", [
    ("Asia/Tokyo", "day", utc(2026, 11, 26, 15), utc(2026, 11, 27, 15)),
    ("Asia/Tokyo", "month", utc(2026, 10, 31, 15), utc(2026, 11, 30, 15)),
    ("America/New_York", "day", utc(2026, 11, 27, 5), utc(2026, 11, 28, 5)),
    ("America/New_York", "week", utc(2026, 11, 23, 5), utc(2026, 11, 30, 5)),
    ("Asia/Kolkata", "hour", utc(2026, 11, 27, 9, 30), utc(2026, 11, 27, 10, 30)),     # +05:30
    ("Asia/Kathmandu", "hour", utc(2026, 11, 27, 9, 15), utc(2026, 11, 27, 10, 15)),   # +05:45
    ("Asia/Kathmandu", "minute", utc(2026, 11, 27, 9, 54), utc(2026, 11, 27, 9, 55)),
    ("Asia/Kolkata", "day", utc(2026, 11, 26, 18, 30), utc(2026, 11, 27, 18, 30)),
])
def test_other_zones(tz, period, start, end):
    assert bounds(period, T, tz) == (start, end)


def test_results_are_whole_second_floats():
    for period in PERIODS:
        for tz in ("UTC", "Europe/Paris", "Asia/Kathmandu"):
            start, end = bounds(period, T, tz)
            assert type(start) is float and type(end) is float
            assert start == int(start) and end == int(end)


def test_accepts_int_instants():
    assert bounds("day", int(T)) == (utc(2026, 11, 27), utc(2026, 11, 28))


# --- boundaries ----------------------------------------------------------------------------------

BOUNDARY_CASES = [
    ("minute", "UTC", utc(2026, 11, 27, 9, 54), 60),
    ("hour", "UTC", utc(2026, 11, 27, 9), H),
    ("day", "UTC", utc(2026, 11, 27), D),
    ("week", "UTC", utc(2026, 11, 23), 7 * D),
    ("month", "UTC", utc(2026, 11, 1), 30 * D),
    ("year", "UTC", utc(2026, 1, 1), 365 * D),
    ("minute", "Europe/Paris", utc(2026, 3, 29, 1), 60),          # the spring-forward instant
    ("hour", "Europe/Paris", utc(2026, 3, 29, 1), H),
    ("day", "Europe/Paris", utc(2026, 3, 28, 23), 23 * H),
    ("week", "Europe/Paris", utc(2026, 3, 22, 23), 7 * D - H),
    ("month", "Europe/Paris", utc(2026, 2, 28, 23), 31 * D - H),
    ("year", "Europe/Paris", utc(2025, 12, 31, 23), 365 * D),
    ("hour", "America/New_York", utc(2026, 11, 1, 6), H),         # the second 01:00 EST
    ("day", "America/New_York", utc(2026, 11, 1, 4), 25 * H),
    ("month", "America/New_York", utc(2026, 11, 1, 4), 30 * D + H),
    ("hour", "Asia/Kolkata", utc(2026, 11, 27, 9, 30), H),
]


@pytest.mark.parametrize("period, tz, start, length", BOUNDARY_CASES)
def test_instant_exactly_at_start_belongs_to_the_period(period, tz, start, length):
    assert bounds(period, start, tz) == (start, start + length)


@pytest.mark.parametrize("period, tz, start, length", BOUNDARY_CASES)
def test_one_microsecond_before_start_is_the_previous_period(period, tz, start, length):
    prev_start, prev_end = bounds(period, start - US, tz)
    assert prev_end == start
    assert prev_start < start


@pytest.mark.parametrize("period, tz, start, length", BOUNDARY_CASES)
def test_one_microsecond_before_end_is_still_the_period(period, tz, start, length):
    assert bounds(period, start + length - US, tz) == (start, start + length)


def test_a_fraction_below_a_microsecond_before_midnight_is_still_the_day_before():
    # datetime.fromtimestamp would round 23:59:59.9999998 up to the next day's midnight
    x = utc(2027, 1, 1) - 2e-7
    assert bounds("day", x) == (utc(2026, 12, 31), utc(2027, 1, 1))
    assert bounds("week", x) == (utc(2026, 12, 28), utc(2027, 1, 4))
    assert bounds("month", x) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert bounds("year", x) == (utc(2026, 1, 1), utc(2027, 1, 1))
    assert bounds("day", utc(2026, 11, 26, 23) - 2e-7, "Europe/Paris")[1] == utc(2026, 11, 26, 23)


def test_week_starts_on_monday():
    monday = utc(2026, 11, 23)
    assert datetime.fromtimestamp(monday, timezone.utc).weekday() == 0
    for day in range(7):
        assert bounds("week", monday + day * D + 12 * H) == (monday, monday + 7 * D)
    assert bounds("week", monday + 7 * D - US) == (monday, monday + 7 * D)     # Sunday 23:59:59.999999
    assert bounds("week", monday + 7 * D) == (monday + 7 * D, monday + 14 * D)


def test_week_crossing_a_month():
    # 2026-12-01 is a Tuesday: its week began on Monday 30 November.
    assert bounds("week", utc(2026, 12, 1, 8)) == (utc(2026, 11, 30), utc(2026, 12, 7))
    assert bounds("week", utc(2026, 11, 30)) == (utc(2026, 11, 30), utc(2026, 12, 7))
    assert bounds("week", utc(2026, 11, 30) - US) == (utc(2026, 11, 23), utc(2026, 11, 30))


def test_week_crossing_a_year():
    # 2027-01-01 is a Friday: its week began on Monday 28 December 2026.
    assert bounds("week", utc(2027, 1, 1, 12)) == (utc(2026, 12, 28), utc(2027, 1, 4))
    assert bounds("week", utc(2027, 1, 1, 12), "Europe/Paris") == (utc(2026, 12, 27, 23), utc(2027, 1, 3, 23))


def test_year_end():
    last = utc(2027, 1, 1) - US                    # 2026-12-31T23:59:59.999999Z
    assert bounds("minute", last) == (utc(2026, 12, 31, 23, 59), utc(2027, 1, 1))
    assert bounds("hour", last) == (utc(2026, 12, 31, 23), utc(2027, 1, 1))
    assert bounds("day", last) == (utc(2026, 12, 31), utc(2027, 1, 1))
    assert bounds("week", last) == (utc(2026, 12, 28), utc(2027, 1, 4))
    assert bounds("month", last) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert bounds("year", last) == (utc(2026, 1, 1), utc(2027, 1, 1))
    first = utc(2027, 1, 1)
    assert bounds("minute", first) == (first, first + 60)
    assert bounds("day", first) == (first, first + D)
    assert bounds("month", first) == (first, utc(2027, 2, 1))
    assert bounds("year", first) == (first, utc(2028, 1, 1))


def test_year_end_in_paris_is_an_hour_before_utc():
    paris_2026 = (utc(2025, 12, 31, 23), utc(2026, 12, 31, 23))
    assert bounds("year", utc(2026, 12, 31, 22, 59, 59), "Europe/Paris") == paris_2026
    assert bounds("year", utc(2026, 12, 31, 23), "Europe/Paris") == (utc(2026, 12, 31, 23), utc(2027, 12, 31, 23))


# --- leap years ----------------------------------------------------------------------------------

def test_leap_day():
    assert bounds("day", utc(2028, 2, 29, 13)) == (utc(2028, 2, 29), utc(2028, 3, 1))
    assert bounds("day", utc(2028, 2, 28, 23, 59, 59)) == (utc(2028, 2, 28), utc(2028, 2, 29))
    assert bounds("day", utc(2028, 3, 1)) == (utc(2028, 3, 1), utc(2028, 3, 2))
    assert bounds("week", utc(2028, 2, 29)) == (utc(2028, 2, 28), utc(2028, 3, 6))   # Tuesday
    assert bounds("day", utc(2028, 2, 29, 13), "Europe/Paris") == (utc(2028, 2, 28, 23), utc(2028, 2, 29, 23))


@pytest.mark.parametrize("year, feb_days, year_days", [
    (2026, 28, 365), (2028, 29, 366), (2000, 29, 366), (2100, 28, 365), (2024, 29, 366),
])
def test_february_and_year_lengths(year, feb_days, year_days):
    start, end = bounds("month", utc(year, 2, 10))
    assert (start, end - start) == (utc(year, 2, 1), feb_days * D)
    start, end = bounds("year", utc(year, 6, 1))
    assert (start, end - start) == (utc(year, 1, 1), year_days * D)


# --- DST -----------------------------------------------------------------------------------------

def test_paris_spring_forward_day_is_23_hours():
    # 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00Z.
    start, end = bounds("day", utc(2026, 3, 29, 12), "Europe/Paris")
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert end - start == 23 * H
    assert bounds("day", utc(2026, 3, 28, 22, 59, 59), "Europe/Paris")[1] == start
    assert bounds("day", utc(2026, 3, 29, 22), "Europe/Paris") == (utc(2026, 3, 29, 22), utc(2026, 3, 30, 22))


def test_paris_fall_back_day_is_25_hours():
    # 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00Z.
    start, end = bounds("day", utc(2026, 10, 25, 12), "Europe/Paris")
    assert (start, end) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert end - start == 25 * H


def test_paris_hours_across_dst():
    # Spring: 01:30 CET, then 03:30 CEST; 02:xx does not exist.
    assert bounds("hour", utc(2026, 3, 29, 0, 30), "Europe/Paris") == (utc(2026, 3, 29, 0), utc(2026, 3, 29, 1))
    assert bounds("hour", utc(2026, 3, 29, 1, 30), "Europe/Paris") == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))
    # Fall: 02:30 CEST and 02:30 CET are two different hours.
    assert bounds("hour", utc(2026, 10, 25, 0, 30), "Europe/Paris") == (utc(2026, 10, 25, 0), utc(2026, 10, 25, 1))
    assert bounds("hour", utc(2026, 10, 25, 1, 30), "Europe/Paris") == (utc(2026, 10, 25, 1), utc(2026, 10, 25, 2))


def test_paris_month_and_week_with_dst():
    assert bounds("month", utc(2026, 3, 15), "Europe/Paris") == (utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))
    assert bounds("month", utc(2026, 10, 15), "Europe/Paris") == (utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))
    assert bounds("week", utc(2026, 3, 29, 12), "Europe/Paris") == (utc(2026, 3, 22, 23), utc(2026, 3, 29, 22))
    assert bounds("week", utc(2026, 10, 25, 12), "Europe/Paris") == (utc(2026, 10, 18, 22), utc(2026, 10, 25, 23))


def test_new_york_spring_forward():
    # 2026-03-08: 02:00 EST -> 03:00 EDT at 07:00Z.
    assert bounds("day", utc(2026, 3, 8, 12), "America/New_York") == (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))
    assert bounds("hour", utc(2026, 3, 8, 6, 59, 59), "America/New_York") == (utc(2026, 3, 8, 6), utc(2026, 3, 8, 7))
    assert bounds("hour", utc(2026, 3, 8, 7), "America/New_York") == (utc(2026, 3, 8, 7), utc(2026, 3, 8, 8))


def test_new_york_fall_back():
    # 2026-11-01: 02:00 EDT -> 01:00 EST at 06:00Z; 01:xx happens twice.
    assert bounds("day", utc(2026, 11, 1, 12), "America/New_York") == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    assert bounds("hour", utc(2026, 11, 1, 5, 30), "America/New_York") == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 6))
    assert bounds("hour", utc(2026, 11, 1, 6, 30), "America/New_York") == (utc(2026, 11, 1, 6), utc(2026, 11, 1, 7))
    assert bounds("week", utc(2026, 11, 1, 12), "America/New_York") == (utc(2026, 10, 26, 4), utc(2026, 11, 2, 5))
    assert bounds("month", utc(2026, 3, 20), "America/New_York") == (utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))


def test_midnight_in_a_dst_gap_starts_the_day_after_the_gap():
    # America/Santiago 2026-09-06: Saturday 24:00 -04 -> Sunday 01:00 -03 at 04:00Z.
    assert bounds("day", utc(2026, 9, 6, 12), "America/Santiago") == (utc(2026, 9, 6, 4), utc(2026, 9, 7, 3))
    assert bounds("day", utc(2026, 9, 5, 12), "America/Santiago") == (utc(2026, 9, 5, 4), utc(2026, 9, 6, 4))
    # America/Havana 2026-03-08: 00:00 CST -> 01:00 CDT at 05:00Z.
    assert bounds("day", utc(2026, 3, 8, 12), "America/Havana") == (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))


def test_repeated_midnight_starts_the_day_at_its_first_occurrence():
    # America/Havana 2026-11-01: 01:00 CDT -> 00:00 CST at 05:00Z, so midnight happens twice.
    assert bounds("day", utc(2026, 11, 1, 4, 30), "America/Havana") == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    assert bounds("day", utc(2026, 11, 1, 5, 30), "America/Havana") == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    assert bounds("day", utc(2026, 11, 1, 4) - US, "America/Havana") == (utc(2026, 10, 31, 4), utc(2026, 11, 1, 4))


def test_a_skipped_calendar_day():
    # Pacific/Apia jumped from 2011-12-29 24:00 (-10) to 2011-12-31 00:00 (+14) at 10:00Z.
    assert bounds("day", utc(2011, 12, 30, 9), "Pacific/Apia") == (utc(2011, 12, 29, 10), utc(2011, 12, 30, 10))
    assert bounds("day", utc(2011, 12, 30, 10), "Pacific/Apia") == (utc(2011, 12, 30, 10), utc(2011, 12, 31, 10))
    # Saturday 31st: its week began on Monday 26th (-10) and lasted 6 days.
    assert bounds("week", utc(2011, 12, 30, 10), "Pacific/Apia") == (utc(2011, 12, 26, 10), utc(2012, 1, 1, 10))


def test_half_hour_dst_cuts_the_hour():
    # Australia/Lord_Howe 2026-04-05: 02:00 +11 -> 01:30 +10:30 at 15:00Z; hours then start at :30Z.
    tz = "Australia/Lord_Howe"
    assert bounds("hour", utc(2026, 4, 4, 14, 30), tz) == (utc(2026, 4, 4, 14), utc(2026, 4, 4, 15))
    assert bounds("hour", utc(2026, 4, 4, 15), tz) == (utc(2026, 4, 4, 15), utc(2026, 4, 4, 15, 30))
    assert bounds("hour", utc(2026, 4, 4, 15, 30), tz) == (utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 16, 30))
    # 2026-10-04: 02:00 +10:30 -> 02:30 +11 at 15:30Z.
    assert bounds("hour", utc(2026, 10, 3, 15), tz) == (utc(2026, 10, 3, 14, 30), utc(2026, 10, 3, 15, 30))
    assert bounds("hour", utc(2026, 10, 3, 15, 30), tz) == (utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 16))
    # Its days are 24.5 h and 23.5 h long.
    start, end = bounds("day", utc(2026, 4, 5, 0), tz)
    assert end - start == 24.5 * H


# --- tiling --------------------------------------------------------------------------------------

WALK_ZONES = ["UTC", "Europe/Paris", "America/New_York", "America/Santiago", "America/Havana",
              "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Apia", "Pacific/Chatham"]


@pytest.mark.parametrize("tz", WALK_ZONES)
@pytest.mark.parametrize("period, since, until", [
    ("day", utc(2025, 12, 25), utc(2027, 1, 5)),
    ("week", utc(2025, 12, 1), utc(2027, 2, 1)),
    ("month", utc(2025, 1, 1), utc(2028, 1, 1)),
    ("year", utc(2000, 1, 1), utc(2030, 1, 1)),
])
def test_periods_tile_the_time_line(tz, period, since, until):
    x = since
    prev_end = None
    while x < until:
        start, end = bounds(period, x, tz)
        assert start <= x < end
        assert prev_end is None or start == prev_end
        assert bounds(period, end - US, tz) == (start, end)
        prev_end, x = end, end


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])
@pytest.mark.parametrize("period", ["minute", "hour"])
def test_windows_tile_across_dst_changes(tz, period):
    zone = zoneinfo.ZoneInfo(tz)
    # every hour of 2026 where the offset changes, walked window by window from 3 h before to 3 h after
    x = utc(2026, 1, 1)
    changes = []
    while x < utc(2027, 1, 1):
        if datetime.fromtimestamp(x, zone).utcoffset() != datetime.fromtimestamp(x + H, zone).utcoffset():
            changes.append(x)
        x += H
    assert len(changes) == (0 if tz == "Asia/Kolkata" else 2)
    for change in changes or [utc(2026, 6, 1)]:
        x, prev_end = change - 3 * H, None
        while x < change + 4 * H:
            start, end = bounds(period, x, tz)
            assert start <= x < end <= start + (60 if period == "minute" else H)
            assert prev_end is None or start == prev_end
            prev_end, x = end, end


LENGTHS = {"minute": (60, 60), "hour": (30 * 60, H), "day": (23 * H, 25 * H),
           "week": (7 * D - H, 7 * D + H), "month": (28 * D - H, 31 * D + H), "year": (365 * D - H, 366 * D + H)}
PROPERTY_ZONES = ["UTC", "Europe/Paris", "America/New_York", "America/Santiago", "Asia/Tokyo",
                  "Asia/Kolkata", "Australia/Lord_Howe", "Australia/Sydney", "Europe/London"]


@settings(max_examples=400, deadline=None)
@given(t=st.floats(min_value=utc(2000, 1, 1), max_value=utc(2037, 12, 1)),
       period=st.sampled_from(PERIODS), tz=st.sampled_from(PROPERTY_ZONES))
def test_property_contains_t_and_is_a_sane_period(t, period, tz):
    periods._last.clear()
    start, end = bounds(period, t, tz)
    assert start <= t < end
    low, high = LENGTHS[period]
    assert low <= end - start <= high
    assert bounds(period, start, tz) == (start, end)
    assert bounds(period, start - US, tz)[1] == start
    if period in ("day", "week", "month", "year"):
        local = datetime.fromtimestamp(start, zoneinfo.ZoneInfo(tz))
        assert (local.hour, local.minute, local.second) == (0, 0, 0) or local.hour == 1   # 01:00 after a gap
        if period == "week":
            assert local.weekday() == 0
        if period in ("month", "year"):
            assert local.day == 1
        if period == "year":
            assert local.month == 1


# --- the remembered interval ------------------------------------------------------------------------

def test_cache_follows_t_into_the_next_period_and_back():
    t1 = utc(2026, 11, 27, 12)
    assert bounds("day", t1) == (utc(2026, 11, 27), utc(2026, 11, 28))
    assert bounds("day", t1 + D) == (utc(2026, 11, 28), utc(2026, 11, 29))          # next period
    assert bounds("day", utc(2026, 11, 28)) == (utc(2026, 11, 28), utc(2026, 11, 29))  # exactly at start
    assert bounds("day", utc(2026, 11, 28) - US) == (utc(2026, 11, 27), utc(2026, 11, 28))  # back
    assert bounds("day", t1 + 400 * D) == (utc(2028, 1, 1), utc(2028, 1, 2))            # far ahead


def test_cache_returns_the_remembered_interval_while_t_stays_inside():
    first = bounds("hour", utc(2026, 11, 27, 9, 0, 1))
    assert bounds("hour", utc(2026, 11, 27, 9, 59, 59)) is first
    assert bounds("hour", utc(2026, 11, 27, 10)) == (utc(2026, 11, 27, 10), utc(2026, 11, 27, 11))
    assert bounds("hour", utc(2026, 11, 27, 10)) is not first


def test_cache_keeps_periods_and_zones_apart():
    assert bounds("day", T) == (utc(2026, 11, 27), utc(2026, 11, 28))
    assert bounds("day", T, "Asia/Tokyo") == (utc(2026, 11, 26, 15), utc(2026, 11, 27, 15))
    assert bounds("day", T, "America/New_York") == (utc(2026, 11, 27, 5), utc(2026, 11, 28, 5))
    assert bounds("week", T) == (utc(2026, 11, 23), utc(2026, 11, 30))
    assert bounds("day", T) == (utc(2026, 11, 27), utc(2026, 11, 28))
    assert bounds("day", T, "Asia/Tokyo") == (utc(2026, 11, 26, 15), utc(2026, 11, 27, 15))


def test_cache_across_a_dst_change():
    tz = "Europe/Paris"
    assert bounds("day", utc(2026, 3, 28, 12), tz) == (utc(2026, 3, 27, 23), utc(2026, 3, 28, 23))
    assert bounds("day", utc(2026, 3, 29, 12), tz) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert bounds("day", utc(2026, 3, 30, 12), tz) == (utc(2026, 3, 29, 22), utc(2026, 3, 30, 22))


def test_repeated_calls_in_one_period_reuse_the_last_answer(monkeypatch):
    """The request path asks for the same periods again and again: calendar math runs once per
    (period, zone) until the instant leaves the interval it returned."""
    from finops.workers.governance import periods
    computed = []
    for name in ("_window", "_calendar"):
        real = getattr(periods, name)
        monkeypatch.setattr(periods, name, lambda *a, _real=real: computed.append(a) or _real(*a))
    t = utc(2026, 11, 27, 9, 30)
    for period in PERIODS:
        for tz in ("UTC", "Europe/Paris"):
            here = bounds(period, t, tz)
            bounds(period, here[0] - 1, tz)             # the previous interval is the last answer
            computed.clear()
            got = {bounds(period, t + i * 1e-3, tz) for i in range(1000)}
            assert got == {here}
            assert len(computed) == 1, (period, tz, len(computed))


# --- errors and iso ----------------------------------------------------------------------------------

def test_unknown_period():
    with pytest.raises(ValueError, match="unknown period 'fortnight'"):
        bounds("fortnight", T)


def test_unknown_zone():
    with pytest.raises(zoneinfo.ZoneInfoNotFoundError):
        bounds("day", T, "Mars/Olympus_Mons")


def test_iso():
    assert iso(utc(2026, 11, 28)) == "2026-11-28T00:00:00Z"
    assert iso(utc(2026, 11, 27, 9, 54, 32) + 0.999) == "2026-11-27T09:54:32Z"     # rounded down
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(-0.5) == "1969-12-31T23:59:59Z"
    assert iso(utc(2028, 2, 29, 23, 59, 59)) == "2028-02-29T23:59:59Z"
    assert iso(bounds("month", T, "Europe/Paris")[1]) == "2026-11-30T23:00:00Z"
