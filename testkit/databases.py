"""Throwaway databases for tests and benchmarks: migrated card databases on SQLite and PostgreSQL, made and dropped.

PostgreSQL databases are created on the server named by ``CARDS_TEST_PG``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``), each with a
random name under a prefix, and dropped ``WITH (FORCE)`` when done; nothing
else on that server is touched.  When the server cannot be reached,
``PostgresUnavailable`` says so in one line: the suite's PostgreSQL variants
fail on it rather than skip.  ``pg_outage`` takes a database off the air
(new connections refused, open ones ended) to stand for a server that died.
"""

# test-case-name: tests.testkit.test_databases, tests.marketing_iface.test_outbox, tests.integration.test_server_pair

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cardmgmt.db import make_engine, upgrade
from cardmgmt.models import Base

PG_ADMIN_URL = os.environ.get("CARDS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class PostgresUnavailable(Exception):
    """The PostgreSQL server the tests need cannot be reached; the message says where and why."""


def pg_admin() -> psycopg.Connection:
    """An autocommit connection to the server's maintenance database, for CREATE/DROP/ALTER DATABASE."""
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        raise PostgresUnavailable(
            f"PostgreSQL is required for these tests and is not reachable at {PG_ADMIN_URL}: {e}") from None


def pg_url(name: str) -> str:
    """The URL of database ``name`` on the tests' PostgreSQL server."""
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def create_database(prefix: str) -> str:
    """A new, empty PostgreSQL database named ``<prefix>_<random>``; its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    """Drop a database made by ``create_database``, even one taken off the air or still in use."""
    with pg_admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_reachable(name: str, reachable: bool) -> None:
    """Take a database off the air (as if its server stopped) or bring it back."""
    with pg_admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if reachable else "false"}')
        if not reachable:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


@contextmanager
def pg_database(prefix: str = "test") -> Iterator[str]:
    """A new, empty PostgreSQL database for as long as the block runs; its URL."""
    name = create_database(prefix)
    try:
        yield pg_url(name)
    finally:
        drop_database(name)


@contextmanager
def pg_outage(url: str) -> Iterator[None]:
    """The database at ``url`` refuses new connections and loses its open ones, until the block ends."""
    name = make_url(url).database
    assert name, f"{url} names no database"
    set_reachable(name, False)
    try:
        yield
    finally:
        set_reachable(name, True)


def migrate(url: str) -> str:
    """Bring the card database at ``url`` to the newest schema with ``alembic upgrade head``; the URL."""
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def empty_card_database(url: str) -> None:
    """Delete every row of a migrated card database, keeping its schema (between tests, faster than migrating)."""
    engine = make_engine(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f"DELETE FROM {t}"))
    engine.dispose()
