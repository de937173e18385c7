"""The UTC+8 business day (pure functions, no database)."""

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from cardmgmt.days import BUSINESS_TZ, as_utc, business_day, day_bounds

UTC = dt.UTC


def test_business_day_turns_at_16_00_utc():
    assert business_day(dt.datetime(2024, 2, 29, 15, 59, 59, 999999, tzinfo=UTC)) == dt.date(2024, 2, 29)
    assert business_day(dt.datetime(2024, 2, 29, 16, 0, tzinfo=UTC)) == dt.date(2024, 3, 1)


def test_naive_timestamps_are_utc():
    assert business_day(dt.datetime(2024, 2, 29, 16, 0)) == dt.date(2024, 3, 1)
    assert as_utc(dt.datetime(2024, 1, 1, 12)) == dt.datetime(2024, 1, 1, 12, tzinfo=UTC)


def test_as_utc_converts_other_zones():
    beijing = dt.datetime(2024, 3, 1, 0, 0, tzinfo=BUSINESS_TZ)
    assert as_utc(beijing) == dt.datetime(2024, 2, 29, 16, 0, tzinfo=UTC)
    assert as_utc(beijing).tzinfo is UTC


def test_day_bounds_are_beijing_midnights_in_utc():
    start, end = day_bounds(dt.date(2024, 3, 1))
    assert start == dt.datetime(2024, 2, 29, 16, 0, tzinfo=UTC)
    assert end == dt.datetime(2024, 3, 1, 16, 0, tzinfo=UTC)
    assert start.tzinfo is UTC


# Fixed offsets, every minute from -14:00 to +14:00: cheaper to draw than tz database zones, and odder.
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))


@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=OFFSETS))
def test_every_instant_lies_in_the_bounds_of_its_business_day(ts):
    start, end = day_bounds(business_day(ts))
    assert start <= ts < end
