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
that marks it ``posted`` queues its SMS notice (``sms.queue_notice``, at
most one per recharge), from the ``Receipt`` the marketing system answered
in the posting's own transaction (balance after it, phone); ``sms.drain``
hands notices to the SMS platform.
"""

# test-case-name: tests.marketing_iface.test_outbox

import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cardmgmt.days import as_utc
from cardmgmt.db import Database
from cardmgmt.marketing import MarketingSystem, MarketingUnavailable, Posting, PostingRejected, Receipt, SmsPlatform
from cardmgmt.models import Recharge
from cardmgmt.operators import Permission
from cardmgmt.states import PostStatus
from cardmgmt.system import Context
from marketing_iface import sms
from marketing_iface.drains import BATCH, backoff, unit_of_work

log = logging.getLogger(__name__)

# The outbox states as plain strings, for callers that offer them as choices.
PENDING = PostStatus.PENDING.value
POSTED = PostStatus.POSTED.value
REJECTED = PostStatus.REJECTED.value

_ERROR_LENGTH = Recharge.__table__.c.last_error.type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DrainResult:
    """What one ``drain`` did: newly written, already there, failed for now, refused for good."""

    posted: int = 0
    repeated: int = 0
    failed: int = 0
    rejected: int = 0
    sms: "sms.SmsDrainResult | None" = None  # drain_now also hands the SMS notices over


class Backlog(TypedDict):
    """How far behind the outbox is, for ``ha status`` and monitoring."""

    pending: int
    oldest_pending: dt.datetime | None  # committed_at of the oldest pending record, UTC
    rejected: int


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
    """``drain`` at an operator's request (the leading recharge server drains every second anyway).

    ``ctx`` only says who may: each batch is still posted and marked in its
    own short transaction, outside ``ctx``'s, so a crash loses at most the
    marks of one batch, exactly as when the servers drain.
    """
    ctx.require(Permission.MANAGE_CARDS)
    engine = ctx.session.get_bind()
    assert isinstance(engine, Engine), "a unit of work's session is bound to its database's engine"
    now = now or dt.datetime.now(dt.UTC)
    result = drain(engine, marketing, now, limit)
    if isinstance(marketing, SmsPlatform):
        # The notices the posting just queued go out with it.
        result = dataclasses.replace(result, sms=sms.drain(engine, marketing, now, limit))
    return result


def _post_batch(session: Session, batch: Sequence[Recharge], marketing: MarketingSystem, now: dt.datetime,
                ) -> Counter[str]:
    """Post ``batch``, mark each record and queue its notice; how many were posted, repeated, rejected or failed."""
    postings = [posting_for(r) for r in batch]
    try:
        results = marketing.post_recharges(postings, receipts=True)
    except MarketingUnavailable as e:
        # Nothing was written.  The oldest record is the probe that learned
        # so: it alone is charged an attempt and backs off, so an outage does
        # not push a whole backlog's retries out to the longest wait.
        probe = batch[0]
        probe.post_attempts += 1
        probe.next_attempt_at = now + backoff(probe.post_attempts)
        probe.last_error = str(e)[:_ERROR_LENGTH]
        log.warning("outbox: %s not posted (attempt %d): %s", postings[0].recharge_ref, probe.post_attempts, e)
        return Counter(failed=1)
    counts: Counter[str] = Counter()
    for recharge, posting, outcome in zip(batch, postings, results, strict=True):
        recharge.post_attempts += 1
        if isinstance(outcome, PostingRejected):
            recharge.post_status = PostStatus.REJECTED
            recharge.last_error = str(outcome)[:_ERROR_LENGTH]
            log.error("outbox: %s rejected by the marketing system: %s", posting.recharge_ref, outcome)
            counts["rejected"] += 1
            continue
        # last_error is kept: with post_attempts it explains a late posted_at.
        recharge.post_status = PostStatus.POSTED
        recharge.posted_at = now
        written = outcome.written if isinstance(outcome, Receipt) else bool(outcome)
        if isinstance(outcome, Receipt):
            # A repeat still gets its notice if the mark that would have
            # queued it was lost; one that has it already is left alone.
            sms.queue_notice(session, posting, outcome, now, recharge_id=recharge.id)
        counts["posted" if written else "repeated"] += 1
    return counts


def backlog(session: Session) -> Backlog:
    """Pending records (how many, and since when) and rejected records waiting for a person."""
    count, oldest = session.execute(
        select(func.count(), func.min(Recharge.committed_at)).where(Recharge.post_status == PostStatus.PENDING)
    ).one()
    rejected = session.scalar(
        select(func.count()).select_from(Recharge).where(Recharge.post_status == PostStatus.REJECTED)
    )
    return Backlog(pending=count, oldest_pending=as_utc(oldest) if oldest is not None else None, rejected=rejected or 0)


def pending(session: Session, limit: int = 50, *, status: PostStatus | str = PostStatus.PENDING) -> list[Recharge]:
    """The oldest ``limit`` records in outbox state ``status`` (``pending`` by default, or ``rejected``)."""
    return list(
        session.scalars(select(Recharge).where(Recharge.post_status == status).order_by(Recharge.id).limit(limit))
    )
