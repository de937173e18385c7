"""Look-ups for customer service: recharges by card, account, reference, day or channel; one card whole; stock intakes.

Read-only, and open to every role that may view (``Permission.VIEW``):
nothing here writes, so nothing here logs.  Customer service answers a
caller who asks "did my recharge go through?", so every recharge row says
what the caller can check it against: its reference (the number the hotline
read out), when it was made (Beijing time), the account (masked by the one
rule in ``cardmgmt.fields.mask_account``), the amount, the card, the channel
and whether the marketing system has it yet (the outbox posting status).

A reference is the business day (yymmdd, UTC+8) and the recharge record's
number (``models.recharge_ref``); ``parse_ref`` takes it apart again, and a
reference whose day is not the day its record was made names no recharge.
Every criterion is checked before anything is looked up, and a malformed one
is refused with one line that never repeats what was typed in a secret's
place (a PIN keyed where a serial or an account belongs).

``card`` also shows the card's sale at its hall (``sale_of``: hall, time,
seller, channel), so customer service can tell a caller whose card is
refused as not sold which hall to go back to.
"""

# test-case-name: tests.cardmgmt.test_lookups

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from cardmgmt import batches, stock
from cardmgmt.channel_clients import CHANNELS
from cardmgmt.context import Context, Permission
from cardmgmt.days import BUSINESS_TZ, as_utc, day_bounds
from cardmgmt.errors import InvalidInput, NotFound
from cardmgmt.fields import ACCOUNT_DIGITS, ACCOUNT_PATTERN, mask_account
from cardmgmt.models import Batch, Card, Hall, Intake, IssueRequest, Recharge, Sale
from cardmgmt.serials import parse_serial
from cardmgmt.states import RequestStatus

Row = dict[str, Any]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1_000
REF_DAY = 6  # yymmdd
REF_MIN = REF_DAY + 8  # and at least eight digits of the record's number
REF_MAX = REF_DAY + 18  # a 64-bit record number has at most 19 digits; far beyond any real one


def parse_ref(text: str) -> tuple[dt.date, int]:
    """A recharge reference → (business day, recharge record number); ``InvalidInput`` if it cannot be one."""
    s = (text or "").strip()
    if not (REF_MIN <= len(s) <= REF_MAX and s.isdigit() and s.isascii()):
        raise InvalidInput(f"a recharge reference is at least {REF_MIN} digits (yymmdd and the record number); "
                           f"that was {len(s)} characters, not a reference")
    try:
        day = dt.datetime.strptime(s[:REF_DAY], "%y%m%d").date()
    except ValueError:
        # Not echoed: what was typed may be a PIN in the wrong field.
        raise InvalidInput("that reference does not start with a day (yymmdd)") from None
    return day, int(s[REF_DAY:])


def parse_day(text: str) -> dt.date:
    """A business day typed as 2026-11-30."""
    try:
        return dt.date.fromisoformat((text or "").strip())
    except ValueError:
        raise InvalidInput(f"{str(text)[:20]!r} is not a day like 2026-11-30") from None


def check_account(text: str) -> str:
    s = (text or "").strip()
    if not re.fullmatch(ACCOUNT_PATTERN, s):
        # Never echoed: a PIN keyed into the wrong field must not reach the screen.
        raise InvalidInput(f"an account number is {ACCOUNT_DIGITS} digits; that was {len(s)} characters")
    return s


def check_channel(text: str) -> str:
    if text not in CHANNELS:
        raise InvalidInput(f"channel {str(text)[:20]!r} is not one of {', '.join(CHANNELS)}")
    return text


def beijing(ts: dt.datetime) -> str:
    """A stored UTC time as customer service reads it: Beijing time, to the second, with its offset."""
    return as_utc(ts).astimezone(BUSINESS_TZ).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RechargeQuery:
    """What customer service looks recharges up by; the criteria given are combined (all must hold)."""

    serial: str | None = None
    account: str | None = None
    ref: str | None = None
    day: str | dt.date | None = None
    channel: str | None = None
    limit: int = DEFAULT_LIMIT


def _conditions(session: Session, q: RechargeQuery) -> list[ColumnElement[bool]]:
    """The query's criteria as SQL, each checked first; raises ``InvalidInput`` or ``NotFound``."""
    where: list[ColumnElement[bool]] = []
    if not 1 <= q.limit <= MAX_LIMIT:
        raise InvalidInput(f"the limit must be between 1 and {MAX_LIMIT}")
    if q.serial is not None:
        parse_serial(q.serial)
        card_id = session.execute(select(Card.id).where(Card.serial == q.serial.strip())).scalar_one_or_none()
        if card_id is None:
            raise NotFound(f"card {q.serial.strip()} does not exist")
        where.append(Recharge.card_id == card_id)  # through the unique card_id, not the unindexed copy of the serial
    if q.account is not None:
        where.append(Recharge.account_no == check_account(q.account))
    if q.ref is not None:
        day, record = parse_ref(q.ref)
        start, end = day_bounds(day)
        where += [Recharge.id == record, Recharge.committed_at >= start, Recharge.committed_at < end]
    if q.day is not None:
        start, end = day_bounds(q.day if isinstance(q.day, dt.date) else parse_day(q.day))
        where += [Recharge.committed_at >= start, Recharge.committed_at < end]
    if q.channel is not None:
        where.append(Recharge.channel == check_channel(q.channel))
    return where


