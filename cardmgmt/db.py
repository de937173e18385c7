"""Engines, units of work and the schema's one history (Alembic).

The application never creates tables itself: ``upgrade()`` runs the Alembic
revisions in ``migrations/``, and ``Database`` refuses to work on a database
that is not at the newest revision, with a message saying what to run.

A replicated card database is named by a multi-host URL, libpq's form
``postgresql://user@h1:p1,h2:p2/cards?target_session_attrs=read-write``
(what ``pg_autoctl show uri`` prints) or SQLAlchemy's
``...@/cards?host=h1:p1&host=h2:p2&...``; ``normalise_url`` turns the first
into the second, which is the one SQLAlchemy parses, and psycopg then tries
the hosts in turn for one that takes writes.  ``probe_hosts`` asks each host
on its own what it is (writable, read-only, unreachable), for the servers'
start and the topology's status.
"""

# test-case-name: tests.cardmgmt.test_db_files, tests.cardmgmt.test_system, tests.cardmgmt.test_models

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session

from cardmgmt.errors import FileTooOpen, SchemaError

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


# Seconds psycopg waits for each host of a multi-host URL before trying the next (unless the URL says).
CONNECT_TIMEOUT = 3


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs, and SQLAlchemy's form for several hosts."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return _hosts_to_query(url)


def _hosts_to_query(url: str) -> str:
    """``scheme://user@h1:p1,h2:p2/db?q`` → ``scheme://user@/db?host=h1:p1&host=h2:p2&q`` (other URLs unchanged)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return url
    path, qmark, query = tail.partition("?")
    hosts = "&".join(f"host={h}" for h in hostlist.split(",") if h)
    return f"{scheme}://{userinfo}{at}/{path}?{hosts}{'&' + query if query else ''}"


def database_hosts(url: str) -> list[str]:
    """The ``host:port`` entries a PostgreSQL URL names, in the order they are tried."""
    parsed = make_url(normalise_url(url))
    hosts = parsed.query.get("host")
    if hosts:
        return [hosts] if isinstance(hosts, str) else list(hosts)
    return [f"{parsed.host or 'localhost'}:{parsed.port or 5432}"]


def probe_hosts(url: str, timeout: float = CONNECT_TIMEOUT) -> dict[str, str]:
    """Each host of a PostgreSQL URL on its own: ``writable``, ``read-only`` or ``unreachable: <reason>``."""
    import psycopg

    parsed = make_url(normalise_url(url))
    out = {}
    for entry in database_hosts(url):
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "5432")
        try:
            with psycopg.connect(host=host, port=int(port or 5432), dbname=parsed.database, user=parsed.username,
                                 password=parsed.password, connect_timeout=max(1, int(timeout))) as conn:
                in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                out[entry] = "read-only" if in_recovery and in_recovery[0] else "writable"
        except psycopg.Error as e:
            out[entry] = f"unreachable: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
    return out


def connection_problem(url: str, error: BaseException) -> str:
    """One line saying why no unit of work could start on ``url`` (the driver's own message is several)."""
    orig = getattr(error, "orig", error)
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    try:
        hosts = database_hosts(url)
    except ArgumentError:
        hosts = []
    if "target_session_attrs=read-write" in normalise_url(url) or len(hosts) > 1:
        return f"no writable database host among {', '.join(hosts)}: {first}"
    return f"cannot open the database: {first}"


def make_engine(url: str, *, pool_size: int | None = None, pre_ping: bool = True) -> Engine:
    """An engine for ``url``, with SQLite set up for several processes at once.

    ``pool_size`` (PostgreSQL) keeps that many connections open, for a server
    whose thread pool has as many threads; ``pre_ping=False`` saves the
    round trip that tests each connection as it is taken from the pool: a
    connection broken meanwhile then fails its one statement, and SQLAlchemy
    replaces the whole pool's connections.
    """
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SchemaError(f"{url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            owner_only_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # Several hosts: one that is gone costs each new connection at most this long before the next is tried.
    several = not isinstance(parsed.query.get("host", ""), str)
    connect_args = {"connect_timeout": CONNECT_TIMEOUT} if several and "connect_timeout" not in parsed.query else {}
    if pool_size is None:
        return create_engine(url, pool_pre_ping=pre_ping, connect_args=connect_args)
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=pool_size, max_overflow=4, connect_args=connect_args)


def owner_only_file(path: Path) -> None:
    """Make sure an SQLite database file exists and only its owner can open it.

    The card database holds operator password hashes and the stand-in
    marketing database customers' names; SQLite would create either with the
    process's umask (usually 0644).  A new file is created 0600 here first
    (SQLite gives its -wal and -shm files the database file's mode), and an
    existing file open to others is refused rather than silently tightened, so
    whoever opened it up hears about it.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise FileTooOpen(f"database file {path} is open to other users; chmod 600 it") from None


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (the newest by default)."""
    command.upgrade(alembic_config(engine), revision)


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_postgresql(session_or_engine: Session | Engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "postgresql"


class Database:
    """One card database: hands out units of work on a schema known to be current."""

    def __init__(self, url: str, *, pool_size: int | None = None, pre_ping: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, pre_ping=pre_ping)

    def check_schema(self) -> None:
        """Raise ``SchemaError`` unless the database is at the newest revision."""
        try:
            current = current_revision(self.engine)
        except OperationalError as e:
            raise SchemaError(connection_problem(self.url, e)) from None
        if current != head_revision():
            raise SchemaError(
                f"database schema is at {current or 'nothing'}, expected {head_revision()}; "
                "run `cli.py db upgrade`"
            )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def dialect_insert(dialect_name: str, table: Table) -> Any:
    """An ``INSERT`` for ``table`` that understands ``ON CONFLICT``, for PostgreSQL or SQLite."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"only PostgreSQL and SQLite are supported, not {dialect_name}")


def bulk_insert(session: Session, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert many rows in the session's transaction: ``COPY`` on PostgreSQL, ``executemany`` elsewhere.

    A million cards is a few seconds this way; one ORM object per row would be
    minutes and gigabytes.
    """
    if not rows:
        return
    if is_postgresql(session):
        raw = session.connection().connection.dbapi_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    placeholders = ", ".join("?" for _ in columns)
    raw = session.connection().connection.dbapi_connection
    raw.cursor().executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)
