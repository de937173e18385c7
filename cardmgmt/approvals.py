"""Whether an operator may decide an issue request now, asked before offering the choice.

``why_not_decide`` is the one dual-control rule for what finance decides
(issue requests here, reversals in ``cardmgmt.reversals``): the wrong role,
the item's own filer, an item no longer pending.  ``issuing.decide`` and
``reversals.decide`` refuse by it inside the unit of work that changes the
item, and a front end that lists items (the web console) asks it first, so
it can show one as not decidable, and why, instead of offering a button that
would be refused.
"""

# test-case-name: tests.cardmgmt.test_approvals

from enum import StrEnum

from cardmgmt.context import PERMISSIONS, Actor, Permission
from cardmgmt.models import IssueRequest
from cardmgmt.states import RequestStatus


class NotDecidable(StrEnum):
    """Why an operator may not decide a request."""

    ROLE = "role"  # the role may not decide requests at all (administrators, auditors)
    OWN = "own"  # the operator filed it (separation of duties)
    DECIDED = "decided"  # it is no longer pending


def may(actor: Actor, permission: Permission) -> bool:
    """Whether the actor's role grants ``permission`` (the one table, ``cardmgmt.context.PERMISSIONS``)."""
    return permission in PERMISSIONS[actor.role]


def why_not_decide(actor: Actor, filed_by: str, pending: bool) -> NotDecidable | None:
    """The one dual-control rule for anything finance decides: None when ``actor`` may decide it now.

    The filer hears that it is their own first: that stays true whatever role they hold.
    """
    if filed_by == actor.name:
        return NotDecidable.OWN
    if not may(actor, Permission.DECIDE_REQUESTS):
        return NotDecidable.ROLE
    if not pending:
        return NotDecidable.DECIDED
    return None


def why_not(actor: Actor, request: IssueRequest | dict) -> NotDecidable | None:  # type: ignore[type-arg]
    """None when ``actor`` may approve or reject issue request ``request`` now; else the reason."""
    requested_by = request["requested_by"] if isinstance(request, dict) else request.requested_by
    status = request["status"] if isinstance(request, dict) else request.status
    return why_not_decide(actor, requested_by, status == RequestStatus.PENDING)
