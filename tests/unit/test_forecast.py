"""forecast(): the projected spend at a budget period's end, on synthetic spend curves, with the
clock given as an argument (no real time anywhere)."""
import math

import pytest

from finops.workers.observe.forecast import forecast, projected_at

H = 3600.0
DAY = 86400.0
START = 1_793_491_200.0           # 2026-11-01T00:00:00Z
END = START + 30 * DAY            # a 30-day month


def hourly(start: float, stop: float, usd_per_hour: float) -> list[tuple[float, float]]:
    """One point per hour in [start, stop), at the middle of the hour."""
    return [(start + i * H + H / 2, usd_per_hour) for i in range(int((stop - start) // H))]


def linear(spent: float, now: float) -> float:
    """What 'average so far, carried to the end' would say."""
    return spent * (END - START) / (now - START)


def test_steady_spend_projects_its_rate_to_the_end():
    now = START + 12 * DAY
    f = forecast(hourly(START, now, 0.5), START, END, now, limit=500.0)
    assert f.spent_usd == pytest.approx(0.5 * 12 * 24)
    assert f.rate_usd_per_hour == pytest.approx(0.5, rel=0.01)
    assert f.projected_usd == pytest.approx(0.5 * 30 * 24, rel=0.01)        # 360
    assert f.projected_usd == pytest.approx(linear(f.spent_usd, now), rel=0.01)
    assert f.crosses_at is None and not f.over(500.0)
    assert f.model == "ewma" and f.half_life_s == pytest.approx(3 * DAY)


def test_steady_spend_crosses_a_small_budget_when_the_rate_says():
    now = START + 10 * DAY
    f = forecast(hourly(START, now, 1.0), START, END, now, limit=300.0)     # $24 a day: $300 on day 12.5
    assert f.over(300.0)
    assert f.crosses_at == pytest.approx(START + 12.5 * DAY, abs=0.1 * DAY)


def test_late_spike_raises_the_forecast_above_the_linear_one():
    now = START + 15 * DAY
    pts = hourly(START, now - 6 * H, 1 / 24) + hourly(now - 6 * H, now, 10.0)   # $1/day, then $10/h
    f = forecast(pts, START, END, now, limit=200.0)
    assert f.spent_usd == pytest.approx(14.75 + 60, rel=1e-6)
    lin = linear(f.spent_usd, now)
    assert lin < 200.0 < f.projected_usd                       # the linear model would not warn
    assert f.projected_usd > 1.5 * lin
    assert f.crosses_at is not None and now < f.crosses_at < END


def test_early_burst_then_quiet_decays_towards_what_was_spent():
    now = START + 15 * DAY
    f = forecast(hourly(START, START + DAY, 50 / 24), START, END, now, limit=90.0)
    assert f.spent_usd == pytest.approx(50.0)
    assert linear(50.0, now) == pytest.approx(100.0)           # the linear model would warn
    assert 50.0 <= f.projected_usd < 60.0
    assert not f.over(90.0) and f.crosses_at is None


def test_empty_period_projects_nothing():
    f = forecast([], START, END, START + 3 * DAY, limit=10.0)
    assert (f.spent_usd, f.projected_usd, f.rate_usd_per_hour, f.crosses_at) == (0.0, 0.0, 0.0, None)


def test_just_started_period_is_not_a_thousand_fold_projection():
    now = START + 600                                          # ten minutes into the month
    f = forecast([(START + 300, 1.0)], START, END, now, limit=100.0)
    assert linear(1.0, now) == pytest.approx(4320.0)
    assert 1.0 < f.projected_usd < 25.0                        # measured over a half-life (3 days)
    assert not f.over(100.0)
    # the same spend pace kept up for several half-lives is projected in full
    later = START + 12 * DAY
    g = forecast([(t, 1.0) for t in (START + 300 + i * 600 for i in range(int((later - START) // 600)))],
                 START, END, later)
    assert g.projected_usd == pytest.approx(6 * 24 * 30, rel=0.02)


def test_clock_before_the_start_and_after_the_end():
    pts = hourly(START, START + 2 * DAY, 1.0)
    assert forecast(pts, START, END, START - DAY).projected_usd == 0.0          # nothing observed yet
    done = forecast(pts, START, END, END + DAY, limit=10.0)
    assert done.projected_usd == done.spent_usd == pytest.approx(48.0)          # over: no projection
    assert done.rate_usd_per_hour == 0.0
    assert done.crosses_at == pytest.approx(START + 9 * H + H / 2)              # the point that reached $10


def test_points_after_now_are_not_seen():
    now = START + DAY
    f = forecast(hourly(START, START + 3 * DAY, 1.0), START, END, now)
    assert f.spent_usd == pytest.approx(24.0)


def test_spent_from_the_ledger_overrides_the_sum_and_already_over():
    now = START + 5 * DAY
    pts = hourly(START, now, 0.1)
    f = forecast(pts, START, END, now, spent=20.0, limit=15.0)
    assert f.spent_usd == 20.0 and f.projected_usd > 20.0
    assert f.crosses_at == now                     # over per the ledger, never per the points


def test_projected_at_follows_the_rate_and_stops_at_the_end():
    now = START + 10 * DAY
    f = forecast(hourly(START, now, 1.0), START, END, now)
    assert projected_at(f, now) == f.spent_usd
    assert projected_at(f, now + DAY) == pytest.approx(f.spent_usd + 24 * f.rate_usd_per_hour, rel=1e-6)
    assert projected_at(f, END + 5 * DAY) == pytest.approx(f.projected_usd, abs=1e-6)


def test_short_periods_use_their_own_scale():
    start, end = START, START + 60.0                           # a minute budget
    f = forecast([(start + i, 0.01) for i in range(30)], start, end, start + 30)
    assert f.half_life_s == pytest.approx(6.0)
    assert f.projected_usd == pytest.approx(0.6, rel=0.1)


def test_bad_periods_are_refused():
    with pytest.raises(ValueError, match="end after it starts"):
        forecast([], END, START, START)
    with pytest.raises(ValueError, match="half_life"):
        forecast([], START, END, START, half_life=0)
    assert math.isfinite(forecast([(START, 1e9)], START, END, START).projected_usd)
