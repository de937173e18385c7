"""The outbox worker: posts each recharge record to the marketing system exactly once.

A recharge is committed in the card database together with its outbox state
(``Recharge.post_status = 'pending'``); nothing about the marketing system is
done in that transaction, so a caller's recharge never waits on, or fails
with, the marketing system.  ``drain`` then posts pending records in
batches, oldest first, and marks each ``posted`` (or ``rejected`` when the
marketing system refuses it for good, for a person to look at).

Why this is exactly once.  *At least once*: a record stays ``pending`` until
a posting of it has been acknowledged, so an outage, a crash or a killed
worker only delays it; a failed attempt pushes ``next_attempt_at`` out by an
exponential ``backoff`` and is tried again.  *At most once*: the posting is
idempotent on ``recharge_ref`` (a unique key in the marketing system's
interface table), so whenever a record is posted again (the worker crashed
after the marketing system committed the posting but before the card database
committed ``posted``; or two workers on SQLite raced) the marketing system
answers "already there" and credits nothing.  On PostgreSQL each record is
also locked ``FOR UPDATE SKIP LOCKED`` while it is being posted, so two
workers never post the same record at the same time in the first place.

When the marketing system acknowledges a record, the same card transaction
that marks it ``posted`` queues its SMS notice (``sms.queue_notices``, at
most one per posting), from the ``Receipt`` the marketing system answered
in the posting's own transaction (balance after it, phone); ``sms.drain``
hands notices to the SMS platform.

Approved reversals (冲正) have an outbox of their own, in ``reversals``,
drained the same way by ``drain_reversals`` once their originals are posted
(see the note above ``PostingLog``); ``drain_all`` runs both, recharges
first, and is what the leading server and ``drain_now`` run.
"""

# test-case-name: tests.marketing_iface.test_outbox, tests.marketing_iface.test_reversal_outbox

import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypedDict

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cardmgmt import audit
from cardmgmt.context import Context, Permission
from cardmgmt.days import as_utc
from cardmgmt.db import Database
from cardmgmt.marketing import MarketingSystem, MarketingUnavailable, Posting, PostingRejected, Receipt, SmsPlatform
from cardmgmt.models import Recharge, Reversal
from cardmgmt.states import PostStatus
from marketing_iface import sms
from marketing_iface.drains import BATCH, backoff, unit_of_work

log = logging.getLogger(__name__)

# The outbox states as plain strings, for callers that offer them as choices.
PENDING = PostStatus.PENDING.value
POSTED = PostStatus.POSTED.value
REJECTED = PostStatus.REJECTED.value
RESOLVED = PostStatus.RESOLVED.value

_ERROR_LENGTH = Recharge.__table__.c.last_error.type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DrainResult:
    """What one ``drain`` did: newly written, already there, failed for now, refused for good."""

    posted: int = 0
    repeated: int = 0
    failed: int = 0
    rejected: int = 0
    sms: "sms.SmsDrainResult | None" = None  # drain_now also hands the SMS notices over

    def __add__(self, other: "DrainResult") -> "DrainResult":
        """The counts of both drains together (``sms`` from whichever handed notices over)."""
        return DrainResult(self.posted + other.posted, self.repeated + other.repeated, self.failed + other.failed,
                           self.rejected + other.rejected, self.sms or other.sms)


class Backlog(TypedDict):
    """How far behind the outbox is, for ``ha status`` and monitoring."""

    pending: int
    oldest_pending: dt.datetime | None  # committed_at of the oldest pending record, UTC
    rejected: int
    reversals_pending: int  # approved reversals not yet posted (some wait for their original)
    reversals_rejected: int


def posting_for(recharge: Recharge) -> Posting:
    """The posting that carries ``recharge`` into the marketing system's interface table.

    ``Recharge.ref`` (business day and record number) is the idempotency
    key; it is computed from ``committed_at`` in a fixed zone, so it is the
    same whatever time zone a worker's database session reads timestamps in.
    """
    return Posting(
        recharge_ref=recharge.ref,
        account_no=recharge.account_no,
        amount=recharge.amount,
        card_serial=recharge.card_serial,
        channel=recharge.channel,
        recharged_at=as_utc(recharge.committed_at),
    )


