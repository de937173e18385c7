"""Daily reconciliation (对账): the card side's recharges of a business day against the marketing system's.

Both sides are matched by ``recharge_ref`` over the same UTC+8 business day
(the posting's ``recharged_at`` is the record's ``committed_at``, so a
recharge falls on the same day on both sides).  Every difference is listed
with what each side holds; a record missing in the marketing system carries
its outbox state, because "still pending" (the outbox is behind) and
"marked posted but not there" (someone must look) call for different people.

Reversals (冲正) are postings too (a negative amount and ``reverses``
naming the original's reference), posted and listed by the marketing
system like recharges; their card-side records are kept by the reversal
workflow, not here.  ``reconcile`` reads them through a ``CardReversals``
provider given by the caller (``session, day`` → the card side's reversal
postings committed that day, each with its outbox state), so this module
needs nothing of how that workflow stores them; without one, the card side
has no reversals and any reversal the marketing system lists for the day
is ``missing_in_cards``.  Counts are of entries, totals are net (a
reversal's negative amount is subtracted), and a reversal that names a
different original on each side is ``original_differs``.
``card_reversals`` is the provider over the card database's ``reversals``
table (approved reversals, on the business day they were approved).

A posting the marketing system refused and a person then settled outside
the system (``post_status = 'resolved'``, see
``cardmgmt.rejected_postings``) is expected to be missing there: it is
listed under ``resolved``, left out of the card side's count and total, and
is no mismatch.  Should the marketing system hold it after all, it is
matched like any other entry.
"""

# test-case-name: tests.marketing_iface.test_reconcile, tests.marketing_iface.test_reversal_outbox

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardmgmt.context import Context, Permission
from cardmgmt.days import day_bounds
from cardmgmt.marketing import MarketingSystem, Posting
from cardmgmt.models import Recharge, Reversal
from cardmgmt.states import PostStatus, ReversalStatus
from marketing_iface.outbox import posting_for, posting_for_reversal


class CardEntry(NamedTuple):
    """One card-side entry of a day: the posting it makes (or made) and its outbox state."""

    posting: Posting
    post_status: str | None


# (card session, business day) -> the card side's reversal postings committed that day.
CardReversals = Callable[[Session, dt.date], Iterable[CardEntry]]


def no_reversals(session: Session, day: dt.date) -> Iterable[CardEntry]:
    """The card side's reversals until the reversal workflow provides its own: none."""
    return ()


def card_reversals(session: Session, day: dt.date) -> list[CardEntry]:
    """The card side's reversals of business day ``day``: every approved reversal approved that day (UTC+8)."""
    start, end = day_bounds(day)
    rows = session.scalars(
        select(Reversal)
        .where(Reversal.status == ReversalStatus.APPROVED, Reversal.decided_at >= start, Reversal.decided_at < end)
        .order_by(Reversal.id)
    ).all()
    return [CardEntry(posting_for_reversal(r), r.post_status) for r in rows]


@dataclass(frozen=True)
class Discrepancy:
    """One ``recharge_ref`` on which the two sides disagree, with what each side holds (``None``: nothing)."""

    recharge_ref: str
    cards: Posting | None  # the posting the card side made, or would make, of its record
    marketing: Posting | None
    post_status: str | None  # the card record's outbox state


@dataclass(frozen=True)
class Reconciliation:
    """The outcome of reconciling one business day; ``ok`` when the two sides agree exactly."""

    day: dt.date
    card_count: int
    card_total: int  # fen
    marketing_count: int
    marketing_total: int  # fen
    missing_in_marketing: tuple[Discrepancy, ...]
    missing_in_cards: tuple[Discrepancy, ...]
    amount_differs: tuple[Discrepancy, ...]
    account_differs: tuple[Discrepancy, ...]
    original_differs: tuple[Discrepancy, ...] = ()  # a reversal names another original on the other side
    card_reversals: int = 0  # of card_count, how many are reversals
    marketing_reversals: int = 0  # of marketing_count, how many are reversals
    resolved: tuple[Discrepancy, ...] = ()  # settled by a person outside the system; not in the card totals

    @property
    def ok(self) -> bool:
        return not any(getattr(self, kind) for kind in FINDING_KINDS)

    @property
    def has_discrepancies(self) -> bool:
        """The two sides disagree somewhere (the CLI exits 3)."""
        return not self.ok

    @property
    def findings(self) -> list[tuple[str, Discrepancy]]:
        """Every discrepancy with its kind, in the order of ``FINDING_KINDS``."""
        return [(kind, d) for kind in FINDING_KINDS for d in getattr(self, kind)]

    def to_dict(self) -> dict[str, Any]:
        """The reconciliation as plain data, money in integer fen (the ``--json`` output)."""
        return {
            "day": self.day.isoformat(), "ok": self.ok,
            "card_count": self.card_count, "card_total": self.card_total,
            "marketing_count": self.marketing_count, "marketing_total": self.marketing_total,
            "card_reversals": self.card_reversals, "marketing_reversals": self.marketing_reversals,
            "resolved": [{"recharge_ref": d.recharge_ref, "cards": _posting(d.cards)} for d in self.resolved],
            "findings": [
                {"finding": kind, "recharge_ref": d.recharge_ref,
                 "cards": _posting(d.cards), "marketing": _posting(d.marketing), "post_status": d.post_status}
                for kind, d in self.findings
            ],
        }


