"""Fixtures for the marketing interface: stand-in marketing databases, outages, and recharge records.

The stand-in marketing database is another system's database, so it is never
the card database: on PostgreSQL each one is its own throwaway database on
the server at 127.0.0.1:5432 (``CARDS_TEST_PG``), created and dropped here;
on SQLite it is its own file.  PostgreSQL variants never skip.
"""

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url

from cardmgmt.db import Database, make_engine
from cardmgmt.marketing import Account
from cardmgmt.models import Batch, Card, Factory, Recharge
from marketing_iface.null import NullMarketing
from marketing_iface.standin import SAMPLE_ACCOUNTS, accounts, create_standin, load_accounts, recharge_interface
from tests.conftest import PG_ADMIN_URL, _pg_admin

UTC = dt.UTC


@contextmanager
def pg_database(prefix: str = "marketing_test") -> Iterator[str]:
    """A new, empty PostgreSQL database for as long as the block runs; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def pg_outage(url: str) -> Iterator[None]:
    """The database at ``url`` refuses new connections and loses its open ones, until the block ends."""
    name = make_url(url).database
    with _pg_admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        yield
    finally:
        with _pg_admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def sample_null_marketing() -> NullMarketing:
    return NullMarketing([a.account() for a in SAMPLE_ACCOUNTS])


@pytest.fixture(scope="session")
def pg_standin_database() -> Iterator[str]:
    """One stand-in marketing database on PostgreSQL for the run; tests ``reset_standin`` it before use."""
    with pg_database("marketing_standin") as url:
        create_standin(url)
        yield url


def reset_standin(url: str) -> None:
    """Back to exactly the sample accounts, with their sample balances, and no postings."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(recharge_interface))
        conn.execute(delete(accounts))
        load_accounts(conn, SAMPLE_ACCOUNTS)
    engine.dispose()


def balances(marketing) -> dict[str, int]:  # type: ignore[no-untyped-def]
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


@pytest.fixture
def ledger(system) -> Ledger:  # type: ignore[no-untyped-def]
    return Ledger(system.db)
