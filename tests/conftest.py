"""Shared fixtures: throwaway card databases on SQLite and on the real PostgreSQL server.

Every test that asks for ``system`` (or ``database_url``) runs twice: once on
an SQLite file and once on a fresh database created for this run on the
PostgreSQL server at 127.0.0.1:5432 (override with ``CARDS_TEST_PG``).  The
PostgreSQL variant never skips: if the server cannot be reached, those tests
fail and say so.  Each backend's database is built once per run by
``alembic upgrade head`` and emptied between tests.

The machinery lives in ``testkit`` (``databases``, ``keys``, ``factory``,
``install``, ``lifecycle``), which benchmarks and the demo share; the
fixtures here only give it pytest's lifetimes.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete
from twisted.internet.selectreactor import SelectReactor

from cardmgmt.context import Role
from cardmgmt.db import Database
from cardmgmt.models import RequestNonce
from cardmgmt.system import CardSystem
from testkit import databases
from testkit.dbcluster import DbTopology, TopologyError
from testkit.factory import make_factory_keys
from testkit.install import PASSWORDS, settings_for
from testkit.keys import copy_key_dir, make_key_dir
from testkit.lifecycle import Bench
from testkit.live_api import running_reactor


@pytest.fixture(scope="session")
def postgresql_database() -> Iterator[str]:
    """A new, migrated PostgreSQL database for this test run; dropped at the end."""
    try:
        name = databases.create_database("cards_test")
    except databases.PostgresUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    yield databases.migrate(databases.pg_url(name))
    databases.drop_database(name)


@pytest.fixture(scope="session")
def db_topology() -> Iterator[DbTopology]:
    """The card database's failover topology (pg_auto_failover monitor, primary, synchronous standby), once per run.

    Throwaway clusters on free ports under /tmp, removed at the end; tests
    that kill a node restart it and wait for the pair to be whole again.
    """
    topo = DbTopology.create()
    try:
        topo.start()
    except TopologyError as e:
        topo.stop()
        pytest.fail(str(e), pytrace=False)
    try:
        yield topo
    finally:
        topo.stop()


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return databases.migrate(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'cards.db'}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated, empty card database on each backend."""
    url = request.getfixturevalue(f"{request.param}_database")
    yield url
    databases.empty_card_database(url)


@pytest.fixture(scope="session")
def master_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key directory made per run (RSA generation is slow), copied for each test."""
    return make_key_dir(tmp_path_factory.mktemp("master") / "keys")


@pytest.fixture
def key_dir(master_keys: Path, tmp_path: Path) -> Path:
    return copy_key_dir(master_keys, tmp_path / "keys")


@pytest.fixture(scope="session")
def factory_key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The stand-in factory's key pair: (private PEM, public PEM)."""
    return make_factory_keys(tmp_path_factory.mktemp("factory"))


@pytest.fixture
def system(database_url: str, key_dir: Path) -> Iterator[CardSystem]:
    """An initialised installation whose first administrator, alice, is operating."""
    s = CardSystem(settings_for(database_url, key_dir, "alice"))
    s.initialise("alice", PASSWORDS["alice"])
    yield s
    s.close()


@pytest.fixture
def bench(system: CardSystem, tmp_path: Path, factory_key_files: tuple[Path, Path]) -> Iterator[Bench]:
    """A ``testkit.lifecycle.Bench`` on a fresh installation, with finance officer bob."""
    b = Bench(system, tmp_path, factory_key_files)
    b.add_operator("bob", Role.FINANCE)
    yield b
    b.close_others()


@pytest.fixture
def live_reactor() -> Iterator[SelectReactor]:
    """A reactor of its own, running in a daemon thread for the length of one test."""
    with running_reactor() as reactor:
        yield reactor


@pytest.fixture
def api_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The card database, on SQLite and on PostgreSQL (the test runs once for each)."""
    d = Database(database_url)
    yield d
    d.dispose()


@pytest.fixture
def sqlite_db(sqlite_database: str) -> Iterator[Database]:
    """The card database on SQLite only, for tests about HTTP that touch nothing but the nonces."""
    d = Database(sqlite_database)
    yield d
    with d.transaction() as s:
        s.execute(delete(RequestNonce))
    d.dispose()