FINDING_KINDS = ("missing_in_marketing", "missing_in_cards", "amount_differs", "account_differs", "original_differs")


def _posting(p: Posting | None) -> dict[str, Any] | None:
    return None if p is None else {"account_no": p.account_no, "amount": p.amount, "reverses": p.reverses}


def reconcile(
    card_session: Session, marketing: MarketingSystem, day: dt.date, reversals: CardReversals = no_reversals
) -> Reconciliation:
    """Reconcile business day ``day`` (UTC+8); ``MarketingUnavailable`` if the marketing system cannot be read.

    ``reversals`` gives the card side's reversal postings of the day (see
    the module docstring); they are matched by reference like recharges.
    """
    start, end = day_bounds(day)
    records = card_session.scalars(
        select(Recharge)
        .where(Recharge.committed_at >= start, Recharge.committed_at < end)
        .order_by(Recharge.id)
    ).all()
    ours: dict[str, tuple[Posting, str]] = {}
    for r in records:
        posting = posting_for(r)
        ours[posting.recharge_ref] = (posting, r.post_status)
    for entry in reversals(card_session, day):
        ours[entry.posting.recharge_ref] = (entry.posting, entry.post_status)
    theirs = {p.recharge_ref: p for p in marketing.postings_for_day(day)}

    missing_in_marketing: list[Discrepancy] = []
    amount_differs: list[Discrepancy] = []
    account_differs: list[Discrepancy] = []
    original_differs: list[Discrepancy] = []
    resolved: list[Discrepancy] = []
    for ref, (card, status) in list(ours.items()):
        other = theirs.get(ref)
        if other is None and status == PostStatus.RESOLVED:
            resolved.append(Discrepancy(ref, card, None, status))
            del ours[ref]
            continue
        if other is None:
            missing_in_marketing.append(Discrepancy(ref, card, None, status))
            continue
        if other.amount != card.amount:
            amount_differs.append(Discrepancy(ref, card, other, status))
        if other.account_no != card.account_no:
            account_differs.append(Discrepancy(ref, card, other, status))
        if other.reverses != card.reverses:
            original_differs.append(Discrepancy(ref, card, other, status))
    missing_in_cards = [Discrepancy(ref, None, p, None) for ref, p in theirs.items() if ref not in ours]

    return Reconciliation(
        day=day,
        card_count=len(ours),
        card_total=sum(card.amount for card, _ in ours.values()),
        marketing_count=len(theirs),
        marketing_total=sum(p.amount for p in theirs.values()),
        missing_in_marketing=tuple(missing_in_marketing),
        missing_in_cards=tuple(missing_in_cards),
        amount_differs=tuple(amount_differs),
        account_differs=tuple(account_differs),
        original_differs=tuple(original_differs),
        card_reversals=sum(1 for card, _ in ours.values() if card.is_reversal),
        marketing_reversals=sum(1 for p in theirs.values() if p.is_reversal),
        resolved=tuple(resolved),
    )


def reconcile_day(
    ctx: Context, marketing: MarketingSystem, day: dt.date, reversals: CardReversals = no_reversals
) -> Reconciliation:
    """``reconcile`` for an operator: anyone who may view reports may reconcile."""
    ctx.require(Permission.VIEW)
    return reconcile(ctx.session, marketing, day, reversals)
