"""Lockouts after wrong PINs, as administrators see and clear them.

The recharge core counts wrong PINs per presented caller number, and per
account for withheld numbers only (see ``recharge``); this module lists who is
locked out now and clears a lockout by marking its failures cleared, with the
operator's name, so the history stays visible.
"""

# test-case-name: tests.cardmgmt.test_recharge, tests.cli.test_root

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, select, update

from cardmgmt import audit
from cardmgmt.context import Context, Permission
from cardmgmt.db import Database
from cardmgmt.errors import InvalidInput, NotFound
from cardmgmt.keys import KeyRing
from cardmgmt.models import LogEntry, PinFailure, utcnow
from cardmgmt.recharge import Policy

KINDS = {"caller": PinFailure.caller, "account": PinFailure.account_no}
# Which failures count towards each kind of lockout: an account is only ever
# locked against callers who withhold their number.
COUNTED = {"caller": PinFailure.caller != "", "account": PinFailure.caller == ""}


def active(ctx: Context, policy: Policy, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Callers and accounts locked out now, with their failure counts and when the lockout lapses."""
    ctx.require(Permission.VIEW)
    now = now or utcnow()
    since = now - dt.timedelta(hours=policy.lockout_hours)
    rows: list[dict[str, Any]] = []
    for kind, column in KINDS.items():
        q = (
            select(column, func.count(), func.max(PinFailure.at), func.min(PinFailure.at))
            .where(PinFailure.at > since, PinFailure.cleared_by.is_(None), COUNTED[kind])
            .group_by(column)
            .having(func.count() >= policy.max_pin_failures)
            .order_by(column)
        )
        for value, n, last, first in ctx.session.execute(q):
            rows.append({"kind": kind, "value": value, "failures": n, "last_failure": last,
                         "lapses_at": first + dt.timedelta(hours=policy.lockout_hours)})
    return rows


def clear(ctx: Context, kind: str, value: str, reason: str) -> int:
    """Clear a caller's or an account's lockout; returns the number of failures cleared."""
    ctx.require(Permission.MANAGE_CARDS)
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    if not reason.strip():
        raise InvalidInput("a reason is required")
    n = ctx.session.execute(
        update(PinFailure)
        .where(KINDS[kind] == value, COUNTED[kind], PinFailure.cleared_by.is_(None))
        .values(cleared_by=ctx.actor.name),
        execution_options={"synchronize_session": False},
    ).rowcount
    if n == 0:
        raise NotFound(f"{kind} {value} has no wrong PINs to clear")
    ctx.log("lockout.clear", f"{kind} {value}", before={"failures": n}, after={"reason": reason.strip()[:200]})
    return n


GUARD_ALERT = "alert.pin_guard"


@dataclass(frozen=True)
class GuardStatus:
    """The whole service's wrong PINs in the guard window, against its budget."""

    recent: int
    limit: int
    tripped: bool
    alerted: bool  # this look wrote the window's alert to the operation log


def watch_guard(db: Database, keys: KeyRing, policy: Policy, anchor_file: Path, who: str, now: dt.datetime) -> GuardStatus:
    """Look at the service-wide wrong-PIN rate; on the first look that finds it tripped in a window, log an alert.

    Run by the leading recharge server every few seconds.  The alert is an
    operation-log entry (anchored like any other), written at most once per
    guard window, so a long attack leaves one entry per window, not one per
    look; the metric carries the figures in between.
    """
    since = policy.guard_since(now)
    head = None
    with db.transaction() as s:
        recent = s.execute(select(func.count()).select_from(PinFailure).where(PinFailure.at > since)).scalar_one()
        tripped = policy.guard_tripped(recent)
        if tripped:
            already = s.execute(
                select(exists().where(LogEntry.action == GUARD_ALERT, LogEntry.at > since.isoformat()))
            ).scalar_one()
            if not already:
                entry = audit.record(
                    s, keys.audit_key, who, GUARD_ALERT, "recharge service",
                    after={"wrong_pins": recent, "limit": policy.guard_failures, "minutes": policy.guard_minutes},
                )
                head = (entry.seq, entry.hash)
    if head is not None:
        audit.anchor(anchor_file, keys.system_private, keys.fingerprint, *head)
    return GuardStatus(recent, policy.guard_failures, tripped, head is not None)
