"""Issue requests (领卡申请), finance approval (审核批准) and collection from stock (领卡出库).

A request asks for N cards of one face value for one business hall.  Only
finance staff decide it, and never the operator who filed it (separation of
duties).  Collection picks in-stock cards of that face value from unexpired
batches, earliest expiry first, and issues them to the hall.  Status changes
are conditional updates, so two operators racing on one request cannot both
succeed; on PostgreSQL the picked cards are locked with ``SKIP LOCKED`` so
two collections never pick the same card.
"""

# test-case-name: tests.cardmgmt.test_issuing

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cardmgmt import halls
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
from cardmgmt.operators import Permission
from cardmgmt.serials import runs
from cardmgmt.states import Event, RequestStatus, sources, the_target
from cardmgmt.system import Context

MAX_REQUEST = 1_000_000
UPDATE_CHUNK = 5_000

# Issuing is the state machine's ISSUE event: the cards it may take, and what they become.
_ISSUABLE = sorted(state.value for state in sources(Event.ISSUE))
_ISSUED = the_target(Event.ISSUE).value


def available(session: Session, face_value: int, today: dt.date) -> int:
    """In-stock cards of ``face_value`` from batches that have not expired."""
    return session.execute(
        select(func.count())
        .select_from(Card)
        .join(Batch, Batch.id == Card.batch_id)
        .where(Card.state.in_(_ISSUABLE), Batch.face_value == face_value, Batch.expiry >= today)
    ).scalar_one()


def file_request(ctx: Context, *, face_value: int, quantity: int, hall_code: str, reason: str, today: dt.date | None = None) -> IssueRequest:
    """File a request; refused when stock cannot cover it now."""
    ctx.require(Permission.MANAGE_CARDS)
    if not 1 <= quantity <= MAX_REQUEST:
        raise InvalidInput(f"quantity must be between 1 and {MAX_REQUEST}")
    if not reason.strip():
        raise InvalidInput("a request needs a reason")
    hall = halls.selling_hall(ctx.session, hall_code)
    have = available(ctx.session, face_value, today or dt.date.today())
    if have < quantity:
        raise InsufficientStock(f"only {have} usable cards of {format_fen(face_value)} yuan are in stock, {quantity} requested")
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


def decide(ctx: Context, request_id: int, *, approve: bool, comment: str) -> IssueRequest:
    """Finance approves or rejects a pending request, with a comment."""
    ctx.require(Permission.DECIDE_REQUESTS)
    req = get(ctx.session, request_id)
    if req.requested_by == ctx.actor.name:
        raise PermissionDenied(f"operator {ctx.actor.name!r} filed request {req.id} and cannot decide it")
    if req.status != RequestStatus.PENDING:
        raise IllegalTransition(f"issue request {req.id} is {req.status}, not pending")
    if not comment.strip():
        raise InvalidInput("a decision needs a comment")
    to = RequestStatus.APPROVED if approve else RequestStatus.REJECTED
    _move(ctx, req, RequestStatus.PENDING, to, decided_by=ctx.actor.name, decided_at=utcnow(), decision_comment=comment.strip()[:256])
    ctx.log(f"request.{'approve' if approve else 'reject'}", f"issue request {req.id}", before={"status": RequestStatus.PENDING.value}, after={"status": to.value, "comment": req.decision_comment})
    return req


def cancel(ctx: Context, request_id: int, reason: str) -> IssueRequest:
    """Withdraw a request that has not been collected."""
    ctx.require(Permission.MANAGE_CARDS)
    req = get(ctx.session, request_id)
    if req.status not in (RequestStatus.PENDING, RequestStatus.APPROVED):
        raise IllegalTransition(f"issue request {req.id} is {req.status} and cannot be cancelled")
    if not reason.strip():
        raise InvalidInput("a cancellation needs a reason")
    before = RequestStatus(req.status)
    _move(ctx, req, before, RequestStatus.CANCELLED)
    ctx.log("request.cancel", f"issue request {req.id}", before={"status": before.value}, after={"status": RequestStatus.CANCELLED.value, "reason": reason.strip()[:200]})
    return req


def collect(ctx: Context, request_id: int, today: dt.date | None = None) -> list[tuple[str, str, int]]:
    """Take an approved request's cards out of stock and issue them to its hall.

    Returns the issued serials as runs ``(first, last, count)``.
    """
    ctx.require(Permission.MANAGE_CARDS)
    session = ctx.session
    req = get(session, request_id)
    if req.status != RequestStatus.APPROVED:
        raise IllegalTransition(f"issue request {req.id} is {req.status}; only an approved request can be collected")
    pick = (
        select(Card.id, Card.serial)
        .join(Batch, Batch.id == Card.batch_id)
        .where(Card.state.in_(_ISSUABLE), Batch.face_value == req.face_value, Batch.expiry >= (today or dt.date.today()))
        .order_by(Batch.expiry, Card.serial)
        .limit(req.quantity)
    )
    if is_postgresql(session):
        pick = pick.with_for_update(of=Card, skip_locked=True)
    picked = session.execute(pick).all()
    if len(picked) < req.quantity:
        raise InsufficientStock(f"only {len(picked)} usable cards of {format_fen(req.face_value)} yuan are in stock, {req.quantity} approved")
    changed = 0
    ids = [card_id for card_id, _ in picked]
    for i in range(0, len(ids), UPDATE_CHUNK):
        changed += session.execute(
            update(Card)
            .where(Card.id.in_(ids[i : i + UPDATE_CHUNK]), Card.state.in_(_ISSUABLE))
            .values(state=_ISSUED, hall_id=req.hall_id, issue_request_id=req.id),
            execution_options={"synchronize_session": False},
        ).rowcount
    if changed != len(ids):
        raise ConflictError(f"cards for request {req.id} changed while being collected; nothing changed, try again")
    _move(ctx, req, RequestStatus.APPROVED, RequestStatus.COLLECTED, collected_by=ctx.actor.name, collected_at=utcnow())
    issued = runs([serial for _, serial in picked])
    hall = session.get_one(Hall, req.hall_id)
    ctx.log(
        "card.issue",
        f"issue request {req.id} to hall {hall.code}",
        before={"state": ", ".join(_ISSUABLE)},
        after={"state": _ISSUED, "count": len(ids), "runs": [f"{a}-{b}" for a, b, _ in issued][:20]},
    )
    return issued


def listing(session: Session, status: str | None = None) -> list[IssueRequest]:
    q = select(IssueRequest).order_by(IssueRequest.id)
    if status:
        q = q.where(IssueRequest.status == status)
    return list(session.execute(q).scalars())
