"""``testkit.databases`` against the real PostgreSQL server (127.0.0.1:5432, ``CARDS_TEST_PG``; never skipped) and SQLite."""

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, inspect, select

from cardmgmt.db import make_engine
from cardmgmt.models import Factory
from testkit import databases

pytestmark = pytest.mark.postgresql


def exists(name: str) -> bool:
    with databases.pg_admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_pg_database_lives_for_the_block() -> None:
    with databases.pg_database("testkit_probe") as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith("testkit_probe_") and exists(name)
    assert not exists(name)


def test_an_outage_refuses_connections_until_it_ends() -> None:
    with databases.pg_database("testkit_outage") as url:
        with databases.pg_outage(url), pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=5).close()
        psycopg.connect(url, connect_timeout=5).close()


def test_a_database_taken_off_the_air_can_still_be_dropped() -> None:
    name = databases.create_database("testkit_drop")
    databases.set_reachable(name, False)
    databases.drop_database(name)
    assert not exists(name)


def test_a_migrated_card_database_is_emptied_but_keeps_its_schema(tmp_path: Path) -> None:
    url = databases.migrate(f"sqlite:///{tmp_path / 'cards.db'}")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(Factory.__table__.insert().values(name="F", public_key_pem="-", fingerprint="0" * 32))
    databases.empty_card_database(url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Factory)).scalar_one() == 0
    assert "cards" in inspect(engine).get_table_names()
    engine.dispose()
