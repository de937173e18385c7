"""The contract every marketing-system implementation keeps.

The marketing (billing) system of record holds accounts and balances; the
card system only reads accounts and posts recharges.  ``MarketingSystem`` is
the whole surface the rest of the project may use: the recharge core calls
``lookup_account`` while a caller is on the line, and the outbox worker calls
``post_recharge`` until it succeeds.  Implementations: ``sql.SqlMarketing``
(the real interface tables, or the stand-in schema), and ``NullMarketing``
for tests of code that must not reach the marketing system at all.
"""

# test-case-name: tests.marketing_iface.test_contract

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class MarketingError(Exception):
    """Base of what the marketing interface raises."""


class MarketingUnavailable(MarketingError):
    """The marketing system cannot be reached now; try again later (nothing was changed)."""


class PostingRejected(MarketingError):
    """The marketing system refuses this posting for good (e.g. the account was closed)."""


class MappingError(MarketingError):
    """The description of the marketing database (the mapping file) is malformed or does not fit the database.

    Not an outage: nothing will get better by retrying, so servers refuse to
    start and the CLI prints the one line and exits 1.
    """


@dataclass(frozen=True)
class Account:
    """An electricity account as the card system may see it."""

    account_no: str  # 户号, fields.ACCOUNT_DIGITS digits
    holder_name: str  # full name; front ends show ``masked_name``
    balance: int  # fen; negative means arrears (欠费)

    @property
    def masked_name(self) -> str:
        """张三明 → 张*明, 李四 → 李*, so a caller can confirm without the name being read out whole."""
        n = self.holder_name.strip()
        if len(n) <= 1:
            return n
        if len(n) == 2:
            return n[0] + "*"
        return n[0] + "*" * (len(n) - 2) + n[-1]


@dataclass(frozen=True)
class Posting:
    """One recharge, or the reversal (冲正) of one, as written into the marketing system's interface table.

    A reversal is a counter-entry, never a deletion: its own ``recharge_ref``
    (the reversal's reference), ``reverses`` naming the original posting's
    ``recharge_ref``, the same account and the original's amount negated
    (it debits the balance).  ``amount > 0`` exactly when ``reverses`` is
    ``None``; an original is reversed at most once.
    """

    recharge_ref: str  # unique; the idempotency key of the posting
    account_no: str
    amount: int  # fen; negative only for a reversal
    card_serial: str
    channel: str  # "hotline", later "web", "pos", ...
    recharged_at: dt.datetime  # UTC, when the card system committed it (a reversal: when it was approved)
    reverses: str | None = None  # a reversal: the original posting's recharge_ref

    @property
    def is_reversal(self) -> bool:
        return self.reverses is not None


@runtime_checkable
class MarketingSystem(Protocol):
    def lookup_account(self, account_no: str) -> Account | None:
        """The account, or ``None`` if there is none; ``MarketingUnavailable`` if unreachable."""
        ...

    def post_recharge(self, posting: Posting) -> bool:
        """Write the posting exactly once.

        Returns ``True`` if it was written now, ``False`` if the same
        ``recharge_ref`` was already there with the same content (a repeat is
        harmless).  ``PostingRejected`` for a permanent refusal (unknown
        account, or the same reference with different content);
        ``MarketingUnavailable`` when it cannot be reached.

        A reversal (``reverses`` set) is refused unless its original is in
        the interface table for the same account with ``amount ==
        -reversal.amount`` and no other reversal of it is there; a
        non-reversal must have a positive amount, a reversal a negative one.
        """
        ...

    def post_recharges(self, postings: Sequence[Posting]) -> list["bool | PostingRejected"]:
        """Write several postings exactly once each, all or none (one transaction).

        Per posting, in order: ``True`` written now, ``False`` already there
        with the same content, or the ``PostingRejected`` that refuses it for
        good (returned, not raised, so the others are still written).
        ``MarketingUnavailable``: none of them was written.
        """
        ...

    def postings_for_day(self, day: dt.date) -> list[Posting]:
        """Every posting (reversals too) whose ``recharged_at`` falls on ``day`` (UTC+8 business day), for reconciliation."""
        ...
