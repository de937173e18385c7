"""Reports for managers: stock, batches, issues; and over business days sales, recharges, reversals, settlement, stock value.

Every report is a list of plain dicts with stable keys, so the CLI can print
it as a table or as JSON without knowing what it holds.  Money stays integer
fen; turning it into yuan text is the printer's job (``money.format_fen``).
Expired cards are derived from the batch's expiry date, never stored.

In-stock cards reserved for an approved issue request (``cardmgmt.issuing``)
are still in stock, so ``in_stock`` counts them, but they are not free: the
stock reports show ``reserved`` and ``free`` (in stock and reserved for no
request) beside it, and ``free`` is what new requests can draw on (less any
expired).

The money reports over business days (``sales``, ``recharges``,
``reversals``, ``settlement``, ``stock_value``) each return a ``Report``: rows of integer
fen and counts grouped by one dimension, and their total, for the CLI's
table, CSV and JSON and for a console's charts alike.  Every figure is a SQL
aggregate written in this module; a new report is one function here and one
command in ``cli/report.py``.  Recharges are picked by their commit time
within the period's UTC bounds (``ix_recharges_committed_at``) and grouped
by business day in SQL; by day or by channel over the whole service, the
business days already closed (``close_days``, run by the recharge servers)
are read from their totals instead, so a year's report reads a few rows a
day rather than a year of recharges.
"""

# test-case-name: tests.cardmgmt.test_reports

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Date, bindparam, case, cast, func, insert, literal_column, select, union_all
from sqlalchemy.orm import Session

from cardmgmt import halls, issuing
from cardmgmt.days import BUSINESS_TZ, business_day, day_bounds
from cardmgmt.db import dialect_insert
from cardmgmt.errors import InvalidInput
from cardmgmt.models import (
    Batch,
    Card,
    DayClose,
    Factory,
    Hall,
    HallPayment,
    IssueRequest,
    PinFailure,
    Recharge,
    RechargeDay,
    Reversal,
    Sale,
    utcnow,
)
from cardmgmt.states import FINAL, CardState, PostStatus, ReversalStatus

STATES = [s.value for s in CardState]
DIMENSIONS = ("face-value", "batch", "state", "hall")

Row = dict[str, Any]


def _expired_column(today: dt.date):  # type: ignore[no-untyped-def]
    """Cards still live (not redeemed or voided) whose batch has passed its expiry date."""
    live = Card.state.not_in([s.value for s in FINAL])
    return func.sum(case(((Batch.expiry < today) & live, 1), else_=0))


def _reserved_column():  # type: ignore[no-untyped-def]
    """In-stock cards carrying an issue request's id: reserved for an approved request, not yet collected."""
    return func.sum(case(((Card.state == CardState.IN_STOCK.value) & Card.issue_request_id.is_not(None), 1), else_=0))


def stock(session: Session, by: str, today: dt.date | None = None) -> list[Row]:
    """Card counts per state, grouped by ``by`` (one of ``DIMENSIONS``), with in-stock cards split into reserved and free.

    By ``state`` the rows are ``{"state", "cards", "reserved"}``: only the
    ``in_stock`` row can have reserved cards.
    """
    today = today or dt.date.today()
    keys = {
        "face-value": [Batch.face_value.label("face_value")],
        "batch": [Batch.batch_no.label("batch_no")],
        "state": [],
        "hall": [func.coalesce(Hall.code, "(none)").label("hall")],
    }[by]
    q = (
        select(*keys, Card.state, func.count().label("n"), _expired_column(today).label("expired"),
               _reserved_column().label("reserved"))
        .select_from(Card)
        .join(Batch, Batch.id == Card.batch_id)
        .outerjoin(Hall, Hall.id == Card.hall_id)
        .group_by(*keys, Card.state)
    )
    table: dict[tuple, Row] = {}
    for row in session.execute(q).mappings():
        key = tuple(row[k.name] for k in keys)
        out = table.setdefault(key, {**{k.name: row[k.name] for k in keys}, **{s: 0 for s in STATES},
                                     "reserved": 0, "free": 0, "expired": 0, "total": 0})
        out[row["state"]] += row["n"]
        out["reserved"] += row["reserved"] or 0
        out["expired"] += row["expired"] or 0
        out["total"] += row["n"]
    rows = [table[k] for k in sorted(table)]
    for r in rows:
        r["free"] = r[CardState.IN_STOCK.value] - r["reserved"]
    if by == "state":
        reserved = rows[0]["reserved"] if rows else 0
        rows = [{"state": s, "cards": rows[0][s] if rows else 0, "reserved": reserved if s == CardState.IN_STOCK.value else 0}
                for s in STATES]
    return rows


