"""Issue requests (领卡申请), finance approval (审核批准) with reservation, and collection from stock (领卡出库).

A request asks for N cards of one face value for one business hall.  Only
finance staff decide it, and never the operator who filed it (separation of
duties).  Status changes are conditional updates, so two operators racing on
one request cannot both succeed.

**Approval reserves.**  Finance's approval picks the exact cards it approves
(in-stock, unreserved cards of the face value from unexpired batches, earliest
expiry first, then serial) and reserves them for the request, in the same
transaction as the status change: if stock cannot cover the request the
approval is refused whole and the request stays pending.  So two approved
requests can never both count on the same cards, and collection cannot fail
for want of stock that was there at approval.

*Where a reservation lives.*  ``cards.issue_request_id``, the column that
already tied an issued card to its request, now ties it from approval on: a
card that carries a request's id is *reserved* for it while the card is in
stock, and *issued* under it once collected; the card's state says which.  A
separate reservation column was weighed and not taken: it would have to be
moved into ``issue_request_id`` at collection and the two kept consistent,
and nothing can be reserved for one request and issued under another
anyway.  Collection then only changes ``state`` (a heap-only update, see
revision 0003), and revision 0008 indexes the column so a request's cards
are found without a scan.  A reserved card stays ``in_stock`` (it is still in
the store room, and stock counts expect it there) but is not *available*:
``available`` (new requests, approvals) leaves it out, and ``reports.stock``
shows in-stock cards as ``reserved`` and ``free``.

*Races.*  On PostgreSQL an approval first takes a transaction-scoped advisory
lock for its face value, so approvals of one face value pick one after
another and each sees what the previous one reserved: of several concurrent
approvals, exactly those that fit in turn succeed (``SKIP LOCKED`` alone
would let an approval that is about to fail hide cards from one that would
fit).  The picked rows are still locked ``FOR UPDATE SKIP LOCKED`` (a card a
concurrent void or freeze holds is passed over, not waited for) and the
reserving ``UPDATE ... WHERE state = 'in_stock' AND issue_request_id IS
NULL`` must change every picked row.  On SQLite the database's single writer
serialises them.

**Collection** hands out exactly the reserved cards, with one set-based
``UPDATE``.  If any reserved card has since been frozen, voided or has
expired with its batch, collection is refused with one line naming them and
nothing is issued: it never silently collects fewer cards, nor swaps in
others.  The administrator unfreezes the cards, or cancels the request
(which releases every card it reserved) and files a new one.

**Freezing or voiding a reserved card** is allowed (a box reported stolen
must be frozen at once, whoever it was meant for).  The card keeps the
request's id, so the reservation is not corrupted: an unfrozen card is
reserved again, and until then ``card show`` and the reports show it frozen
(or voided) with the request it was reserved for, and collection refuses as
above.  **Rejecting** a pending request reserves nothing; **cancelling** an
approved one releases its cards.  A request approved before reservations
existed (no card carries its id) reserves at collection, the old way.
"""

# test-case-name: tests.cardmgmt.test_issuing

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, cast, func, select, text, update
from sqlalchemy.orm import Session