def recharge_row(r: Recharge) -> Row:
    """One recharge as customer service sees it (money in fen)."""
    return {
        "ref": r.ref,
        "at": beijing(r.committed_at),
        "account": mask_account(r.account_no),
        "amount": r.amount,
        "serial": r.card_serial,
        "channel": r.channel,
        "post_status": r.post_status.value if r.post_status else "",
        "posted_at": beijing(r.posted_at) if r.posted_at else "",
    }


def find_recharges(ctx: Context, query: RechargeQuery) -> list[Row]:
    """Recharges matching every criterion given, newest first, at most ``query.limit``."""
    ctx.require(Permission.VIEW)
    where = _conditions(ctx.session, query)
    q = select(Recharge).where(*where).order_by(Recharge.committed_at.desc(), Recharge.id.desc()).limit(query.limit)
    return [recharge_row(r) for r in ctx.session.execute(q).scalars()]


def sale_of(session: Session, card_id: int) -> Row:
    """The card's sale at a hall (``cardmgmt.sales``), under ``sale_`` keys: empty for a card no sale names."""
    found = session.execute(
        select(Sale, Hall.code).join(Card, Card.sale_id == Sale.id).join(Hall, Hall.id == Sale.hall_id)
        .where(Card.id == card_id)
    ).first()
    if found is None:
        return dict.fromkeys(("sale", "sale_hall", "sold_at", "sold_by", "sale_channel"), "")
    sale, hall = found
    return {"sale": sale.id, "sale_hall": hall, "sold_at": beijing(sale.sold_at), "sold_by": sale.seller,
            "sale_channel": sale.channel}


def card(ctx: Context, serial: str) -> Row:
    """One card whole, as customer service and administrators may see it (never its PIN or PIN hash).

    Beyond ``stock.describe_card``: ``reserved_for``, the approved request a
    card not yet issued is reserved for (a frozen or voided card keeps it, see
    ``cardmgmt.issuing``), and for a redeemed card its recharge: reference,
    time, masked account, channel and posting status (empty otherwise).
    """
    ctx.require(Permission.VIEW)
    session = ctx.session
    row = stock.describe_card(session, serial)
    c = session.execute(select(Card).where(Card.serial == row["serial"])).scalar_one()
    reserved_for: int | str = ""
    if c.issue_request_id is not None:
        status = session.execute(select(IssueRequest.status).where(IssueRequest.id == c.issue_request_id)).scalar_one()
        if status == RequestStatus.APPROVED:
            reserved_for = c.issue_request_id
    recharge = session.execute(select(Recharge).where(Recharge.card_id == c.id)).scalar_one_or_none()
    shown = recharge_row(recharge) if recharge else dict.fromkeys(("ref", "at", "account", "channel", "post_status"), "")
    return {
        **row,
        "reserved_for": reserved_for,
        **sale_of(session, c.id),
        "recharge_ref": shown["ref"],
        "recharged_at": shown["at"],
        "account": shown["account"],
        "channel": shown["channel"],
        "post_status": shown["post_status"],
    }


def intakes(
    ctx: Context,
    *,
    batch_no: str | None = None,
    first_day: str | dt.date | None = None,
    last_day: str | dt.date | None = None,
    limit: int | None = None,
) -> list[Row]:
    """Stock intakes (入库明细), oldest first: by batch, and between two business days (inclusive)."""
    ctx.require(Permission.VIEW)
    session = ctx.session
    where: list[ColumnElement[bool]] = []
    if batch_no is not None:
        # A batch that does not exist is one line, not an empty list.
        where.append(Intake.batch_id == batches.get(session, batch_no).id)
    first = first_day if isinstance(first_day, dt.date) or first_day is None else parse_day(first_day)
    last = last_day if isinstance(last_day, dt.date) or last_day is None else parse_day(last_day)
    if first and last and first > last:
        raise InvalidInput(f"--from {first} is after --to {last}")
    if first:
        where.append(Intake.at >= day_bounds(first)[0])
    if last:
        where.append(Intake.at < day_bounds(last)[1])
    if limit is not None and not 1 <= limit <= MAX_LIMIT * 100:
        raise InvalidInput(f"the limit must be between 1 and {MAX_LIMIT * 100}")
    q = (
        select(Intake, Batch.batch_no, Batch.face_value)
        .join(Batch, Batch.id == Intake.batch_id)
        .where(*where)
        .order_by(Intake.at, Intake.id)
        .limit(limit)
    )
    return [
        {
            "id": i.id,
            "at": beijing(i.at),
            "batch_no": batch,
            "face_value": face_value,
            "box": i.box_no if i.box_no is not None else "",
            "first_serial": i.first_serial,
            "last_serial": i.last_serial,
            "cards": i.quantity,
            "operator": i.operator,
        }
        for i, batch, face_value in session.execute(q)
    ]