def batch_summary(session: Session, today: dt.date | None = None) -> list[Row]:
    """One row per batch: the order and how its cards stand now."""
    today = today or dt.date.today()
    counts: dict[int, dict[str, int]] = {}
    q = select(Card.batch_id, Card.state, func.count(), _reserved_column()).group_by(Card.batch_id, Card.state)
    for batch_id, state, n, reserved in session.execute(q):
        c = counts.setdefault(batch_id, {"reserved": 0})
        c[state] = n
        c["reserved"] += reserved or 0
    rows = []
    for b, factory in session.execute(select(Batch, Factory.name).join(Factory, Factory.id == Batch.factory_id).order_by(Batch.id)):
        c = counts.get(b.id, {})
        rows.append(
            {
                "batch_no": b.batch_no,
                "face_value": b.face_value,
                "quantity": b.quantity,
                "box_size": b.box_size,
                "expiry": b.expiry.isoformat(),
                "expired": b.expiry < today,
                "serials": f"{b.first_serial}-{b.last_serial}",
                "factory": factory,
                "created_by": b.created_by,
                **{s: c.get(s, 0) for s in STATES},
                "reserved": c.get("reserved", 0),
            }
        )
    return rows


def issue_history(session: Session) -> list[Row]:
    """Every issue request with its decision and collection, and how many of an approved one's reserved cards are in stock."""
    reserved = issuing.reservations(session)
    q = select(IssueRequest, Hall.code).join(Hall, Hall.id == IssueRequest.hall_id).order_by(IssueRequest.id)
    return [
        {
            "id": r.id,
            "face_value": r.face_value,
            "quantity": r.quantity,
            "hall": hall,
            "status": r.status,
            "requested_by": r.requested_by,
            "requested_at": r.requested_at.isoformat(timespec="seconds"),
            "decided_by": r.decided_by or "",
            "comment": r.decision_comment or "",
            "collected_by": r.collected_by or "",
            "reserved": reserved.get(r.id, 0),
        }
        for r, hall in session.execute(q)
    ]


# --- money reports over a period of business days: sales, recharges, settlement, stock value ---------------


@dataclass(frozen=True)
class Period:
    """Business days ``first``..``last``, inclusive (UTC+8 days, ``cardmgmt.days``)."""

    first: dt.date
    last: dt.date

    @classmethod
    def of(cls, first: dt.date | None = None, last: dt.date | None = None, *, today: dt.date | None = None) -> "Period":
        """The period an operator asked for: with no ends today's business day; ``first`` alone runs to today, ``last`` alone is one day."""
        today = today or business_day(utcnow())
        if first is None:
            first = last or today
        if last is None:
            last = max(first, today)
        if first > last:
            raise InvalidInput(f"--from {first.isoformat()} is after --to {last.isoformat()}")
        return cls(first, last)

    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """The period as a half-open UTC range, for timestamp columns (served by their indexes)."""
        return day_bounds(self.first)[0], day_bounds(self.last)[1]


@dataclass
class Report:
    """A report's rows (dicts of plain values; money in integer fen) and their total.

    ``keys`` are the grouping columns, ``measures`` the summed ones; ``total``
    holds the measures over every row (for the settlement, the opening
    balance of the period's first day and the closing balance of its last).
    """

    name: str
    period: Period | None
    by: str
    keys: list[str]
    measures: list[str]
    rows: list[Row]
    total: Row = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.total:
            self.total = {m: sum(int(r[m]) for r in self.rows) for m in self.measures}

    @property
    def columns(self) -> list[str]:
        return [*self.keys, *self.measures]

    def as_dict(self) -> Row:
        """The report as one JSON-ready document."""
        period = {"from": self.period.first.isoformat(), "to": self.period.last.isoformat()} if self.period else {}
        return {"report": self.name, **period, "by": self.by, "rows": self.rows, "total": self.total}


