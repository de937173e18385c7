"""Operators, their roles, and what each role may do.

Passwords are kept only as scrypt hashes with a per-password salt; the cost
parameters travel inside the stored string, so they can be raised later
without invalidating existing accounts.  ``PERMISSIONS`` is the single table
that says which role may do what; every command asks it through ``require``.
"""

# test-case-name: tests.cardmgmt.test_operators

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cardmgmt.errors import AlreadyExists, AuthenticationFailed, InvalidInput, NotFound, PermissionDenied
from cardmgmt.models import Operator


class Role(StrEnum):
    ADMIN = "admin"  # card administrator (卡管理员)
    FINANCE = "finance"  # finance staff (财务)
    AUDITOR = "auditor"  # reads reports and verifies the operation log


class Permission(StrEnum):
    MANAGE_OPERATORS = "manage operators"
    MANAGE_CARDS = "manage cards"
    DECIDE_REQUESTS = "approve or reject issue requests"
    VIEW = "view reports and listings"
    VERIFY_LOG = "verify the operation log"
    MANAGE_CLIENTS = "manage channel clients and the servers' certificate"


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({
        Permission.MANAGE_OPERATORS, Permission.MANAGE_CARDS, Permission.MANAGE_CLIENTS, Permission.VIEW,
        Permission.VERIFY_LOG,
    }),
    Role.FINANCE: frozenset({Permission.DECIDE_REQUESTS, Permission.VIEW}),
    Role.AUDITOR: frozenset({Permission.VIEW, Permission.VERIFY_LOG}),
}

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8


@dataclass(frozen=True)
class Actor:
    """An authenticated operator, as the services see them."""

    name: str
    role: Role


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


def authenticate(session: Session, name: str | None, password: str | None) -> Actor:
    """The ``Actor`` for a name and password, or ``AuthenticationFailed``."""
    if not name:
        raise AuthenticationFailed("no operator given (use --operator or CARDS_OPERATOR)")
    op = session.execute(select(Operator).where(Operator.name == name)).scalar_one_or_none()
    ok = verify_password(password or "", op.password_hash if op else _DUMMY_HASH)
    if op is None or not ok:
        raise AuthenticationFailed(f"operator {name!r}: unknown name or wrong password")
    if not op.active:
        raise AuthenticationFailed(f"operator {name!r} is disabled")
    return Actor(name=op.name, role=Role(op.role))


def require(actor: Actor, permission: Permission) -> None:
    """Raise ``PermissionDenied`` unless the actor's role grants ``permission``."""
    if permission not in PERMISSIONS[actor.role]:
        raise PermissionDenied(f"operator {actor.name!r} ({actor.role}) may not {permission}")


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidInput(f"role {text!r} is not one of {', '.join(r.value for r in Role)}") from None


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")


def create(session: Session, name: str, role: Role, password: str) -> Operator:
    """Add an operator (the caller logs it and checks permission)."""
    name = name.strip()
    if not name or len(name) > 64 or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidInput(f"operator name {name!r} must be 1-64 letters, digits, '.', '-' or '_'")
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


def listing(session: Session) -> list[Operator]:
    return list(session.execute(select(Operator).order_by(Operator.name)).scalars())
