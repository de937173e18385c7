"""SMS notices (短信告知): queued when the marketing system acknowledges a posting, handed to the SMS platform exactly once.

The same outbox pattern as the recharges'.  *Queued once*: ``queue_notices``
writes the notices into ``sms_notices`` in the card-database transaction
that marks the posting done (``outbox._post_batch`` for recharges; the
reversal workflow calls it the same way for reversals), with
``posting_ref`` unique and ``INSERT ... ON CONFLICT DO NOTHING``: a posting
marked twice (two workers racing on SQLite, or a retry after a crash that
lost the first mark) still has one notice, and a retry whose first mark did
commit is never drained again.  Its words come from ``cardmgmt.notices``
(the masked name, never the full one; no PIN anywhere), its balance and
phone from the marketing system's ``Receipt`` read in the posting's own
transaction.  An account without a phone number gets a notice in state
``skipped`` with the reason, so the record shows why no text went out.

*Sent once*: ``drain`` hands pending notices, in batches, oldest first, to
the SMS platform's interface table (``SmsPlatform.queue_sms``, idempotent
on ``message_ref`` = the posting's reference) and marks them ``sent``;
``FOR UPDATE SKIP LOCKED`` keeps two workers off the same notice on
PostgreSQL, and the unique ``message_ref`` on the SMS side makes any
re-hand-over (a crash between the two commits, or SQLite workers racing)
answer "already there".  An outage backs off like the recharge outbox; a
message the platform refuses for good is ``rejected`` for a person.
"""

# test-case-name: tests.marketing_iface.test_sms

import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cardmgmt.context import Context, Permission
from cardmgmt.days import as_utc
from cardmgmt.db import Database, dialect_insert
from cardmgmt.marketing import MarketingUnavailable, Posting, PostingRejected, Receipt, SmsMessage, SmsPlatform
from cardmgmt.models import SmsNotice
from cardmgmt.notices import notice_text
from cardmgmt.states import NoticeStatus
from marketing_iface.drains import BATCH, backoff, unit_of_work

log = logging.getLogger(__name__)

STATUSES = [s.value for s in NoticeStatus]
NO_PHONE = "no phone number for the account in the marketing system"

_ERROR_LENGTH = SmsNotice.__table__.c.last_error.type.length  # type: ignore[attr-defined]
_PHONE_LENGTH = SmsNotice.__table__.c.phone.type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SmsDrainResult:
    """What one ``drain`` did: handed over now, already there, failed for now, refused for good."""

    sent: int = 0
    repeated: int = 0
    failed: int = 0
    rejected: int = 0


def queue_notices(session: Session, items: Sequence[tuple[Posting, Receipt, int | None]], now: dt.datetime) -> int:
    """Queue the notices of ``(posting, receipt, recharge id)`` items in ``session``'s transaction; how many were new.

    Call it in the transaction that marks the postings done, with the
    ``Receipt`` the marketing system answered for each.  One statement for
    the whole batch (an outbox batch is hundreds of postings): a posting
    that has its notice already is left alone (``ON CONFLICT DO NOTHING``).
    """
    if not items:
        return 0
    now = as_utc(now)
    rows = []
    for posting, receipt, recharge_id in items:
        phone = (receipt.phone or "").strip()[:_PHONE_LENGTH] or None
        text = notice_text(ref=posting.recharge_ref, account_no=posting.account_no, amount=posting.amount,
                           balance=receipt.balance, masked_name=receipt.masked_name, reverses=posting.reverses)
        rows.append(dict(
            posting_ref=posting.recharge_ref, recharge_id=recharge_id, account_no=posting.account_no, phone=phone,
            text=text, status=(NoticeStatus.PENDING if phone else NoticeStatus.SKIPPED).value, attempts=0,
            created_at=now, next_attempt_at=now, sent_at=None, last_error=None if phone else NO_PHONE,
        ))
    dialect = session.get_bind().dialect.name
    table = SmsNotice.__table__
    statement = dialect_insert(dialect, table).on_conflict_do_nothing().returning(table.c.id)  # type: ignore[attr-defined]
    return len(session.execute(statement, rows).all())


