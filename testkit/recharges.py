"""Recharges made the way the hotline makes them, at chosen moments, for tests of what reads them back.

``recharge_cards`` drives the real recharge core (``cardmgmt.recharge``:
quote, then commit) against a card database and the stand-in marketing
system, with a clock set to each recharge's moment and a channel of its
own, so the records it leaves are the ones customer service will look up.
``post`` then runs the real outbox drain, so some can be posted.
"""

# test-case-name: tests.cardmgmt.test_lookups, tests.cli.test_recharge

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cardmgmt.db import Database
from cardmgmt.recharge import Outcome, Policy, RechargeService
from marketing_iface.outbox import drain
from marketing_iface.sql import SqlMarketing


@dataclass(frozen=True)
class Made:
    """One recharge made: its reference, and what it was made from."""

    ref: str
    serial: str
    account: str
    at: dt.datetime
    channel: str


def recharge_cards(
    database_url: str, marketing_url: str, pin_key: bytes, jobs: list[tuple[str, str, str, dt.datetime, str]],
) -> list[Made]:
    """Recharge each ``(serial, pin, account, at, channel)`` as a one-card call at ``at``; what was made, in order."""
    db, marketing = Database(database_url), SqlMarketing(marketing_url)
    made = []
    try:
        for i, (serial, pin, account, at, channel) in enumerate(jobs):
            service = RechargeService(db, marketing, pin_key, Policy(), clock=lambda at=at: at, channel=channel)
            call = f"lookup-{i}-{at:%H%M%S}"
            quoted = service.quote(call_id=call, seq=1, account_no=account, pin=pin, caller="13800000001")
            assert quoted.outcome is Outcome.OK, quoted
            done = service.commit(call_id=call, seq=1)
            assert done.outcome is Outcome.OK, done
            made.append(Made(done.data["recharge_ref"], serial, account, at, channel))
    finally:
        marketing.close()
        db.dispose()
    return made


def post(database_url: str, marketing_url: str, now: dt.datetime) -> int:
    """Run the outbox drain once at ``now``; how many recharges it posted."""
    db, marketing = Database(database_url), SqlMarketing(marketing_url)
    try:
        return drain(db, marketing, now).posted
    finally:
        marketing.close()
        db.dispose()
