"""Who is acting and what they may do: roles, permissions, the actor, and a unit of work's ``Context``.

Every service takes a ``Context`` (``CardSystem.unit`` makes one) and
asks it ``require(permission)`` before it changes anything; the one table of
which role may do what is ``PERMISSIONS`` here.  Signing in and managing
operators is ``cardmgmt.operators``.
"""

# test-case-name: tests.cardmgmt.test_operators

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from cardmgmt import audit
from cardmgmt.errors import PermissionDenied
from cardmgmt.keys import KeyRing


class Role(StrEnum):
    ADMIN = "admin"  # card administrator (卡管理员)
    FINANCE = "finance"  # finance staff (财务)
    AUDITOR = "auditor"  # reads reports and verifies the operation log
    # A POS terminal selling through the sales-point API (cardmgmt.terminals): the
    # actor of its sales, never an operator's role (OPERATOR_ROLES; a CHECK on operators.role).
    TERMINAL = "terminal"


class Permission(StrEnum):
    MANAGE_OPERATORS = "manage operators"
    MANAGE_CARDS = "manage cards"
    SELL_CARDS = "record card sales at a business hall"
    DECIDE_REQUESTS = "approve or reject issue requests"
    VIEW = "view reports and listings"
    VERIFY_LOG = "verify the operation log"
    OWN_PASSWORD = "change their own password"
    MANAGE_CLIENTS = "manage channel clients and the servers' certificate"
    RECORD_PAYMENTS = "record and void halls' settlement payments"


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({
        Permission.MANAGE_OPERATORS, Permission.MANAGE_CARDS, Permission.SELL_CARDS, Permission.MANAGE_CLIENTS,
        Permission.VIEW,
        Permission.VERIFY_LOG, Permission.OWN_PASSWORD,
    }),
    Role.FINANCE: frozenset({Permission.DECIDE_REQUESTS, Permission.RECORD_PAYMENTS, Permission.VIEW,
                             Permission.OWN_PASSWORD}),
    Role.AUDITOR: frozenset({Permission.VIEW, Permission.VERIFY_LOG, Permission.OWN_PASSWORD}),
    # Selling its own hall's cards and nothing else: no listing, no password, no sign-in.
    Role.TERMINAL: frozenset({Permission.SELL_CARDS}),
}
# The roles a person can hold; the terminal's is given only by cardmgmt.terminals.
OPERATOR_ROLES: tuple[Role, ...] = (Role.ADMIN, Role.FINANCE, Role.AUDITOR)

@dataclass(frozen=True)
class Actor:
    """An authenticated operator, as the services see them."""

    name: str
    role: Role


def require(actor: Actor, permission: Permission) -> None:
    """Raise ``PermissionDenied`` unless the actor's role grants ``permission``."""
    if permission not in PERMISSIONS[actor.role]:
        raise PermissionDenied(f"operator {actor.name!r} ({actor.role}) may not {permission}")


@dataclass
class Context:
    """What a service needs for one unit of work: the session, the keys and who is acting."""

    session: Session
    keys: KeyRing
    actor: Actor
    # The newest log entry this unit wrote, anchored outside the database once the unit commits.
    head: tuple[int, str] | None = None

    def log(
        self, action: str, obj: str, before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None
    ) -> None:
        """Record this unit's change in the operation log (same transaction)."""
        entry = audit.record(self.session, self.keys.audit_key, self.actor.name, action, obj, before, after)
        self.head = (entry.seq, entry.hash)

    def require(self, permission: Permission) -> None:
        require(self.actor, permission)
