"""The stand-in marketing system as tests use it: sample accounts, a reset, balances, and recharge records to post.

``sample_null_marketing`` is the in-memory marketing system holding the
sample accounts; ``reset_standin`` puts a stand-in marketing database back
to exactly those accounts; ``balances`` reads every sample account's
balance through any implementation of the marketing Protocol, so a test can
compare before and after.  ``Ledger`` writes committed recharge records
straight into a card database, so the outbox and reconciliation are tested
without the recharge core.  ``posting_log`` is the operation log a
reversal drain records its outcomes in, anchored as a server anchors it.
"""

# test-case-name: tests.marketing_iface.test_outbox, tests.marketing_iface.test_contract, tests.marketing_iface.test_reconcile, tests.marketing_iface.test_reversal_outbox

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from sqlalchemy import delete, select

from cardmgmt import audit
from cardmgmt.db import Database, make_engine
from cardmgmt.marketing import Account, MarketingSystem
from cardmgmt.models import Batch, Card, Factory, Recharge
from cardmgmt.system import CardSystem
from marketing_iface.null import NullMarketing
from marketing_iface.outbox import PostingLog
from marketing_iface.standin import SAMPLE_ACCOUNTS, accounts, load_accounts, recharge_interface


def sample_null_marketing() -> NullMarketing:
    """The in-memory marketing system, holding the sample accounts with their sample balances."""
    return NullMarketing([a.account() for a in SAMPLE_ACCOUNTS])


def posting_log(system: CardSystem, who: str = "server T") -> PostingLog:
    """Where a drain run as ``who`` logs reversal outcomes: ``system``'s operation log, anchored to its anchor file."""
    keys = system.keys()

    def anchor(seq: int, entry_hash: str) -> None:
        audit.anchor(system.settings.audit_anchor_file, keys.system_private, keys.fingerprint, seq, entry_hash)

    return PostingLog(keys.audit_key, who, anchor)


def reset_standin(url: str) -> None:
    """Back to exactly the sample accounts, with their sample balances, and no postings."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(recharge_interface))
        conn.execute(delete(accounts))
        load_accounts(conn, SAMPLE_ACCOUNTS)
    engine.dispose()


def balances(marketing: MarketingSystem) -> dict[str, int]:
    """Every sample account's balance, as the marketing system reports it."""
    found: dict[str, int] = {}
    for a in SAMPLE_ACCOUNTS:
        acct: Account | None = marketing.lookup_account(a.account_no)
        assert acct is not None
        found[a.account_no] = acct.balance
    return found


class Ledger:
    """Writes recharge records straight into a card database (the recharge core is not needed for these tests)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.count = 0
        with db.transaction() as s:
            factory = Factory(name=f"F-{uuid.uuid4().hex[:6]}", public_key_pem="-", fingerprint="0" * 32)
            s.add(factory)
            s.flush()
            batch = Batch(
                batch_no=f"B-{uuid.uuid4().hex[:6]}", face_value=5000, quantity=1000, box_size=100,
                expiry=dt.date(2030, 12, 31), first_serial="900000000000", last_serial="900000000999",
                factory_id=factory.id, new_card_digest="0" * 64, created_by="alice",
            )
            s.add(batch)
            s.flush()
            self.batch_id = batch.id

    def add(self, account_no: str, amount: int, committed_at: dt.datetime, *, channel: str = "hotline") -> int:
        """One committed recharge, pending in the outbox; its id."""
        self.count += 1
        serial = f"9{self.count:011d}"
        with self.db.transaction() as s:
            card = Card(batch_id=self.batch_id, serial=serial, box_no=1, state="redeemed",
                        pin_hash=hashlib.sha256(serial.encode()).digest())
            s.add(card)
            s.flush()
            r = Recharge(
                key=f"call-{self.count}#1", call_id=f"call-{self.count}", channel=channel, caller="13800138000",
                card_id=card.id, card_serial=serial, account_no=account_no, amount=amount,
                committed_at=committed_at, next_attempt_at=committed_at,
            )
            s.add(r)
            s.flush()
            return r.id

    def rows(self) -> list[Recharge]:
        with self.db.transaction() as s:
            return list(s.scalars(select(Recharge).order_by(Recharge.id)))

    def get(self, recharge_id: int) -> Recharge:
        with self.db.transaction() as s:
            r = s.get(Recharge, recharge_id)
            assert r is not None
            return r

    def update(self, recharge_id: int, **values: object) -> None:
        with self.db.transaction() as s:
            r = s.get(Recharge, recharge_id)
            for k, v in values.items():
                setattr(r, k, v)