from cardmgmt import approvals, halls, stock
from cardmgmt.approvals import NotDecidable
from cardmgmt.context import Context, Permission
from cardmgmt.db import is_postgresql
from cardmgmt.errors import (
    ConflictError,
    IllegalTransition,
    InsufficientStock,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from cardmgmt.models import Batch, Card, Hall, IssueRequest, utcnow
from cardmgmt.money import format_fen
from cardmgmt.serials import SEQUENCE_DIGITS
from cardmgmt.states import CardState, Event, RequestStatus, describe, sources, the_target

MAX_REQUEST = 1_000_000
UPDATE_CHUNK = 5_000
Progress = Callable[[int, int], None]  # (cards just done, cards in all)
# pg_advisory_xact_lock(RESERVE_LOCK, face value) serialises approvals of one face value.
RESERVE_LOCK = 0x52455356  # "RESV"
_INT4 = 2**31 - 1
# How many serials a refusal names before it says "and N more".
_NAMED = 3

# Issuing is the state machine's ISSUE event: the cards it may take, and what they become.
_ISSUABLE = sorted(state.value for state in sources(Event.ISSUE))
_ISSUED = the_target(Event.ISSUE).value


def _free(face_value: int, today: dt.date) -> list[ColumnElement[bool]]:
    """In-stock cards of ``face_value``, from unexpired batches, reserved for no request (join ``Batch``)."""
    return [
        Card.state.in_(_ISSUABLE),
        Card.issue_request_id.is_(None),
        Batch.face_value == face_value,
        Batch.expiry >= today,
    ]


def available(session: Session, face_value: int, today: dt.date) -> int:
    """In-stock cards of ``face_value`` from batches that have not expired, not reserved for an approved request."""
    return session.execute(
        select(func.count()).select_from(Card).join(Batch, Batch.id == Card.batch_id).where(*_free(face_value, today))
    ).scalar_one()


def reserved_count(session: Session, face_value: int) -> int:
    """In-stock cards of ``face_value`` reserved for approved requests (not yet collected)."""
    return session.execute(
        select(func.count())
        .select_from(Card)
        .join(Batch, Batch.id == Card.batch_id)
        .where(Card.state.in_(_ISSUABLE), Card.issue_request_id.is_not(None), Batch.face_value == face_value)
    ).scalar_one()


def _short(session: Session, face_value: int, have: int, wanted: int, what: str) -> InsufficientStock:
    reserved = reserved_count(session, face_value)
    held = f" ({reserved} more are reserved for approved requests)" if reserved else ""
    return InsufficientStock(
        f"only {have} usable cards of {format_fen(face_value)} yuan are in stock{held}, {wanted} {what}"
    )


def file_request(ctx: Context, *, face_value: int, quantity: int, hall_code: str, reason: str, today: dt.date | None = None) -> IssueRequest:
    """File a request; refused when free stock cannot cover it now (finance's approval checks again, and reserves)."""
    ctx.require(Permission.MANAGE_CARDS)
    if not 1 <= quantity <= MAX_REQUEST:
        raise InvalidInput(f"quantity must be between 1 and {MAX_REQUEST}")
    if not reason.strip():
        raise InvalidInput("a request needs a reason")
    hall = halls.selling_hall(ctx.session, hall_code)
    have = available(ctx.session, face_value, today or dt.date.today())
    if have < quantity:
        raise _short(ctx.session, face_value, have, quantity, "requested")
    req = IssueRequest(
        face_value=face_value,
        quantity=quantity,
        hall_id=hall.id,
        status=RequestStatus.PENDING,
        reason=reason.strip()[:256],
        requested_by=ctx.actor.name,
    )
    ctx.session.add(req)
    ctx.session.flush()
    ctx.log("request.file", f"issue request {req.id}", after={"face_value": face_value, "quantity": quantity, "hall": hall.code})
    return req


def get(session: Session, request_id: int) -> IssueRequest:
    req = session.get(IssueRequest, request_id)
    if req is None:
        raise NotFound(f"issue request {request_id} does not exist")
    return req


def _move(ctx: Context, req: IssueRequest, frm: RequestStatus, to: RequestStatus, **values: object) -> None:
    """Change a request's status only if it is still ``frm``; the database decides races."""
    result = ctx.session.execute(
        update(IssueRequest)
        .where(IssueRequest.id == req.id, IssueRequest.status == frm.value)
        .values(status=to.value, **values),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        raise ConflictError(f"issue request {req.id} was changed by someone else; nothing changed")
    ctx.session.refresh(req)


def _reserve(ctx: Context, req: IssueRequest, today: dt.date, what: str, progress: Progress | None = None) -> int:
    """Reserve ``req.quantity`` free cards for ``req``, earliest expiry first, or raise and reserve none.

    Called inside the unit that moves the request; raising rolls the whole unit back.
    ``progress(n, total)`` hears of each chunk reserved.
    """
    session = ctx.session
    if is_postgresql(session):
        # Approvals of one face value pick in turn, each seeing what the last reserved (see the module docstring).
        session.execute(text("SELECT pg_advisory_xact_lock(:k, :v)"), {"k": RESERVE_LOCK, "v": req.face_value % _INT4})
    pick = (
        select(Card.id)
        .join(Batch, Batch.id == Card.batch_id)
        .where(*_free(req.face_value, today))
        .order_by(Batch.expiry, Card.serial)
        .limit(req.quantity)
    )
    if is_postgresql(session):
        pick = pick.with_for_update(of=Card, skip_locked=True)
    ids = list(session.execute(pick).scalars())
    if len(ids) < req.quantity:
        raise _short(session, req.face_value, len(ids), req.quantity, what)
    changed = 0
    for i in range(0, len(ids), UPDATE_CHUNK):
        chunk = ids[i : i + UPDATE_CHUNK]
        changed += session.execute(
            update(Card)
            .where(Card.id.in_(chunk), Card.state.in_(_ISSUABLE), Card.issue_request_id.is_(None))
            .values(issue_request_id=req.id),
            execution_options={"synchronize_session": False},
        ).rowcount
        if progress:
            progress(len(chunk), len(ids))
    if changed != len(ids):
        raise ConflictError(f"cards for request {req.id} changed while being reserved; nothing changed, try again")
    return changed


def runs_of_request(session: Session, request_id: int) -> list[tuple[str, str, int]]:
    """The serials of every card carrying ``request_id``, as runs ``(first, last, count)``, computed in the database.

    Consecutive serials share ``sequence - row_number()`` (gaps and islands),
    so a million reserved cards come back as a handful of rows.
    """
    sequence = cast(func.substr(Card.serial, 1, SEQUENCE_DIGITS), BigInteger)
    numbered = (
        select(Card.serial, (sequence - func.row_number().over(order_by=Card.serial)).label("island"))
        .where(Card.issue_request_id == request_id)
        .subquery()
    )
    q = (
        select(func.min(numbered.c.serial), func.max(numbered.c.serial), func.count())
        .group_by(numbered.c.island)
        .order_by(func.min(numbered.c.serial))
    )
    return [(a, b, n) for a, b, n in session.execute(q)]


def _log_runs(runs: list[tuple[str, str, int]]) -> list[str]:
    return [f"{a}-{b}" for a, b, _ in runs][:20]


def decide(
    ctx: Context, request_id: int, *, approve: bool, comment: str, today: dt.date | None = None,
    progress: Progress | None = None,
) -> IssueRequest:
    """Finance approves (reserving the cards) or rejects a pending request, with a comment.

    An approval that stock cannot cover is refused whole: the request stays
    pending and nothing is reserved.  ``progress(n, total)`` hears of the
    reservation's progress (a million cards take a while).
    """
    ctx.require(Permission.DECIDE_REQUESTS)
    req = get(ctx.session, request_id)
    why = approvals.why_not(ctx.actor, req)
    if why is NotDecidable.OWN:
        raise PermissionDenied(f"operator {ctx.actor.name!r} filed request {req.id} and cannot decide it")
    if why is not None:
        raise IllegalTransition(f"issue request {req.id} is {req.status}, not pending")
    if not comment.strip():
        raise InvalidInput("a decision needs a comment")
    to = RequestStatus.APPROVED if approve else RequestStatus.REJECTED
    _move(ctx, req, RequestStatus.PENDING, to, decided_by=ctx.actor.name, decided_at=utcnow(), decision_comment=comment.strip()[:256])
    after: dict[str, Any] = {"status": to.value, "comment": req.decision_comment}
    if approve:
        after["reserved"] = _reserve(ctx, req, today or dt.date.today(), f"approved in request {req.id}; it stays pending",
                                     progress)
        after["runs"] = _log_runs(runs_of_request(ctx.session, req.id))
    ctx.log(f"request.{'approve' if approve else 'reject'}", f"issue request {req.id}", before={"status": RequestStatus.PENDING.value}, after=after)
    return req


def cancel(ctx: Context, request_id: int, reason: str) -> IssueRequest:
    """Withdraw a request that has not been collected; an approved one's reserved cards are released."""
    ctx.require(Permission.MANAGE_CARDS)
    req = get(ctx.session, request_id)
    if req.status not in (RequestStatus.PENDING, RequestStatus.APPROVED):
        raise IllegalTransition(f"issue request {req.id} is {req.status} and cannot be cancelled")
    if not reason.strip():
        raise InvalidInput("a cancellation needs a reason")
    before = RequestStatus(req.status)
    _move(ctx, req, before, RequestStatus.CANCELLED)
    # Nothing was issued (the request was never collected), so every card carrying its id is a reservation.
    released = ctx.session.execute(
        update(Card).where(Card.issue_request_id == req.id).values(issue_request_id=None),
        execution_options={"synchronize_session": False},
    ).rowcount
    ctx.log("request.cancel", f"issue request {req.id}", before={"status": before.value},
            after={"status": RequestStatus.CANCELLED.value, "reason": reason.strip()[:200], "released": released})
    return req


def _unusable(session: Session, request_id: int, today: dt.date) -> dict[str, list[str]]:
    """The reserved cards of a request that can no longer be issued, by why: frozen, voided, expired."""
    rows = session.execute(
        select(Card.state, Card.serial)
        .join(Batch, Batch.id == Card.batch_id)
        .where(Card.issue_request_id == request_id, Card.state.not_in(_ISSUABLE) | (Batch.expiry < today))
        .order_by(Card.serial)
    ).all()
    out: dict[str, list[str]] = {}
    for state, serial in rows:
        why = describe(CardState(state)) if state not in _ISSUABLE else "expired"
        out.setdefault(why, []).append(serial)
    return out


def collect(ctx: Context, request_id: int, today: dt.date | None = None) -> list[tuple[str, str, int]]:
    """Issue an approved request's reserved cards to its hall; exactly those cards, or none.

    Returns the issued serials as runs ``(first, last, count)``.
    """
    ctx.require(Permission.MANAGE_CARDS)
    session = ctx.session
    today = today or dt.date.today()
    req = get(session, request_id)
    if req.status != RequestStatus.APPROVED:
        raise IllegalTransition(f"issue request {req.id} is {req.status}; only an approved request can be collected")
    # The request row first: a racing collection or cancellation of the same request waits here, then fails.
    _move(ctx, req, RequestStatus.APPROVED, RequestStatus.COLLECTED, collected_by=ctx.actor.name, collected_at=utcnow())
    carried = session.execute(select(func.count()).select_from(Card).where(Card.issue_request_id == req.id)).scalar_one()
    if carried == 0:
        # Approved before approvals reserved: reserve now, as collection used to pick.
        _reserve(ctx, req, today, "approved")
    unusable = _unusable(session, req.id, today)
    if unusable:
        detail = "; ".join(
            f"{len(serials)} {why} ({', '.join(serials[:_NAMED])}"
            f"{f' and {len(serials) - _NAMED} more' if len(serials) > _NAMED else ''})"
            for why, serials in sorted(unusable.items())
        )
        raise InsufficientStock(
            f"issue request {req.id}: of its {req.quantity} reserved cards {detail}; nothing was issued. "
            "Unfreeze them, or cancel the request (which releases its cards) and file a new one"
        )
    changed = session.execute(
        update(Card)
        .where(Card.issue_request_id == req.id, Card.state.in_(_ISSUABLE))
        .values(state=_ISSUED, hall_id=req.hall_id),
        execution_options={"synchronize_session": False},
    ).rowcount
    if changed != req.quantity:
        raise ConflictError(f"cards for request {req.id} changed while being collected; nothing changed, try again")
    issued = runs_of_request(session, req.id)
    hall = session.get_one(Hall, req.hall_id)
    ctx.log(
        "card.issue",
        f"issue request {req.id} to hall {hall.code}",
        before={"state": ", ".join(_ISSUABLE)},
        after={"state": _ISSUED, "count": changed, "runs": _log_runs(issued)},
    )
    return issued


def reservations(session: Session) -> dict[int, int]:
    """Approved requests → how many of their reserved cards are in stock now (usable at collection)."""
    q = (
        select(Card.issue_request_id, func.count())
        .join(IssueRequest, IssueRequest.id == Card.issue_request_id)
        .where(IssueRequest.status == RequestStatus.APPROVED.value, Card.state.in_(_ISSUABLE))
        .group_by(Card.issue_request_id)
    )
    return {rid: n for rid, n in session.execute(q)}


def reserved_among(session: Session, sel: stock.Selection) -> dict[int, int]:
    """Approved (uncollected) requests that cards of ``sel`` are reserved for → how many, whatever the cards' state now.

    For the card commands to say, after a void or freeze, whose reservation they touched.
    """
    q = (
        select(Card.issue_request_id, func.count())
        .join(IssueRequest, IssueRequest.id == Card.issue_request_id)
        .where(*stock.resolve(session, sel).where, IssueRequest.status == RequestStatus.APPROVED.value)
        .group_by(Card.issue_request_id)
        .order_by(Card.issue_request_id)
    )
    return {rid: n for rid, n in session.execute(q)}


def listing(session: Session, status: str | None = None) -> list[IssueRequest]:
    q = select(IssueRequest).order_by(IssueRequest.id)
    if status:
        q = q.where(IssueRequest.status == status)
    return list(session.execute(q).scalars())
