"""Reversals (冲正): undoing a posted recharge by a counter-entry, with a second person's approval.

A recharge credited to the wrong account (the customer keyed another
account number) is not deleted: an administrator files a reversal of it by
its reference, with a reason; finance approves or rejects it with a comment,
and never the one who filed it (separation of duties, as for issue
requests).  An approved reversal's counter-entry (the original's amount
negated, to the same account, naming the original's reference) goes to the
marketing system through the outbox (``marketing_iface.outbox``), exactly
once and only after the original has been posted.  The card stays spent.

A recharge has at most one reversal (a unique ``recharge_id``), so a second
filing, a reversal of a reversal, or one of a recharge the marketing system
never took is refused with one line and nothing changed.  Decisions are
conditional updates (``WHERE status = 'pending'``): of two finance officers
deciding at once, the database lets exactly one through.

``figures`` gives the reports the approved reversals of a date range by
business day and channel, in integer fen.
"""

# test-case-name: tests.cardmgmt.test_reversals, tests.marketing_iface.test_reversal_outbox

import datetime as dt
import re
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cardmgmt.approvals import NotDecidable, why_not_decide
from cardmgmt.context import Actor, Context, Permission
from cardmgmt.days import as_utc
from cardmgmt.db import dialect_insert
from cardmgmt.errors import AlreadyExists, ConflictError, IllegalTransition, InvalidInput, NotFound, PermissionDenied
from cardmgmt.models import POSTING_REF_MAX, Recharge, Reversal, reversal_ref, utcnow
from cardmgmt.states import PostStatus, ReversalStatus

# A recharge's reference: its business day (yymmdd) and its record number (8 digits or more).
_RECHARGE_REF = re.compile(r"(\d{6})(\d{8,})")
_REVERSAL_REF = re.compile(r"\d{14,}R")
REASON_MAX = 256

# What the marketing system never took: a reversal of it could never be posted.
_NEVER_POSTED = (PostStatus.REJECTED, PostStatus.RESOLVED)


def find_recharge(session: Session, ref: str) -> Recharge:
    """The recharge with reference ``ref`` (``recharge_ref``: yymmdd + record number); ``NotFound`` otherwise."""
    ref = ref.strip()
    if _REVERSAL_REF.fullmatch(ref):
        raise InvalidInput(f"{ref} is a reversal's reference; a reversal cannot be reversed")
    m = _RECHARGE_REF.fullmatch(ref)
    if m is None:
        raise InvalidInput(f"{ref!r} is not a recharge reference (6 digits of the business day, then the record number)")
    recharge = session.get(Recharge, int(m.group(2)))
    if recharge is None or recharge.ref != ref:
        raise NotFound(f"no recharge has reference {ref}")
    return recharge


def find_by_ref(session: Session, ref: str) -> Reversal:
    """The reversal whose own reference is ``ref`` (the original's with ``R`` appended)."""
    rev = session.scalar(select(Reversal).where(Reversal.ref == ref.strip()))
    if rev is None:
        raise NotFound(f"no reversal has reference {ref.strip()}")
    return rev


def is_reversal_ref(ref: str) -> bool:
    return _REVERSAL_REF.fullmatch(ref.strip()) is not None


def get(session: Session, reversal_id: int) -> Reversal:
    rev = session.get(Reversal, reversal_id)
    if rev is None:
        raise NotFound(f"reversal {reversal_id} does not exist")
    return rev


def file(ctx: Context, ref: str, reason: str) -> Reversal:
    """File a reversal of the recharge with reference ``ref``; it waits for finance."""
    ctx.require(Permission.MANAGE_CARDS)
    reason = reason.strip()
    if not reason:
        raise InvalidInput("a reversal needs a reason")
    recharge = find_recharge(ctx.session, ref)
    existing = ctx.session.scalar(select(Reversal).where(Reversal.recharge_id == recharge.id))
    if existing is not None:
        raise AlreadyExists(f"recharge {recharge.ref} already has reversal {existing.id} ({existing.status})")
    if recharge.post_status in _NEVER_POSTED:
        raise IllegalTransition(
            f"recharge {recharge.ref} was never taken by the marketing system ({recharge.post_status}); "
            "there is nothing to reverse there: retry or resolve its posting instead"
        )
    own_ref = reversal_ref(recharge.ref)
    if len(own_ref) > POSTING_REF_MAX:  # a record number past 10^17: not in this system's lifetime
        raise InvalidInput(f"reversal reference {own_ref} is longer than the marketing system takes")
    # ON CONFLICT rather than a savepoint (pysqlite commits a savepoint taken
    # before the transaction's first write when it is released): a racing
    # filing for the same recharge makes this insert wait, then insert nothing.
    rev_id = ctx.session.execute(
        dialect_insert(ctx.session.get_bind().dialect.name, Reversal.__table__)
        .values(ref=own_ref, recharge_id=recharge.id, original_ref=recharge.ref, account_no=recharge.account_no,
                card_serial=recharge.card_serial, channel=recharge.channel, amount=recharge.amount,
                status=ReversalStatus.PENDING.value, reason=reason[:REASON_MAX], filed_by=ctx.actor.name,
                filed_at=utcnow(), post_attempts=0)
        .on_conflict_do_nothing()
        .returning(Reversal.__table__.c.id)
    ).scalar_one_or_none()
    if rev_id is None:
        # Another administrator filed one for the same recharge a moment ago.
        raise ConflictError(f"recharge {recharge.ref} was given a reversal by someone else just now; nothing changed")
    rev = get(ctx.session, rev_id)
    ctx.log("reversal.file", f"reversal {rev.id} of recharge {recharge.ref}",
            after={"ref": rev.ref, "account_no": rev.account_no, "amount": rev.amount, "reason": rev.reason})
    return rev


