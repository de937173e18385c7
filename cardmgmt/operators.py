"""Operators, their roles, and what each role may do.

Passwords are kept only as scrypt hashes with a per-password salt; the cost
parameters travel inside the stored string, so they can be raised later
without invalidating existing accounts.  ``PERMISSIONS`` is the single table
that says which role may do what; every command asks it through ``require``.

Signing in counts wrong passwords on the operator's row with one conditional
``UPDATE`` (``record_failure``), so parallel guesses cannot count past
``MAX_FAILURES``: that many wrong passwords within ``FAILURE_WINDOW`` lock the
operator for ``LOCKOUT`` or until an administrator unlocks them.  An unknown
name, a wrong password and a locked operator get the same line and the same
work (one scrypt, one counting update).  Adding operators, changing roles and
re-enabling need a second administrator (``operator_requests``); changing
one's own password, resetting someone else's, disabling and unlocking are
here.
"""

# test-case-name: tests.cardmgmt.test_operators

import base64
import datetime as dt
import hashlib
import hmac
import os

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from cardmgmt.context import OPERATOR_ROLES, Actor, Context, Permission, Role
from cardmgmt.errors import AlreadyExists, AuthenticationFailed, InvalidInput, NotFound
from cardmgmt.models import Operator, utcnow

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8
MAX_FAILURES = 5
FAILURE_WINDOW = dt.timedelta(minutes=15)
LOCKOUT = dt.timedelta(minutes=15)
# Stored for an operator nobody has chosen a password for yet (a pending one): no password matches it.
NO_PASSWORD = "!"


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


# Spent on unknown names too, so response time does not reveal which names exist.
_DUMMY_HASH = hash_password("not a real password")


def refused(name: str) -> AuthenticationFailed:
    """The one line for an unknown name, a wrong password and a locked operator alike."""
    return AuthenticationFailed(f"operator {name!r}: unknown name, wrong password or locked after too many wrong passwords")


def sign_in(
    session: Session, name: str | None, password: str | None, *, now: dt.datetime | None = None, password_change: bool = False
) -> Actor | None:
    """The ``Actor`` for a name and password, or None for an unknown name, a wrong password or a locked operator.

    None leaves the counting to the caller (``record_failure``, in a
    transaction of its own, since this one is about to be rolled back).  A
    right password of a disabled operator, or of one who must first choose a
    new password (unless ``password_change``), raises ``AuthenticationFailed``.
    """
    if not name:
        raise AuthenticationFailed("no operator given (use --operator or CARDS_OPERATOR)")
    now = now or utcnow()
    row = session.execute(
        select(Operator, func.coalesce(Operator.locked_until > now, False)).where(Operator.name == name)
    ).one_or_none()
    op, locked = row if row is not None else (None, False)
    # The hash is checked even for a locked operator, so a lockout takes as long to answer as a wrong password.
    ok = verify_password(password or "", op.password_hash if op else _DUMMY_HASH)
    if op is None or not ok or locked:
        return None
    if op.pending:
        raise AuthenticationFailed(f"operator {name!r} is waiting for an administrator's approval")
    if not op.active:
        raise AuthenticationFailed(f"operator {name!r} is disabled")
    if op.must_change_password and not password_change:
        raise AuthenticationFailed(
            f"operator {name!r} must choose a new password first: cli.py -u {name} operator password"
        )
    if op.role not in OPERATOR_ROLES:
        raise AuthenticationFailed(f"operator {name!r} has no operator's role")
    if op.failed_logins:
        op.failed_logins, op.failed_since = 0, None
    return Actor(name=op.name, role=Role(op.role))


def authenticate(session: Session, name: str | None, password: str | None) -> Actor:
    """The ``Actor`` for a name and password, or ``AuthenticationFailed`` (nothing counted: see ``sign_in``)."""
    actor = sign_in(session, name, password)
    if actor is None:
        raise refused(name or "")
    return actor


def record_failure(session: Session, name: str, now: dt.datetime | None = None) -> tuple[Role, dt.datetime] | None:
    """Count one wrong password against ``name``; the role and lock's end if this one locked the operator.

    One conditional ``UPDATE``: a failure counts only while the operator is
    not locked and has fewer than ``MAX_FAILURES`` in the window, and the
    database serialises updates of one row, so parallel wrong passwords can
    never count past the limit.  An unknown name updates nothing.
    """
    now = now or utcnow()
    fresh = or_(Operator.failed_since.is_(None), Operator.failed_since <= now - FAILURE_WINDOW)
    counted = case((fresh, 1), else_=Operator.failed_logins + 1)
    until = now + LOCKOUT
    row = session.execute(
        update(Operator)
        .where(
            Operator.name == name,
            or_(Operator.locked_until.is_(None), Operator.locked_until <= now),
            or_(fresh, Operator.failed_logins < MAX_FAILURES),
        )
        .values(
            failed_logins=counted,
            failed_since=case((fresh, now), else_=Operator.failed_since),
            locked_until=case((counted >= MAX_FAILURES, until), else_=None),
        )
        .returning(Operator.role, Operator.failed_logins),
        execution_options={"synchronize_session": False},
    ).one_or_none()
    if row is None or row.failed_logins < MAX_FAILURES:
        return None
    return Role(row.role), until


def parse_role(text: str) -> Role:
    """An operator's role by name; a POS terminal's role is not one."""
    try:
        return operator_role(Role(text))
    except ValueError:
        raise InvalidInput(f"role {text!r} is not one of {', '.join(r.value for r in OPERATOR_ROLES)}") from None


