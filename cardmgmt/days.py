"""The business day: which calendar day a recharge belongs to, for reconciliation and reports.

Timestamps are stored and passed around in UTC, but the utility closes its
books at midnight Beijing time, so a recharge at 23:30 UTC on the 1st belongs
to the 2nd.  Everything that asks "which day" (recharge expiry, reconciliation) goes
through ``business_day`` and ``day_bounds`` here, so the card side and the
marketing side of a reconciliation can never draw the line in different places.
"""

# test-case-name: tests.cardmgmt.test_days

import datetime as dt

# China has one time zone and no daylight saving, so a fixed offset is exact.
BUSINESS_TZ = dt.timezone(dt.timedelta(hours=8))

UTC = dt.UTC


def as_utc(ts: dt.datetime) -> dt.datetime:
    """``ts`` as an aware UTC datetime; a naive one is taken to be UTC already.

    SQLite hands ``DateTime(timezone=True)`` columns back naive (the project
    stores UTC there), and PostgreSQL hands them back in the session's time
    zone; both become the same aware UTC value here.
    """
    if ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def business_day(ts: dt.datetime) -> dt.date:
    """The UTC+8 calendar day that ``ts`` (aware, or naive UTC) falls on."""
    return as_utc(ts).astimezone(BUSINESS_TZ).date()


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The business day ``day`` as a half-open UTC range ``[start, end)``.

    Half-open, so a timestamp exactly at midnight belongs to exactly one day.
    """
    start = dt.datetime.combine(day, dt.time(0), tzinfo=BUSINESS_TZ).astimezone(UTC)
    return start, start + dt.timedelta(days=1)