def drain(cards: Engine | Database, marketing: MarketingSystem, now: dt.datetime, limit: int = 500) -> DrainResult:
    """Post up to ``limit`` pending recharges that are due at ``now``, oldest first.

    Records go ``BATCH`` at a time: selected, posted to the marketing system
    in one of its transactions, and marked in one card-database transaction,
    so a crash loses at most the marks of the batch in flight (and
    re-posting it is harmless).  The drain stops at the first
    ``MarketingUnavailable``: the system is down, and every further attempt
    would wait out the same connect timeout.
    """
    now = as_utc(now)
    counts: Counter[str] = Counter()
    last_id = 0
    taken = 0
    while taken < limit and not counts["failed"]:
        with unit_of_work(cards) as session:
            batch = session.scalars(
                select(Recharge)
                .where(Recharge.post_status == PostStatus.PENDING, Recharge.next_attempt_at <= now, Recharge.id > last_id)
                .order_by(Recharge.id)
                .limit(min(BATCH, limit - taken))
                # Rows another worker is posting are skipped, not waited for.
                # SQLite has no row locks and ignores this; see the module docstring.
                .with_for_update(skip_locked=True)
            ).all()
            if not batch:
                break
            last_id = batch[-1].id
            taken += len(batch)
            counts.update(_post_batch(session, batch, marketing, now))
    return DrainResult(**counts)


def drain_now(ctx: Context, marketing: MarketingSystem, now: dt.datetime | None = None, limit: int = 500) -> DrainResult:
    """``drain_all`` (recharges, then reversals) at an operator's request (the leading server does it every second).

    ``ctx`` only says who may: each batch is still posted and marked in its
    own short transaction, outside ``ctx``'s, so a crash loses at most the
    marks of one batch, exactly as when the servers drain.
    """
    ctx.require(Permission.MANAGE_CARDS)
    engine = ctx.session.get_bind()
    assert isinstance(engine, Engine), "a unit of work's session is bound to its database's engine"

    def anchored_with_the_unit(seq: int, entry_hash: str) -> None:
        # The reversals' entries are committed batch by batch; the unit's end anchors the newest.
        ctx.head = (seq, entry_hash)

    journal = PostingLog(ctx.keys.audit_key, ctx.actor.name, anchored_with_the_unit)
    now = now or dt.datetime.now(dt.UTC)
    result = drain_all(engine, marketing, now, journal, limit)
    if isinstance(marketing, SmsPlatform):
        # The notices the posting just queued go out with it.
        result = dataclasses.replace(result, sms=sms.drain(engine, marketing, now, limit))
    return result


def _post_batch(session: Session, batch: Sequence[Recharge], marketing: MarketingSystem, now: dt.datetime,
                ) -> Counter[str]:
    """Post ``batch``, mark each record and queue its notice; how many were posted, repeated, rejected or failed."""
    outcomes = _post_and_mark(session, batch, [posting_for(r) for r in batch], marketing, now)
    return Counter(outcome for outcome, _ in outcomes) if outcomes else Counter(failed=1)


def _post_and_mark(
    session: Session, rows: Sequence[Recharge | Reversal], postings: Sequence[Posting], marketing: MarketingSystem,
    now: dt.datetime,
) -> list[tuple[str, str | None]]:
    """Post ``postings`` (one per row, in one marketing transaction), mark each row and queue its SMS notice.

    Per row: ``("posted" | "repeated" | "rejected", the refusal or None)``;
    an empty list when the marketing system could not be reached (nothing
    was written, and only the first row, the probe, is charged an attempt).
    """
    try:
        results = marketing.post_recharges(postings, receipts=True)
    except MarketingUnavailable as e:
        # Nothing was written.  The oldest record is the probe that learned
        # so: it alone is charged an attempt and backs off, so an outage does
        # not push a whole backlog's retries out to the longest wait.
        probe = rows[0]
        probe.post_attempts += 1
        probe.next_attempt_at = now + backoff(probe.post_attempts)
        probe.last_error = str(e)[:_ERROR_LENGTH]
        log.warning("outbox: %s not posted (attempt %d): %s", postings[0].recharge_ref, probe.post_attempts, e)
        return []
    outcomes: list[tuple[str, str | None]] = []
    notices: list[tuple[Posting, Receipt, int | None]] = []
    for row, posting, outcome in zip(rows, postings, results, strict=True):
        row.post_attempts += 1
        if isinstance(outcome, PostingRejected):
            row.post_status = PostStatus.REJECTED
            row.last_error = str(outcome)[:_ERROR_LENGTH]
            log.error("outbox: %s rejected by the marketing system: %s", posting.recharge_ref, outcome)
            outcomes.append(("rejected", row.last_error))
            continue
        # last_error is kept: with post_attempts it explains a late posted_at.
        row.post_status = PostStatus.POSTED
        row.posted_at = now
        written = outcome.written if isinstance(outcome, Receipt) else bool(outcome)
        if isinstance(outcome, Receipt):
            # A repeat still gets its notice if the mark that would have
            # queued it was lost; one that has it already is left alone.
            notices.append((posting, outcome, row.id if isinstance(row, Recharge) else None))
        outcomes.append(("posted" if written else "repeated", None))
    sms.queue_notices(session, notices, now)  # one statement for the batch, after the marks
    return outcomes


