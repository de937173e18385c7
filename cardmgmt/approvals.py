"""Whether an operator may decide an issue request now, asked before offering the choice.

``issuing.decide`` is the rule that counts: it refuses the wrong role, the
request's own filer and a request that is no longer pending, inside the
unit of work that changes it.  A front end that lists requests (the web
console) asks this module first, so it can show a request as not decidable,
and why, instead of offering a button that would be refused.  Both read the
same permission table; a test keeps the two in agreement.
"""

# test-case-name: tests.cardmgmt.test_approvals

from enum import StrEnum

from cardmgmt.models import IssueRequest
from cardmgmt.operators import PERMISSIONS, Actor, Permission
from cardmgmt.states import RequestStatus


class NotDecidable(StrEnum):
    """Why an operator may not decide a request."""

    ROLE = "role"  # the role may not decide requests at all (administrators, auditors)
    OWN = "own"  # the operator filed it (separation of duties)
    DECIDED = "decided"  # it is no longer pending


def may(actor: Actor, permission: Permission) -> bool:
    """Whether the actor's role grants ``permission`` (the one table, ``operators.PERMISSIONS``)."""
    return permission in PERMISSIONS[actor.role]


def why_not(actor: Actor, request: IssueRequest | dict) -> NotDecidable | None:  # type: ignore[type-arg]
    """None when ``actor`` may approve or reject ``request`` now; else the reason, the filer's own first."""
    requested_by = request["requested_by"] if isinstance(request, dict) else request.requested_by
    status = request["status"] if isinstance(request, dict) else request.status
    # The filer hears that it is their own request first: that stays true whatever role they hold.
    if requested_by == actor.name:
        return NotDecidable.OWN
    if not may(actor, Permission.DECIDE_REQUESTS):
        return NotDecidable.ROLE
    if status != RequestStatus.PENDING:
        return NotDecidable.DECIDED
    return None
