"""Fixtures for the marketing interface: stand-in marketing databases and recharge records.

The stand-in marketing database is another system's database, so it is never
the card database: on PostgreSQL each one is its own throwaway database on
the server at 127.0.0.1:5432 (``CARDS_TEST_PG``), made with
``testkit.databases``; on SQLite it is its own file.  PostgreSQL variants
never skip.  The helpers the tests call (``balances``, ``reset_standin``,
``Ledger``...) are in ``testkit.marketing``.
"""

from collections.abc import Iterator

import pytest

from cardmgmt.system import CardSystem
from marketing_iface.standin import create_standin
from testkit.databases import pg_database
from testkit.marketing import Ledger, create_billing


@pytest.fixture(scope="session")
def pg_standin_database() -> Iterator[str]:
    """One stand-in marketing database on PostgreSQL for the run; tests ``reset_standin`` it before use."""
    with pg_database("marketing_standin") as url:  # PostgresUnavailable fails the tests that need it, naming the server
        create_standin(url)
        yield url


@pytest.fixture(scope="session")
def pg_billing_database() -> Iterator[str]:
    """One database of the second marketing schema (``testkit.marketing.create_billing``) on PostgreSQL for the run."""
    with pg_database("marketing_billing") as url:
        create_billing(url)
        yield url


@pytest.fixture
def ledger(system: CardSystem) -> Ledger:
    return Ledger(system.db)
