"""An in-memory marketing system with a switch to take it down, for tests of code that calls one.

``NullMarketing`` keeps the same promises as ``SqlMarketing`` (it passes the
same contract tests): a posting is written once per ``recharge_ref``, a
repeat with the same content is harmless, anything else is refused, and a
written posting credits the account's balance.  Setting ``available`` to
``False`` makes every call raise ``MarketingUnavailable`` and change nothing,
which is how the recharge core and the outbox are tested against an outage
without a server.
"""

# test-case-name: tests.marketing_iface.test_contract

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterable, Sequence

from cardmgmt.days import as_utc, business_day
from cardmgmt.marketing import Account, MarketingUnavailable, Posting, PostingRejected
from marketing_iface.standin import check_posting


class NullMarketing:
    """Accounts and postings in two dicts; ``available = False`` simulates an outage."""

    def __init__(self, accounts: Iterable[Account] = (), *, available: bool = True) -> None:
        self.accounts: dict[str, Account] = {a.account_no: a for a in accounts}
        self.postings: dict[str, Posting] = {}
        self.available = available
        # The recharge servers call in from several threads; the check for a
        # duplicate and the write must be one step, as the database makes it.
        self._lock = threading.Lock()

    def _check_available(self) -> None:
        if not self.available:
            raise MarketingUnavailable("marketing system unavailable (switched off for the test)")

    def lookup_account(self, account_no: str) -> Account | None:
        """The account, or ``None``."""
        self._check_available()
        with self._lock:
            return self.accounts.get(account_no)

    def post_recharges(self, postings: Sequence[Posting]) -> list[bool | PostingRejected]:
        """Each of ``post_recharge`` in turn; when switched off, none is written."""
        self._check_available()
        results: list[bool | PostingRejected] = []
        for posting in postings:
            try:
                results.append(self.post_recharge(posting))
            except PostingRejected as e:
                results.append(e)
        return results

    def post_recharge(self, posting: Posting) -> bool:
        """Record the posting once per ``recharge_ref`` and credit the account; see ``MarketingSystem``."""
        self._check_available()
        check_posting(posting)
        wanted = dataclasses.replace(posting, recharged_at=as_utc(posting.recharged_at))
        with self._lock:
            stored = self.postings.get(wanted.recharge_ref)
            if stored is not None:
                if stored != wanted:
                    raise PostingRejected(
                        f"posting {wanted.recharge_ref}: the marketing system already holds this reference "
                        "with different content"
                    )
                return False
            account = self.accounts.get(wanted.account_no)
            if account is None:
                raise PostingRejected(f"posting {wanted.recharge_ref}: no account {wanted.account_no} in the marketing system")
            if wanted.reverses is not None:
                self._check_reversal(wanted)
            self.postings[wanted.recharge_ref] = wanted
            self.accounts[account.account_no] = dataclasses.replace(account, balance=account.balance + wanted.amount)
            return True

    def _check_reversal(self, wanted: Posting) -> None:
        """The rules ``SqlMarketing`` enforces for a reversal, with the same words."""
        ref, original_ref = wanted.recharge_ref, wanted.reverses
        original = self.postings.get(original_ref or "")
        if original is None:
            raise PostingRejected(f"reversal {ref}: the original posting {original_ref} is not in the marketing system")
        if original.is_reversal:
            raise PostingRejected(f"reversal {ref}: {original_ref} is itself a reversal")
        if original.account_no != wanted.account_no or original.amount != -wanted.amount:
            raise PostingRejected(
                f"reversal {ref}: does not match its original {original_ref} (account and amount must be the same, negated)"
            )
        other = next((p.recharge_ref for p in self.postings.values() if p.reverses == original_ref), None)
        if other is not None:
            raise PostingRejected(f"reversal {ref}: {original_ref} was already reversed by {other}")

    def postings_for_day(self, day: dt.date) -> list[Posting]:
        """The postings of business day ``day`` (UTC+8), oldest first."""
        self._check_available()
        with self._lock:
            found = [p for p in self.postings.values() if business_day(p.recharged_at) == day]
        return sorted(found, key=lambda p: (p.recharged_at, p.recharge_ref))
