"""Selling cards at a business hall (售卡), and returning unsold ones to the warehouse (退库).

A hall sells a run of its own issued cards at once: one card, a box, or a
serial range inside one batch (``stock.Selection``).  The sale moves them to
``sold`` — only sold cards can be redeemed, so an issued card taken from a
hall is worth nothing on the hotline — and records what the hall owes for
them (quantity × face value, fen) on the sale's business day, which is what
the hall's settlement counts.

Every sale goes through ``stock.apply``: the selected cards are counted by
state and by hall first, the whole sale is refused (nothing changed) if any
card is not issued or was issued to another hall, and one conditional
``UPDATE`` whose row count must match moves them, so two sales racing for a
card cannot both take it.  A terminal's sale carries an idempotency key: the
same key again answers with the first sale (``Sold.repeated``), never a
second one; the key's uniqueness in ``sales`` settles two concurrent
repeats.
"""

# test-case-name: tests.cardmgmt.test_sales

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cardmgmt import halls, stock
from cardmgmt.context import Context, Permission
from cardmgmt.days import business_day
from cardmgmt.db import dialect_insert
from cardmgmt.errors import ConflictError, InvalidInput, PermissionDenied
from cardmgmt.models import Card, CardReturn, Hall, Sale, utcnow
from cardmgmt.states import Event

COUNTER = "counter"  # an operator recording a sale at cli.py
POS = "pos"  # a signed sales-point terminal
CHANNELS = (COUNTER, POS)
KEY_MAX = Sale.__table__.c.key.type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Sold:
    """A recorded sale, and whether this call only repeated an earlier one with the same key."""

    sale: Sale
    hall: str
    repeated: bool = False


def _check_own_cards(session: Session, hall: Hall, r: stock.Resolved) -> None:
    """Refuse the selection if any of its cards was issued to another hall."""
    others = session.execute(
        select(Hall.code, func.count())
        .join(Card, Card.hall_id == Hall.id)
        .where(*r.where, Card.hall_id != hall.id)
        .group_by(Hall.code)
        .order_by(Hall.code)
    ).all()
    if others:
        detail = ", ".join(f"{n} of hall {code}" for code, n in others)
        raise PermissionDenied(f"{r.description}: holds cards issued to another hall ({detail}); "
                               f"hall {hall.code} sells only its own cards; nothing changed")


def sell(
    ctx: Context,
    hall_code: str,
    sel: stock.Selection,
    *,
    channel: str = COUNTER,
    key: str | None = None,
    now: dt.datetime | None = None,
) -> Sold:
    """Sell the selected cards at ``hall_code``: all of them (issued to that hall) or none."""
    ctx.require(Permission.SELL_CARDS)
    if channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}")
    if key is not None and not 1 <= len(key) <= KEY_MAX:
        raise InvalidInput(f"a sale key is 1 to {KEY_MAX} characters")
    session = ctx.session
    hall = halls.selling_hall(session, hall_code)
    r = stock.resolve(session, sel)
    if key is not None:
        earlier = _by_key(session, key)
        if earlier is not None:
            return _repeat(session, earlier, hall, r, ctx.actor.name)
    _check_own_cards(session, hall, r)
    lo, hi = _bounds(session, r)
    now = now or utcnow()
    # ON CONFLICT rather than a savepoint: a concurrent sale under the same key
    # makes this insert wait for it, then insert nothing, and that sale is the answer.
    sale_id = session.execute(
        dialect_insert(session.get_bind().dialect.name, Sale.__table__)
        .values(hall_id=hall.id, channel=channel, seller=ctx.actor.name, key=key, first_serial=lo or "",
                last_serial=hi or "", quantity=0, amount=0, sold_at=now, day=business_day(now))
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(Sale.__table__.c.id)
    ).scalar_one_or_none()
    if sale_id is None:
        assert key is not None, "only a key can conflict"
        return _repeat(session, _by_key(session, key), hall, r, ctx.actor.name)
    count = stock.apply(ctx, r, Event.SELL, extra_values={"sale_id": sale_id}, guard=[Card.hall_id == hall.id],
                        extra_log={"hall": hall.code, "sale": sale_id, "channel": channel})
    sale = session.get_one(Sale, sale_id)
    sale.quantity, sale.amount = count, count * r.batch.face_value
    session.flush()
    return Sold(sale, hall.code)


def _by_key(session: Session, key: str) -> Sale | None:
    return session.execute(select(Sale).where(Sale.key == key)).scalar_one_or_none()


def _bounds(session: Session, r: stock.Resolved) -> tuple[str | None, str | None]:
    lo, hi = session.execute(select(func.min(Card.serial), func.max(Card.serial)).where(*r.where)).one()
    return lo, hi


def _repeat(session: Session, earlier: Sale | None, hall: Hall, r: stock.Resolved, seller: str) -> Sold:
    """The earlier sale under the same key, if the same seller sold these very cards at this hall; else a conflict.

    The seller must match too: a terminal never gets another terminal's sale
    back as its own by reusing that terminal's key.
    """
    assert earlier is not None, "a key that conflicted names a committed sale"
    if (earlier.hall_id != hall.id or earlier.seller != seller
            or _bounds(session, r) != (earlier.first_serial, earlier.last_serial)):
        raise ConflictError(f"sale key {earlier.key!r} was already used for another sale; nothing changed")
    return Sold(earlier, hall.code, repeated=True)


def return_unsold(ctx: Context, hall_code: str, sel: stock.Selection, reason: str) -> CardReturn:
    """Take a hall's unsold (issued) cards back into the warehouse's stock, all of them or none."""
    ctx.require(Permission.MANAGE_CARDS)
    why = stock.require_reason(reason)
    session = ctx.session
    hall = halls.selling_hall(session, hall_code)
    r = stock.resolve(session, sel)
    _check_own_cards(session, hall, r)
    lo, hi = _bounds(session, r)
    count = stock.apply(ctx, r, Event.RETURN, reason=why, extra_values={"hall_id": None, "issue_request_id": None},
                        guard=[Card.hall_id == hall.id], extra_log={"hall": hall.code})
    back = CardReturn(hall_id=hall.id, first_serial=lo, last_serial=hi, quantity=count,
                      amount=count * r.batch.face_value, reason=why, operator=ctx.actor.name)
    session.add(back)
    session.flush()
    return back


def listing(
    session: Session,
    *,
    hall_code: str | None = None,
    day_from: dt.date | None = None,
    day_to: dt.date | None = None,
    limit: int = 100,
) -> list[tuple[Sale, str]]:
    """Recorded sales, newest first, with their hall's code; ``hall_code`` includes every hall beneath it."""
    q = select(Sale, Hall.code).join(Hall, Hall.id == Sale.hall_id).order_by(Sale.id.desc()).limit(limit)
    if hall_code is not None:
        q = q.where(Sale.hall_id.in_(halls.beneath(session, hall_code)))
    if day_from is not None:
        q = q.where(Sale.day >= day_from)
    if day_to is not None:
        q = q.where(Sale.day <= day_to)
    return [(sale, code) for sale, code in session.execute(q)]