def drain(cards: Engine | Database, platform: SmsPlatform, now: dt.datetime, limit: int = 500) -> SmsDrainResult:
    """Hand up to ``limit`` pending notices that are due at ``now`` to the SMS platform, oldest first.

    ``BATCH`` at a time, each selected, handed over (one transaction on the
    SMS side) and marked (one card transaction); stops at the first outage.
    """
    now = as_utc(now)
    counts: Counter[str] = Counter()
    last_id = 0
    taken = 0
    while taken < limit and not counts["failed"]:
        with unit_of_work(cards) as session:
            batch = session.scalars(
                select(SmsNotice)
                .where(SmsNotice.status == NoticeStatus.PENDING, SmsNotice.next_attempt_at <= now,
                       SmsNotice.id > last_id)
                .order_by(SmsNotice.id)
                .limit(min(BATCH, limit - taken))
                .with_for_update(skip_locked=True)  # SQLite ignores it; see the module docstring
            ).all()
            if not batch:
                break
            last_id = batch[-1].id
            taken += len(batch)
            counts.update(_send_batch(batch, platform, now))
    return SmsDrainResult(**counts)


def _send_batch(batch: Sequence[SmsNotice], platform: SmsPlatform, now: dt.datetime) -> Counter[str]:
    messages = [SmsMessage(message_ref=n.posting_ref, phone=n.phone or "", text=n.text, queued_at=as_utc(n.created_at))
                for n in batch]
    try:
        results = platform.queue_sms(messages)
    except MarketingUnavailable as e:
        probe = batch[0]  # as in the recharge outbox: only the probe backs off
        probe.attempts += 1
        probe.next_attempt_at = now + backoff(probe.attempts)
        probe.last_error = str(e)[:_ERROR_LENGTH]
        log.warning("sms: notice %s not handed over (attempt %d): %s", probe.posting_ref, probe.attempts, e)
        return Counter(failed=1)
    counts: Counter[str] = Counter()
    for notice, outcome in zip(batch, results, strict=True):
        notice.attempts += 1
        if isinstance(outcome, PostingRejected):
            notice.status = NoticeStatus.REJECTED
            notice.last_error = str(outcome)[:_ERROR_LENGTH]
            log.error("sms: notice %s refused by the SMS platform: %s", notice.posting_ref, outcome)
            counts["rejected"] += 1
            continue
        notice.status = NoticeStatus.SENT
        notice.sent_at = now
        counts["sent" if outcome else "repeated"] += 1
    return counts


def drain_now(ctx: Context, platform: SmsPlatform, now: dt.datetime | None = None, limit: int = 500) -> SmsDrainResult:
    """``drain`` at an operator's request, each batch in its own short transaction outside ``ctx``'s."""
    ctx.require(Permission.MANAGE_CARDS)
    engine = ctx.session.get_bind()
    assert isinstance(engine, Engine), "a unit of work's session is bound to its database's engine"
    return drain(engine, platform, now or dt.datetime.now(dt.UTC), limit)


def notices(session: Session, status: NoticeStatus | str | None = None, limit: int = 50) -> list[SmsNotice]:
    """The newest ``limit`` notices, of one status or all."""
    query = select(SmsNotice).order_by(SmsNotice.id.desc()).limit(limit)
    if status is not None:
        query = query.where(SmsNotice.status == status)
    return list(session.scalars(query))


def counts(session: Session) -> dict[str, int]:
    """How many notices are in each status (every status listed, zero included)."""
    found = dict(session.execute(select(SmsNotice.status, func.count()).group_by(SmsNotice.status)).all())
    return {s.value: found.get(s, 0) for s in NoticeStatus}


def list_notices(ctx: Context, status: str | None = None, limit: int = 50) -> tuple[list[SmsNotice], dict[str, int]]:
    """``notices`` and ``counts`` for an operator: anyone who may view reports."""
    ctx.require(Permission.VIEW)
    return notices(ctx.session, status, limit), counts(ctx.session)