def backlog(session: Session) -> Backlog:
    """Pending records (how many, and since when) and rejected records waiting for a person; reversals apart."""
    count, oldest = session.execute(
        select(func.count(), func.min(Recharge.committed_at)).where(Recharge.post_status == PostStatus.PENDING)
    ).one()
    rejected = session.scalar(
        select(func.count()).select_from(Recharge).where(Recharge.post_status == PostStatus.REJECTED)
    )
    by_status = dict(
        session.execute(
            select(Reversal.post_status, func.count())
            .where(Reversal.post_status.in_([PostStatus.PENDING, PostStatus.REJECTED]))
            .group_by(Reversal.post_status)
        ).all()
    )
    return Backlog(pending=count, oldest_pending=as_utc(oldest) if oldest is not None else None, rejected=rejected or 0,
                   reversals_pending=by_status.get(PostStatus.PENDING, 0),
                   reversals_rejected=by_status.get(PostStatus.REJECTED, 0))


def pending(session: Session, limit: int = 50, *, status: PostStatus | str = PostStatus.PENDING) -> list[Recharge]:
    """The oldest ``limit`` records in outbox state ``status`` (``pending`` by default, ``rejected`` or ``resolved``)."""
    return list(
        session.scalars(select(Recharge).where(Recharge.post_status == status).order_by(Recharge.id).limit(limit))
    )


# Reversals (冲正).  An approved reversal's counter-entry is posted like a
# recharge, from its own row in ``reversals``, and only once its original
# has been posted (the marketing system refuses a reversal of a posting it
# does not hold).  A reversal whose original the marketing system refused
# for good, or a person resolved, can never be posted: the drain marks it
# rejected too, for a person.  Each outcome (posted, already there,
# rejected) is also an operation-log entry, in the transaction that marks
# it: reversals are rare, and who took money back from whom is what an
# auditor asks first.


@dataclass(frozen=True)
class PostingLog:
    """Where the reversal drain records outcomes: the operation log, as ``who``, under ``audit_key``.

    ``anchor(seq, hash)`` is called after each commit that wrote entries,
    with the newest one, to anchor the log's head outside the database.
    """

    audit_key: bytes
    who: str
    anchor: Callable[[int, str], None]


def posting_for_reversal(rev: Reversal) -> Posting:
    """The counter-entry an approved reversal makes: the original's amount negated, at the time it was approved."""
    assert rev.decided_at is not None, "only an approved reversal is posted"
    return Posting(
        recharge_ref=rev.ref,
        account_no=rev.account_no,
        amount=-rev.amount,
        card_serial=rev.card_serial,
        channel=rev.channel,
        recharged_at=as_utc(rev.decided_at),
        reverses=rev.original_ref,
    )