def why_not(actor: Actor, rev: Reversal | dict[str, Any]) -> NotDecidable | None:
    """None when ``actor`` may approve or reject reversal ``rev`` now; else why not, the filer's own first.

    ``decide`` asks this too, so a front end that shows a reversal as not
    decidable (the web console) and the decision itself follow one rule.
    """
    filed_by = rev["filed_by"] if isinstance(rev, dict) else rev.filed_by
    status = rev["status"] if isinstance(rev, dict) else rev.status
    return why_not_decide(actor, filed_by, status == ReversalStatus.PENDING)


def decide(ctx: Context, reversal_id: int, *, approve: bool, comment: str, now: dt.datetime | None = None) -> Reversal:
    """Finance approves or rejects a pending reversal, with a comment; an approved one is queued for posting."""
    ctx.require(Permission.DECIDE_REQUESTS)
    rev = get(ctx.session, reversal_id)
    why = why_not(ctx.actor, rev)
    if why is NotDecidable.OWN:
        raise PermissionDenied(f"operator {ctx.actor.name!r} filed reversal {rev.id} and cannot decide it")
    if why is not None:
        raise IllegalTransition(f"reversal {rev.id} is {rev.status}, not pending")
    comment = comment.strip()
    if not comment:
        raise InvalidInput("a decision needs a comment")
    when = as_utc(now) if now is not None else utcnow()
    values: dict[str, Any] = {"decided_by": ctx.actor.name, "decided_at": when, "decision_comment": comment[:REASON_MAX]}
    if approve:
        original = ctx.session.get_one(Recharge, rev.recharge_id)
        if original.post_status in _NEVER_POSTED:
            raise IllegalTransition(
                f"recharge {original.ref} was never taken by the marketing system ({original.post_status}); "
                f"reject reversal {rev.id} and retry or resolve that posting instead"
            )
        values.update(status=ReversalStatus.APPROVED, post_status=PostStatus.PENDING, post_attempts=0,
                      next_attempt_at=when)
    else:
        values.update(status=ReversalStatus.REJECTED)
    result = ctx.session.execute(
        update(Reversal).where(Reversal.id == rev.id, Reversal.status == ReversalStatus.PENDING).values(**values),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        raise ConflictError(f"reversal {rev.id} was decided by someone else just now; nothing changed")
    ctx.session.refresh(rev)
    ctx.log(f"reversal.{'approve' if approve else 'reject'}", f"reversal {rev.id} of recharge {rev.original_ref}",
            before={"status": ReversalStatus.PENDING.value},
            after={"status": rev.status.value, "comment": rev.decision_comment})
    return rev


def listing(session: Session, status: ReversalStatus | str | None = None, limit: int = 1000) -> list[Reversal]:
    """Reversals, oldest first, optionally only those in ``status``."""
    q = select(Reversal).order_by(Reversal.id).limit(limit)
    if status:
        q = q.where(Reversal.status == status)
    return list(session.scalars(q))


def recent(session: Session, limit: int = 50) -> list[Reversal]:
    """The ``limit`` reversals decided last (approved or rejected), newest decision first."""
    q = (select(Reversal).where(Reversal.status != ReversalStatus.PENDING)
         .order_by(Reversal.decided_at.desc(), Reversal.id.desc()).limit(limit))
    return list(session.scalars(q))


def describe(rev: Reversal) -> dict[str, Any]:
    """A reversal as plain data (money in integer fen, times in UTC), for listings and ``--json``."""
    def at(ts: dt.datetime | None) -> str | None:
        return None if ts is None else as_utc(ts).isoformat(timespec="seconds")

    return {
        "id": rev.id, "ref": rev.ref, "original_ref": rev.original_ref, "account_no": rev.account_no,
        "card_serial": rev.card_serial, "channel": rev.channel, "amount": rev.amount,
        "status": rev.status.value, "reason": rev.reason, "filed_by": rev.filed_by, "filed_at": at(rev.filed_at),
        "decided_by": rev.decided_by, "decided_at": at(rev.decided_at), "comment": rev.decision_comment,
        "post_status": rev.post_status.value if rev.post_status else None, "post_attempts": rev.post_attempts,
        "posted_at": at(rev.posted_at), "last_error": rev.last_error,
    }
