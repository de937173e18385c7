"""Dual control over who may act: requests to add an operator, change a role or re-enable, and their decision.

One administrator acting alone could otherwise create a finance operator and
approve her own issue requests with it.  So an administrator files a request
with a reason, and a second administrator approves or rejects it with a
comment.  The approver may be neither the requester nor anyone the requester
created, re-enabled or gave a role to, directly or down the chain
(``operators.sponsors``).  A new operator exists from the filing on, as
*pending* (the name is taken, nobody can sign in as it); the approver types
the new operator's first password and hands it over, and it works only to
choose a new one, so the requester never knows a password of the operator
they asked for.  Rejecting a new operator removes the pending row, freeing
the name.  Status changes are conditional updates, so of two approvers
racing on one request exactly one succeeds.
"""

# test-case-name: tests.cardmgmt.test_operator_requests, tests.cli.test_operator

from collections.abc import Callable
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cardmgmt import operators
from cardmgmt.context import Context, Permission, Role
from cardmgmt.errors import AlreadyExists, ConflictError, IllegalTransition, InvalidInput, NotFound, PermissionDenied
from cardmgmt.models import Operator, OperatorRequest, utcnow
from cardmgmt.operators import NO_PASSWORD


class Kind(StrEnum):
    ADD = "add"
    ROLE = "role"
    ENABLE = "enable"


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


def _file(ctx: Context, kind: Kind, name: str, role: Role | None, reason: str) -> OperatorRequest:
    if not reason.strip():
        raise InvalidInput("a request needs a reason")
    req = OperatorRequest(
        kind=kind.value, operator=name, role=role.value if role else None, status=Status.PENDING.value,
        reason=reason.strip()[:256], requested_by=ctx.actor.name,
    )
    ctx.session.add(req)
    ctx.session.flush()
    ctx.log(f"operator.request.{kind.value}", f"operator request {req.id}",
            after={"operator": name, "role": req.role, "reason": req.reason})
    return req


def _existing(ctx: Context, name: str) -> Operator:
    op = operators.get(ctx.session, name)
    if op.name == ctx.actor.name:
        raise InvalidInput("an administrator cannot file a request about their own account")
    if op.pending:
        raise IllegalTransition(f"operator {name!r} is waiting for approval already")
    return op


def file_add(ctx: Context, name: str, role: Role, reason: str) -> OperatorRequest:
    """Ask for a new operator with ``role``; they exist as pending until a second administrator approves."""
    ctx.require(Permission.MANAGE_OPERATORS)
    name = operators.check_name(name)
    operators.operator_role(role)
    if not reason.strip():
        raise InvalidInput("a request needs a reason")
    if ctx.session.execute(select(Operator.id).where(Operator.name == name)).first():
        raise AlreadyExists(f"operator {name!r} already exists")
    ctx.session.add(Operator(name=name, role=role.value, password_hash=NO_PASSWORD, active=False, pending=True,
                             created_by=ctx.actor.name, must_change_password=True))
    return _file(ctx, Kind.ADD, name, role, reason)


def file_role(ctx: Context, name: str, role: Role, reason: str) -> OperatorRequest:
    """Ask for an operator's role to change."""
    ctx.require(Permission.MANAGE_OPERATORS)
    operators.operator_role(role)
    op = _existing(ctx, name)
    if op.role == role.value:
        raise InvalidInput(f"operator {name!r} is {role.value} already")
    return _file(ctx, Kind.ROLE, op.name, role, reason)


def file_enable(ctx: Context, name: str, reason: str) -> OperatorRequest:
    """Ask for a disabled operator to be enabled again."""
    ctx.require(Permission.MANAGE_OPERATORS)
    op = _existing(ctx, name)
    if op.active:
        raise InvalidInput(f"operator {name!r} is not disabled")
    return _file(ctx, Kind.ENABLE, op.name, None, reason)


def get(session: Session, request_id: int) -> OperatorRequest:
    req = session.get(OperatorRequest, request_id)
    if req is None:
        raise NotFound(f"operator request {request_id} does not exist")
    return req