def drain_reversals(
    cards: Engine | Database, marketing: MarketingSystem, now: dt.datetime, journal: PostingLog, limit: int = 500
) -> DrainResult:
    """Post up to ``limit`` approved reversals that are due at ``now`` and whose originals are posted, oldest first.

    Exactly once as for recharges (``drain``): locked ``FOR UPDATE SKIP
    LOCKED`` on PostgreSQL while posted, idempotent on the reversal's
    reference in the marketing system, marked in the card database after.
    """
    now = as_utc(now)
    counts: Counter[str] = Counter()
    last_id = 0
    taken = 0
    while taken < limit and not counts["failed"]:
        head = None
        with unit_of_work(cards) as session:
            rows = session.execute(
                select(Reversal, Recharge.post_status)
                .join(Recharge, Recharge.id == Reversal.recharge_id)
                .where(Reversal.post_status == PostStatus.PENDING, Reversal.next_attempt_at <= now,
                       Reversal.id > last_id, Recharge.post_status != PostStatus.PENDING)
                .order_by(Reversal.id)
                .limit(min(BATCH, limit - taken))
                .with_for_update(of=Reversal, skip_locked=True)
            ).all()
            if not rows:
                break
            last_id = rows[-1][0].id
            taken += len(rows)
            ready = [rev for rev, original in rows if original == PostStatus.POSTED]
            outcomes = list(zip(ready, _post_and_mark(session, ready, [posting_for_reversal(r) for r in ready], marketing, now),
                                strict=False)) if ready else []
            if ready and not outcomes:
                counts["failed"] += 1
            for rev, original in rows:
                if original != PostStatus.POSTED:
                    # Never postable: the marketing system does not hold (and will not take) the original.
                    rev.post_status = PostStatus.REJECTED
                    rev.last_error = (f"reversal {rev.ref}: its original {rev.original_ref} was never taken by the "
                                      f"marketing system ({original})")[:_ERROR_LENGTH]
                    outcomes.append((rev, ("rejected", rev.last_error)))
            for rev, (outcome, error) in outcomes:
                counts[outcome] += 1
                entry = audit.record(
                    session, journal.audit_key, journal.who, "reversal.post", f"reversal {rev.id} ({rev.ref})",
                    before={"post_status": PostStatus.PENDING.value},
                    after={"post_status": rev.post_status.value if rev.post_status else None, "outcome": outcome,
                           "amount": -rev.amount, "account_no": rev.account_no, "attempts": rev.post_attempts}
                    | ({"error": error} if error else {}),
                )
                head = (entry.seq, entry.hash)
        if head is not None:
            journal.anchor(*head)
    return DrainResult(**counts)


def drain_all(
    cards: Engine | Database, marketing: MarketingSystem, now: dt.datetime, journal: PostingLog, limit: int = 500
) -> DrainResult:
    """Recharges, then reversals (so a reversal whose original is posted in this run follows it at once)."""
    return drain(cards, marketing, now, limit) + drain_reversals(cards, marketing, now, journal, limit)


class OutboxEntry(NamedTuple):
    """One recharge or reversal in the outbox, as the ``marketing outbox`` listing shows it (money in fen)."""

    kind: str  # recharge | reversal
    ref: str
    account_no: str
    amount: int  # negative for a reversal
    at: dt.datetime  # committed (a recharge) or approved (a reversal), UTC
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str


def entries(session: Session, status: PostStatus | str = PostStatus.PENDING, limit: int = 50) -> list[OutboxEntry]:
    """The oldest ``limit`` recharges and the oldest ``limit`` reversals in outbox state ``status``."""
    found = [
        OutboxEntry("recharge", r.ref, r.account_no, r.amount, as_utc(r.committed_at), r.post_attempts,
                    as_utc(r.next_attempt_at), r.last_error or "")
        for r in pending(session, limit, status=status)
    ]
    revs = session.execute(
        select(Reversal, Recharge.post_status).join(Recharge, Recharge.id == Reversal.recharge_id)
        .where(Reversal.post_status == status).order_by(Reversal.id).limit(limit)
    ).all()
    for rev, original in revs:
        assert rev.decided_at is not None
        waiting = (f"waits for its original {rev.original_ref} ({original})"
                   if status == PostStatus.PENDING and original == PostStatus.PENDING else "")
        found.append(OutboxEntry("reversal", rev.ref, rev.account_no, -rev.amount, as_utc(rev.decided_at),
                                 rev.post_attempts, as_utc(rev.next_attempt_at) if rev.next_attempt_at else None,
                                 rev.last_error or waiting))
    return found