def _day_of(column: Any, dialect: str) -> Any:
    """SQL for the business day (``days.BUSINESS_TZ``) of a UTC timestamp column, as ISO text or a date."""
    hours = int(BUSINESS_TZ.utcoffset(None).total_seconds() // 3600)  # type: ignore[union-attr]
    if dialect == "postgresql":
        # timezone(interval, timestamptz): an interval's sign is ISO's (east positive), unlike a POSIX zone name.
        return cast(func.timezone(literal_column(f"INTERVAL '{hours} hours'"), column), Date)
    return func.date(column, f"{hours:+d} hours")


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _hall_filter(session: Session, column: Any, hall: str | None) -> list[Any]:
    return [] if hall is None else [column.in_(halls.beneath(session, hall))]


def _choose(by: str, allowed: tuple[str, ...]) -> None:
    if by not in allowed:
        raise InvalidInput(f"--by must be one of {', '.join(allowed)}, not {by!r}")


SALES_BY = ("day", "hall", "channel", "face-value")


def sales(session: Session, period: Period, by: str = "day", hall: str | None = None) -> Report:
    """Cards sold at halls (from ``sales``): number of sales, cards and yuan owed, grouped by ``by``."""
    _choose(by, SALES_BY)
    key = {
        "day": Sale.day.label("day"),
        "hall": Hall.code.label("hall"),
        "channel": Sale.channel.label("channel"),
        # A sale is a run of one batch: its first card names the face value.
        "face-value": Batch.face_value.label("face_value"),
    }[by]
    q = (
        select(key, func.count().label("sales"), func.sum(Sale.quantity).label("cards"),
               func.sum(Sale.amount).label("amount"))
        .where(Sale.day >= period.first, Sale.day <= period.last, *_hall_filter(session, Sale.hall_id, hall))
        .group_by(key).order_by(key)
    )
    if by == "hall":
        q = q.join(Hall, Hall.id == Sale.hall_id)
    if by == "face-value":
        q = q.join(Card, Card.serial == Sale.first_serial).join(Batch, Batch.id == Card.batch_id)
    rows = [{key.name: _iso(r[0]) if by == "day" else r[0], "sales": r[1], "cards": int(r[2]), "amount": int(r[3])}
            for r in session.execute(q)]
    return Report("sales", period, by, [key.name], ["sales", "cards", "amount"], rows)


RECHARGES_BY = ("day", "hall", "channel", "face-value")


def summed(split: Report, by: str) -> Report:
    """``recharges_by_day_and_channel``'s rows summed per ``by`` (day or channel), in its order."""
    sums: dict[str, Row] = {}
    for r in split.rows:
        row = sums.setdefault(r[by], {by: r[by], "recharges": 0, "amount": 0})
        row["recharges"] += r["recharges"]
        row["amount"] += r["amount"]
    return Report("recharges", split.period, by, [by], ["recharges", "amount"], [sums[k] for k in sorted(sums)])


def monthly(report: Report) -> Report:
    """A by-day report's rows summed per calendar month (``YYYY-MM``, in place of ``day``), for long periods."""
    keys = ["month" if k == "day" else k for k in report.keys]
    months: dict[tuple, Row] = {}
    for r in report.rows:
        at = {k: (r["day"][:7] if k == "month" else r[k]) for k in keys}
        row = months.setdefault(tuple(at.values()), {**at, **{m: 0 for m in report.measures}})
        for m in report.measures:
            row[m] += int(r[m])
    return Report(report.name, report.period, ",".join(keys), keys, report.measures, [months[k] for k in sorted(months)])


def recharges(session: Session, period: Period, by: str = "day", hall: str | None = None) -> Report:
    """Recharges committed in the period (from ``recharges``): how many and their yuan, grouped by ``by``.

    ``hall`` is the hall that sold the card (the hall it was issued to: a
    hall sells only its own cards); ``face-value`` is the card's batch's.
    """
    _choose(by, RECHARGES_BY)
    if by in ("day", "channel") and hall is None:
        return summed(recharges_by_day_and_channel(session, period), by)
    start, end = period.bounds()
    dialect = session.get_bind().dialect.name
    key = {
        "day": _day_of(Recharge.committed_at, dialect).label("day"),
        "hall": func.coalesce(Hall.code, "(none)").label("hall"),
        "channel": Recharge.channel.label("channel"),
        "face-value": Batch.face_value.label("face_value"),
    }[by]
    q = (
        select(key, func.count().label("recharges"), func.sum(Recharge.amount).label("amount"))
        .where(Recharge.committed_at >= start, Recharge.committed_at < end)
        .group_by(key).order_by(key)
    )
    if by in ("hall", "face-value") or hall is not None:
        q = q.join(Card, Card.id == Recharge.card_id).where(*_hall_filter(session, Card.hall_id, hall))
    if by == "hall":
        q = q.outerjoin(Hall, Hall.id == Card.hall_id)
    if by == "face-value":
        q = q.join(Batch, Batch.id == Card.batch_id)
    rows = [{key.name: _iso(r[0]) if by == "day" else r[0], "recharges": r[1], "amount": int(r[2])}
            for r in session.execute(q)]
    return Report("recharges", period, by, [key.name], ["recharges", "amount"], rows)


REVERSALS_BY = ("day", "channel", "hall")


def reversals(session: Session, period: Period, by: str = "day", hall: str | None = None) -> Report:
    """Approved reversals (冲正) in the period: how many, the yuan taken back, how many are posted, grouped by ``by``.

    A reversal counts on the business day it was approved, which is the day
    its counter-entry carries in the marketing system; its channel is the
    original recharge's, its hall the one that sold the card.  Rejected
    reversals are not figures; ``amount`` is positive (fen taken back).
    """
    _choose(by, REVERSALS_BY)
    start, end = period.bounds()
    dialect = session.get_bind().dialect.name
    key = {
        "day": _day_of(Reversal.decided_at, dialect).label("day"),
        "channel": Reversal.channel.label("channel"),
        "hall": func.coalesce(Hall.code, "(none)").label("hall"),
    }[by]
    q = (
        select(key, func.count().label("reversals"), func.sum(Reversal.amount).label("amount"),
               func.sum(case((Reversal.post_status == PostStatus.POSTED.value, 1), else_=0)).label("posted"))
        .where(Reversal.status == ReversalStatus.APPROVED.value, Reversal.decided_at >= start,
               Reversal.decided_at < end)
        .group_by(key).order_by(key)
    )
    if by == "hall" or hall is not None:
        q = (q.join(Recharge, Recharge.id == Reversal.recharge_id).join(Card, Card.id == Recharge.card_id)
             .where(*_hall_filter(session, Card.hall_id, hall)))
    if by == "hall":
        q = q.outerjoin(Hall, Hall.id == Card.hall_id)
    rows = [{key.name: _iso(r[0]) if by == "day" else r[0], "reversals": r[1], "amount": int(r[2]),
             "posted": int(r[3])} for r in session.execute(q)]
    return Report("reversals", period, by, [key.name], ["reversals", "amount", "posted"], rows)


SETTLEMENT_BY = ("hall", "day")


def _settlement_statement(scoped: bool) -> Any:
    """Owed and paid per hall code and day up to ``:last``; every day before ``:first`` is one group per hall (day NULL).

    One statement over ``sales`` and ``hall_payments`` (voids included, as
    negative amounts), aggregated per hall and day before the halls are
    joined; built once (two variants: all halls, or the ``:ids`` given), so
    a day's settlement costs one round trip and no statement building.
    """
    first, last = bindparam("first", type_=Date), bindparam("last", type_=Date)
    sales_t, paid_t = Sale.__table__, HallPayment.__table__
    zero = literal_column("0", BigInteger)

    def day_or_before(day: Any) -> Any:
        return case((day < first, None), else_=day)

    # Each table aggregated on its own first (a hall's sales of a year are one row per hall and day here),
    # then the two small results added up.
    sold_day, paid_day = day_or_before(sales_t.c.day), day_or_before(paid_t.c.day)
    sold = (select(sales_t.c.hall_id.label("hall_id"), sold_day.label("d"), func.sum(sales_t.c.quantity).label("cards"),
                   func.sum(sales_t.c.amount).label("owed"), zero.label("paid"))
            .where(sales_t.c.day <= last).group_by(sales_t.c.hall_id, sold_day))
    paid = (select(paid_t.c.hall_id, paid_day, zero, zero, func.sum(paid_t.c.amount))
            .where(paid_t.c.day <= last).group_by(paid_t.c.hall_id, paid_day))
    if scoped:
        ids = bindparam("ids", expanding=True)
        sold, paid = sold.where(sales_t.c.hall_id.in_(ids)), paid.where(paid_t.c.hall_id.in_(ids))
    both = union_all(sold, paid).subquery()
    per_hall = (select(both.c.hall_id, both.c.d, func.sum(both.c.cards).label("cards"),
                       func.sum(both.c.owed).label("owed"), func.sum(both.c.paid).label("paid"))
                .group_by(both.c.hall_id, both.c.d).subquery())
    halls_t = Hall.__table__
    return (select(halls_t.c.code, per_hall.c.d, per_hall.c.cards, per_hall.c.owed, per_hall.c.paid)
            .join(halls_t, halls_t.c.id == per_hall.c.hall_id))


_SETTLEMENT = {False: _settlement_statement(False), True: _settlement_statement(True)}


def _owed_and_paid(session: Session, period: Period, ids: list[int] | None) -> tuple[dict[str, int], dict[tuple, list[int]]]:
    """Per hall code, the balance carried into ``period``; per (hall code, day) in it, [cards, owed, paid]."""
    params: dict[str, Any] = {"first": period.first, "last": period.last}
    if ids is not None:
        params["ids"] = ids
    opening: dict[str, int] = {}
    within: dict[tuple, list[int]] = {}
    # Core on the session's connection: plain rows, none of the ORM's per-statement work.
    for code, day, cards, owed, paid_in in session.connection().execute(_SETTLEMENT[ids is not None], params):
        if day is None:
            opening[code] = int(owed) - int(paid_in)
        else:
            within[(code, day if isinstance(day, dt.date) else dt.date.fromisoformat(day))] = [
                int(cards), int(owed), int(paid_in)]
    return opening, within


def settlement(session: Session, period: Period, by: str = "hall", hall: str | None = None) -> Report:
    """Each hall's settlement per business day: cards sold, owed (face value), paid in, balance carried.

    ``balance(d) = balance(d-1) + owed(d) - paid(d)``; ``opening`` is the
    balance carried into the day.  ``by="hall"`` gives a row per hall and day
    with anything owed, paid or carried; ``by="day"`` rolls the halls up (all
    of them, or those beneath office ``hall``) into one row per day of the
    period.  Voids count on the voided payment's day.
    """
    _choose(by, SETTLEMENT_BY)
    ids = halls.beneath(session, hall) if hall is not None else None
    opening, within = _owed_and_paid(session, period, ids)
    codes = sorted(set(opening) | {code for code, _day in within})
    measures = ["opening", "cards", "owed", "paid", "balance"]
    rows: list[Row] = []
    if by == "hall":
        for code in codes:
            balance = opening.get(code, 0)
            for day in period.days():
                cards, owed, paid = within.get((code, day), (0, 0, 0))
                if balance or cards or owed or paid:
                    rows.append({"hall": code, "day": day.isoformat(), "opening": balance, "cards": cards,
                                 "owed": owed, "paid": paid, "balance": balance + owed - paid})
                balance += owed - paid
        keys = ["hall", "day"]
    else:
        per_day: dict[dt.date, list[int]] = {}
        for (_code, day), figures in within.items():
            acc = per_day.setdefault(day, [0, 0, 0])
            for i, v in enumerate(figures):
                acc[i] += v
        balance = sum(opening.values())
        for day in period.days():
            cards, owed, paid = per_day.get(day, (0, 0, 0))
            rows.append({"day": day.isoformat(), "opening": balance, "cards": cards, "owed": owed, "paid": paid,
                         "balance": balance + owed - paid})
            balance += owed - paid
        keys = ["day"]
    first = sum(opening.values())
    cards, owed, paid = (sum(v[i] for v in within.values()) for i in range(3))
    total = {"opening": first, "cards": cards, "owed": owed, "paid": paid, "balance": first + owed - paid}
    return Report("settlement", period, by, keys, measures, rows, total)


STOCK_VALUE_BY = ("hall", "state")
WAREHOUSE = "(warehouse)"


def stock_value(session: Session, by: str = "hall") -> Report:
    """Cards now, by state and face value, and their face value in fen.

    ``by="hall"`` adds where the cards are: the hall they were issued to
    (issued, sold, and redeemed or frozen after that), or the warehouse for
    cards no hall holds (ordered, produced, in stock, voided before issue).
    """
    _choose(by, STOCK_VALUE_BY)
    keys = [Batch.face_value.label("face_value"), Card.state.label("state")]
    if by == "hall":
        keys.insert(0, func.coalesce(Hall.code, WAREHOUSE).label("place"))
    q = (
        select(*keys, func.count().label("cards"), func.sum(Batch.face_value).label("value"))
        .select_from(Card).join(Batch, Batch.id == Card.batch_id).outerjoin(Hall, Hall.id == Card.hall_id)
        .group_by(*keys)
    )
    order = {s: i for i, s in enumerate(STATES)}
    rows = [{**{k.name: (r[k.name].value if k.name == "state" else r[k.name]) for k in keys},
             "cards": r["cards"], "value": int(r["value"])} for r in session.execute(q).mappings()]
    rows.sort(key=lambda r: (r.get("place", ""), r["face_value"], order[r["state"]]))
    return Report("stock-value", None, by, [k.name for k in keys], ["cards", "value"], rows)



def _live_by_day_and_channel(session: Session, start: dt.datetime, end: dt.datetime) -> list[Row]:
    """Recharges committed in ``[start, end)`` by business day and channel, summed over their rows."""
    day = _day_of(Recharge.committed_at, session.get_bind().dialect.name).label("day")
    q = (
        select(day, Recharge.channel, func.count(), func.sum(Recharge.amount))
        .where(Recharge.committed_at >= start, Recharge.committed_at < end)
        .group_by(day, Recharge.channel)
    )
    return [{"day": _iso(d), "channel": channel, "recharges": int(n), "amount": int(amount)}
            for d, channel, n, amount in session.execute(q)]


def recharges_by_day_and_channel(session: Session, period: Period) -> Report:
    """Recharges committed in the period by business day and channel: ``recharges(by="day")`` split by channel.

    Closed days (``close_days``) are read from their totals in
    ``recharge_days``, a few rows a day; the days after the last closed one
    are summed from their recharges.  Summed over the channels, each day's
    row is exactly ``recharges(by="day")``'s.
    """
    closed_through = session.scalar(select(func.max(DayClose.day)))
    rows: list[Row] = []
    first_open = period.first
    if closed_through is not None and closed_through >= period.first:
        last_closed = min(closed_through, period.last)
        q = select(RechargeDay).where(RechargeDay.day >= period.first, RechargeDay.day <= last_closed)
        rows = [{"day": _iso(t.day), "channel": t.channel, "recharges": t.recharges, "amount": t.amount}
                for t in session.scalars(q)]
        first_open = last_closed + dt.timedelta(days=1)
    if first_open <= period.last:
        rows += _live_by_day_and_channel(session, day_bounds(first_open)[0], day_bounds(period.last)[1])
    rows.sort(key=lambda r: (r["day"], r["channel"]))
    return Report("recharges", period, "day,channel", ["day", "channel"], ["recharges", "amount"], rows)


# --- closing business days: each day's recharge totals, written once ---------------------------------------

# A day is closed this long after it ends, so that a recharge whose commit was
# under way at midnight (its time is taken before its transaction commits), or
# stamped by a server whose clock runs a little behind, is in it before its sums are.
CLOSE_GRACE = dt.timedelta(hours=1)
CLOSE_DAYS_AT_ONCE = 31


def close_days(session: Session, now: dt.datetime | None = None, at_most: int = CLOSE_DAYS_AT_ONCE) -> list[dt.date]:
    """Close the business days that ended at least ``CLOSE_GRACE`` ago, oldest first, at most ``at_most`` a call.

    Closing a day writes its recharges by channel into ``recharge_days``,
    so the reports read a year as some thousand rows rather than a million
    (``recharges_by_day_and_channel``).  Days are closed in order from the
    day after the last closed one (the first time, from the first recharge's
    day), so every day up to the last closed one has its totals, a day
    without recharges as no rows.  A day is claimed by inserting its
    ``day_closes`` row (``ON CONFLICT DO NOTHING``) in the same transaction as its
    totals, so two servers closing at once write each day once.  The caller
    commits.  Returns the days this call closed.
    """
    now = now or utcnow()
    last_due = business_day(now - CLOSE_GRACE) - dt.timedelta(days=1)
    closed_through = session.scalar(select(func.max(DayClose.day)))
    if closed_through is None:
        first_at = session.scalar(select(func.min(Recharge.committed_at)))
        if first_at is None:
            return []
        closed_through = business_day(first_at) - dt.timedelta(days=1)
    closed: list[dt.date] = []
    dialect = session.get_bind().dialect.name
    day = closed_through + dt.timedelta(days=1)
    while day <= last_due and len(closed) < at_most:
        claim = (dialect_insert(dialect, DayClose.__table__).values(day=day, closed_at=now)
                 .on_conflict_do_nothing().returning(DayClose.__table__.c.day))
        if session.execute(claim).first() is not None:
            totals = _live_by_day_and_channel(session, *day_bounds(day))
            if totals:
                session.execute(insert(RechargeDay), [{**t, "day": day} for t in totals])
            closed.append(day)
        day += dt.timedelta(days=1)
    return closed


# --- the last hours, hour by hour: the outbox's backlog and wrong PINs -------------------------------------


def _hour_of(column: Any, dialect: str) -> Any:
    """SQL for the UTC hour a timestamp column falls in, as text ``YYYY-MM-DD HH``."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", column)


def _hour_ends(now: dt.datetime, hours: int) -> list[dt.datetime]:
    """The ends of the last ``hours`` whole UTC hours and of the hour under way (``now``), oldest first."""
    top = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return [top - dt.timedelta(hours=hours - 1 - i) for i in range(hours)] + ([now] if now > top else [])


def hourly(session: Session, now: dt.datetime | None = None, hours: int = 24) -> list[Row]:
    """Hour by hour over the last ``hours`` (UTC): the outbox's backlog at each hour's end, and wrong PINs in the hour.

    ``backlog`` at an hour's end ``h`` is the recharges committed before
    ``h`` that the marketing system had not taken by ``h`` and that are not
    set aside as rejected or resolved by a person now (their posting never
    comes; ``outbox.backlog`` shows them apart).  It is computed as the
    backlog at the window's start plus each hour's commits less each hour's
    postings, all in SQL over the ``committed_at`` and ``posted_at`` indexes
    and the outbox's own ``(post_status, ...)`` index, so it does not read a
    year of recharges.  ``wrong_pins`` counts the ``pin_failures`` rows of the hour:
    every wrong PIN a caller entered, whether or not it ended in a lockout
    (a lockout is a number of them inside a window, ``lockouts.active``).
    Each row: ``hour`` (its end, UTC, ISO), ``backlog``, ``committed``,
    ``posted``, ``wrong_pins``.
    """
    now = (now or utcnow()).astimezone(dt.UTC)
    ends = _hour_ends(now, hours)
    start = ends[0] - dt.timedelta(hours=1)
    dialect = session.get_bind().dialect.name
    live = Recharge.post_status.in_([PostStatus.PENDING.value, PostStatus.POSTED.value])
    # At the window's start: committed before it, and still pending now (the outbox's own index) or posted
    # since (``ix_recharges_posted_at``); two counts, each over its index, rather than one OR over the table.
    still_pending = session.scalar(
        select(func.count()).select_from(Recharge)
        .where(Recharge.post_status == PostStatus.PENDING.value, Recharge.committed_at < start)
    ) or 0
    posted_since = session.scalar(
        select(func.count()).select_from(Recharge)
        .where(Recharge.posted_at >= start, Recharge.post_status == PostStatus.POSTED.value, Recharge.committed_at < start)
    ) or 0
    opening = still_pending + posted_since

    def per_hour(column: Any, *where: Any) -> dict[str, int]:
        hour = _hour_of(column, dialect)
        q = select(hour, func.count()).where(column >= start, column < now, *where).group_by(hour)
        return {str(h): int(n) for h, n in session.execute(q)}

    committed = per_hour(Recharge.committed_at, live)
    posted = per_hour(Recharge.posted_at, Recharge.post_status == PostStatus.POSTED.value)
    wrong = per_hour(PinFailure.at)
    rows: list[Row] = []
    backlog = opening
    for end in ends:
        key = (end - dt.timedelta(microseconds=1)).strftime("%Y-%m-%d %H")
        backlog += committed.get(key, 0) - posted.get(key, 0)
        rows.append({"hour": end.isoformat(timespec="minutes"), "backlog": backlog, "committed": committed.get(key, 0),
                     "posted": posted.get(key, 0), "wrong_pins": wrong.get(key, 0)})
    return rows