def _decide(ctx: Context, req: OperatorRequest, to: Status, comment: str) -> None:
    """Move a pending request to ``to`` only if it is still pending; the database decides races."""
    result = ctx.session.execute(
        update(OperatorRequest)
        .where(OperatorRequest.id == req.id, OperatorRequest.status == Status.PENDING.value)
        .values(status=to.value, decided_by=ctx.actor.name, decided_at=utcnow(), decision_comment=comment.strip()[:256]),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        raise ConflictError(f"operator request {req.id} was decided by someone else; nothing changed")
    ctx.session.refresh(req)


def _pending(ctx: Context, request_id: int, comment: str) -> OperatorRequest:
    ctx.require(Permission.MANAGE_OPERATORS)
    req = get(ctx.session, request_id)
    if req.status != Status.PENDING.value:
        raise IllegalTransition(f"operator request {req.id} is {req.status}, not pending")
    if not comment.strip():
        raise InvalidInput("a decision needs a comment")
    return req


def _apply(ctx: Context, req: OperatorRequest, **values: object) -> None:
    """Change the request's operator, refusing if it changed since the request was filed."""
    where = [Operator.name == req.operator]
    if req.kind == Kind.ADD:
        where.append(Operator.pending.is_(True))
    elif req.kind == Kind.ENABLE:
        where += [Operator.pending.is_(False), Operator.active.is_(False)]
    else:
        where.append(Operator.pending.is_(False))
    n = ctx.session.execute(update(Operator).where(*where).values(**values),
                            execution_options={"synchronize_session": False}).rowcount
    if n != 1:
        raise ConflictError(f"operator {req.operator!r} changed since request {req.id} was filed; nothing changed")


def approve(
    ctx: Context, request_id: int, comment: str, new_password: str | Callable[[], str] | None = None
) -> OperatorRequest:
    """A second administrator approves; for a new operator, with the first password they hand over.

    ``new_password`` may be a function, asked only when the request turns out
    to add an operator (a front end prompts for it then).
    """
    req = _pending(ctx, request_id, comment)
    me = ctx.actor.name
    if me == req.requested_by:
        raise PermissionDenied(f"operator {me!r} filed operator request {req.id} and cannot approve it")
    if me == req.operator:
        raise PermissionDenied(f"operator {me!r} cannot approve a request about their own account")
    if req.requested_by in operators.sponsors(ctx.session, me):
        raise PermissionDenied(
            f"operator {me!r} was created, enabled or given a role at {req.requested_by!r}'s request "
            f"and cannot approve their request {req.id}"
        )
    if req.kind == Kind.ADD:
        if callable(new_password):
            new_password = new_password()
        if not new_password:
            raise InvalidInput("approving a new operator needs the first password they will be given")
        operators.check_password_strength(new_password)
    _decide(ctx, req, Status.APPROVED, comment)
    if req.kind == Kind.ADD:
        _apply(ctx, req, pending=False, active=True, password_hash=operators.hash_password(str(new_password)),
               must_change_password=True)
    elif req.kind == Kind.ROLE:
        _apply(ctx, req, role=req.role, role_granted_by=req.requested_by)
    else:
        _apply(ctx, req, active=True, enabled_by=req.requested_by)
    ctx.log(f"operator.{req.kind}", f"operator {req.operator}",
            after={"request": req.id, "role": req.role, "requested_by": req.requested_by, "comment": req.decision_comment})
    return req


def reject(ctx: Context, request_id: int, comment: str) -> OperatorRequest:
    """Any administrator rejects (the requester so withdraws it); a pending new operator is removed."""
    req = _pending(ctx, request_id, comment)
    _decide(ctx, req, Status.REJECTED, comment)
    if req.kind == Kind.ADD:
        ctx.session.execute(delete(Operator).where(Operator.name == req.operator, Operator.pending.is_(True)),
                            execution_options={"synchronize_session": False})
    ctx.log("operator.request.reject", f"operator request {req.id}",
            before={"status": "pending"}, after={"status": "rejected", "comment": req.decision_comment})
    return req


def listing(session: Session, status: str | None = None) -> list[OperatorRequest]:
    q = select(OperatorRequest).order_by(OperatorRequest.id)
    if status:
        q = q.where(OperatorRequest.status == status)
    return list(session.execute(q).scalars())