def operator_role(role: Role) -> Role:
    """``role`` if a person may hold it; ``InvalidInput`` for the terminal's role."""
    if role not in OPERATOR_ROLES:
        raise InvalidInput(f"role {role.value!r} is a POS terminal's, never an operator's; "
                           f"choose one of {', '.join(r.value for r in OPERATOR_ROLES)}")
    return role


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")


def disable(ctx: "Context", name: str) -> Operator:
    """Disable an operator's account (it stays, with its entries in the log), and log it.

    One administrator may do it alone: it only takes power away.  Enabling
    again needs a second administrator (``operator_requests``).
    """
    ctx.require(Permission.MANAGE_OPERATORS)
    if name == ctx.actor.name:
        # Else an installation could be left with no administrator able to sign in.
        raise InvalidInput("an operator cannot disable their own account")
    op = get(ctx.session, name)
    if op.pending:
        raise InvalidInput(f"operator {name!r} is waiting for approval; reject the request instead")
    op.active = False
    ctx.log("operator.disable", f"operator {name}", before={"active": True}, after={"active": False})
    return op


def change_password(ctx: "Context", new_password: str) -> None:
    """The signed-in operator chooses a new password (having signed in with the old one), and it is logged."""
    ctx.require(Permission.OWN_PASSWORD)
    check_password_strength(new_password)
    op = get(ctx.session, ctx.actor.name)
    if verify_password(new_password, op.password_hash):
        raise InvalidInput("the new password must differ from the old one")
    forced = op.must_change_password
    op.password_hash, op.must_change_password = hash_password(new_password), False
    ctx.log("operator.password", f"operator {op.name}", after={"after_reset": forced})


def reset_password(ctx: "Context", name: str, temporary_password: str) -> None:
    """Another administrator sets a temporary password, which works only to choose a new one; logged.

    The lockout is lifted too: a reset is what a locked-out operator asks for.
    """
    ctx.require(Permission.MANAGE_OPERATORS)
    if name == ctx.actor.name:
        raise InvalidInput("an administrator cannot reset their own password; use `operator password`")
    check_password_strength(temporary_password)
    op = get(ctx.session, name)
    if op.pending:
        raise InvalidInput(f"operator {name!r} is waiting for approval; the approver sets the first password")
    op.password_hash, op.must_change_password = hash_password(temporary_password), True
    op.failed_logins, op.failed_since, op.locked_until = 0, None, None
    ctx.log("operator.reset_password", f"operator {name}", after={"must_change_password": True})


def unlock(ctx: "Context", name: str, now: dt.datetime | None = None) -> None:
    """Lift an operator's lockout before it lapses, and log it."""
    ctx.require(Permission.MANAGE_OPERATORS)
    op = get(ctx.session, name)
    locked = ctx.session.execute(
        select(func.coalesce(Operator.locked_until > (now or utcnow()), False)).where(Operator.id == op.id)
    ).scalar_one()
    if not locked:
        raise InvalidInput(f"operator {name!r} is not locked")
    before = op.failed_logins
    op.failed_logins, op.failed_since, op.locked_until = 0, None, None
    ctx.log("operator.unlock", f"operator {name}", before={"failed_logins": before}, after={"failed_logins": 0})


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidInput(f"operator name {name!r} must be 1-64 letters, digits, '.', '-' or '_'")
    return name


def create(session: Session, name: str, role: Role, password: str) -> Operator:
    """Store a new, active operator with no approval and no log entry.

    For ``init`` (the first administrators) and for test benches only: every
    other new operator is filed and approved through ``operator_requests``.
    """
    name = check_name(name)
    operator_role(role)
    check_password_strength(password)
    if session.execute(select(Operator.id).where(Operator.name == name)).first():
        raise AlreadyExists(f"operator {name!r} already exists")
    op = Operator(name=name, role=role.value, password_hash=hash_password(password), active=True)
    session.add(op)
    session.flush()
    return op


def get(session: Session, name: str) -> Operator:
    op = session.execute(select(Operator).where(Operator.name == name)).scalar_one_or_none()
    if op is None:
        raise NotFound(f"operator {name!r} does not exist")
    return op


def count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Operator)).scalar_one()


def count_admins(session: Session) -> int:
    return session.execute(
        select(func.count()).select_from(Operator).where(Operator.role == Role.ADMIN.value, Operator.pending.is_(False))
    ).scalar_one()


def listing(session: Session) -> list[Operator]:
    return list(session.execute(select(Operator).order_by(Operator.name)).scalars())


def status(op: Operator, now: dt.datetime | None = None) -> str:
    """What ``operator list`` shows: pending, disabled, locked, must change password, or active."""
    if op.pending:
        return "pending"
    if not op.active:
        return "disabled"
    until = op.locked_until
    if until is not None and (until if until.tzinfo else until.replace(tzinfo=dt.UTC)) > (now or utcnow()):
        return "locked"
    return "must change password" if op.must_change_password else "active"


def sponsors(session: Session, name: str) -> set[str]:
    """Everyone who asked for ``name`` to be created, re-enabled or given a role, and so on up the chain.

    Separation of duties: none of them may approve a request ``name`` would
    be approving, so an administrator's creature can never approve for her.
    The operators table is small, so walking it is cheap.
    """
    found: set[str] = set()
    todo = [name]
    while todo:
        row = session.execute(
            select(Operator.created_by, Operator.enabled_by, Operator.role_granted_by).where(Operator.name == todo.pop())
        ).one_or_none()
        for parent in row or ():
            if parent and parent not in found:
                found.add(parent)
                todo.append(parent)
    return found
