"""Reports for managers: stock by face value, batch, state or hall; batch summaries; issue history.

Every report is a list of plain dicts with stable keys, so the CLI can print
it as a table or as JSON without knowing what it holds.  Money stays integer
fen; turning it into yuan text is the printer's job (``money.format_fen``).
Expired cards are derived from the batch's expiry date, never stored.

In-stock cards reserved for an approved issue request (``cardmgmt.issuing``)
are still in stock, so ``in_stock`` counts them, but they are not free: the
stock reports show ``reserved`` and ``free`` (in stock and reserved for no
request) beside it, and ``free`` is what new requests can draw on (less any
expired).
"""

# test-case-name: tests.cardmgmt.test_reports

import datetime as dt
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from cardmgmt import issuing
from cardmgmt.models import Batch, Card, Factory, Hall, IssueRequest
from cardmgmt.states import FINAL, CardState

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
