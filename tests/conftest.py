"""Shared fixtures: throwaway card databases on SQLite and on the real PostgreSQL server.

Every test that asks for ``system`` (or ``database_url``) runs twice: once on
an SQLite file and once on a fresh database created for this run on the
PostgreSQL server at 127.0.0.1:5432 (override with ``CARDS_TEST_PG``).  The
PostgreSQL variant never skips: if the server cannot be reached, those tests
fail and say so.  Each backend's database is built once per run by
``alembic upgrade head`` and emptied between tests.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from Crypto.PublicKey import RSA
from sqlalchemy import delete, text
from twisted.internet.selectreactor import SelectReactor

from cardmgmt.config import Settings
from cardmgmt.db import Database, make_engine, upgrade
from cardmgmt.keys import create_keyring
from cardmgmt.models import Base, RequestNonce
from cardmgmt.system import CardSystem
from testkit.live_api import running_reactor

PG_ADMIN_URL = os.environ.get("CARDS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-1", "carol": "carol-secret-1", "dave": "dave-secret-1"}


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is required for these tests and is not reachable at {PG_ADMIN_URL}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def postgresql_database() -> Iterator[str]:
    """A new, migrated PostgreSQL database for this test run; dropped at the end."""
    name = f"cards_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'cards.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated, empty card database on each backend."""
    url = request.getfixturevalue(f"{request.param}_database")
    yield url
    engine = make_engine(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f"DELETE FROM {t}"))
    engine.dispose()


@pytest.fixture(scope="session")
def master_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key directory made per run (RSA generation is slow), copied for each test."""
    d = tmp_path_factory.mktemp("master") / "keys"
    create_keyring(d)
    return d


@pytest.fixture
def key_dir(master_keys: Path, tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    shutil.copytree(master_keys, d)
    os.chmod(d, 0o700)
    return d


@pytest.fixture(scope="session")
def factory_key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The stand-in factory's key pair: (private PEM, public PEM)."""
    d = tmp_path_factory.mktemp("factory")
    key = RSA.generate(2048)
    priv, pub = d / "factory.pem", d / "factory.pub.pem"
    priv.write_bytes(key.export_key())
    os.chmod(priv, 0o600)
    pub.write_bytes(key.public_key().export_key())
    return priv, pub


def settings_for(database_url: str, key_dir: Path, operator: str | None) -> Settings:
    return Settings(database_url=database_url, key_dir=key_dir, operator=operator, password=PASSWORDS.get(operator or ""))


@pytest.fixture
def system(database_url: str, key_dir: Path) -> Iterator[CardSystem]:
    """An initialised installation whose first administrator, alice, is operating."""
    s = CardSystem(settings_for(database_url, key_dir, "alice"))
    s.initialise("alice", PASSWORDS["alice"])
    yield s
    s.close()


@pytest.fixture
def bench(system: CardSystem, tmp_path: Path, factory_key_files: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    """A ``tests.support.Bench`` on a fresh installation, with finance officer bob."""
    from cardmgmt.operators import Role
    from tests.support import Bench

    b = Bench(system, tmp_path, factory_key_files)
    b.add_operator("bob", Role.FINANCE)
    yield b
    for other in b._others.values():
        other.close()


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
