"""Postings the marketing system refused for good: sent again, or settled by a person outside the system.

The outbox marks a posting ``rejected`` when the marketing system refuses
it for good (a closed account, a reference it holds with other content).
An administrator then either **retries** it (back to ``pending`` with its
attempts reset, once the marketing side has fixed what it refused) or
**resolves** it (``resolved``, final: someone settled it by hand, e.g.
refunded the customer or credited the account at a counter), always with a
reason that goes into the operation log.  A reconciliation lists a resolved
posting missing from the marketing system as resolved, not as a mismatch.

Recharges and reversals alike, named by their reference (a reversal's ends
in ``R``).  Both changes are conditional updates on ``post_status =
'rejected'``, so a posting is retried or resolved once, whoever races.
"""

# test-case-name: tests.marketing_iface.test_reversal_outbox, tests.cli.test_reversal

import datetime as dt

from sqlalchemy import update

from cardmgmt import reversals
from cardmgmt.context import Context, Permission
from cardmgmt.days import as_utc
from cardmgmt.errors import ConflictError, IllegalTransition, InvalidInput
from cardmgmt.models import Recharge, Reversal, utcnow
from cardmgmt.states import PostStatus

REASON_MAX = 200


def _find(ctx: Context, ref: str) -> Recharge | Reversal:
    if reversals.is_reversal_ref(ref):
        return reversals.find_by_ref(ctx.session, ref)
    return reversals.find_recharge(ctx.session, ref)


def _what(row: Recharge | Reversal) -> str:
    return f"reversal {row.ref}" if isinstance(row, Reversal) else f"recharge {row.ref}"


def _settle(ctx: Context, ref: str, reason: str, action: str, **values: object) -> Recharge | Reversal:
    ctx.require(Permission.MANAGE_CARDS)
    reason = reason.strip()
    if not reason:
        raise InvalidInput(f"{action} of a rejected posting needs a reason")
    row = _find(ctx, ref)
    what = _what(row)
    if row.post_status != PostStatus.REJECTED:
        state = row.post_status or "not approved"
        raise IllegalTransition(f"the posting of {what} is {state}, not rejected; only a rejected posting can be {action}d")
    before = {"post_status": PostStatus.REJECTED.value, "attempts": row.post_attempts, "last_error": row.last_error}
    table = type(row)
    result = ctx.session.execute(
        update(table).where(table.id == row.id, table.post_status == PostStatus.REJECTED).values(**values),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        raise ConflictError(f"the posting of {what} was changed by someone else just now; nothing changed")
    ctx.session.refresh(row)
    assert row.post_status is not None
    ctx.log(f"posting.{action}", what, before=before,
            after={"post_status": row.post_status.value, "reason": reason[:REASON_MAX]})
    return row


def retry(ctx: Context, ref: str, reason: str, now: dt.datetime | None = None) -> Recharge | Reversal:
    """Send a rejected posting again: ``pending``, due now, attempts reset to 0 (the refusal stays in the log)."""
    return _settle(ctx, ref, reason, "retry", post_status=PostStatus.PENDING, post_attempts=0,
                   next_attempt_at=as_utc(now) if now is not None else utcnow(), last_error=None)


def resolve(ctx: Context, ref: str, reason: str) -> Recharge | Reversal:
    """Mark a rejected posting as settled outside the system (``resolved``, final)."""
    return _settle(ctx, ref, reason, "resolve", post_status=PostStatus.RESOLVED)
