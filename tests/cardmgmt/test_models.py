"""The declared models against the migrated database: state columns and their CHECK constraints, on each backend.

The migration tests here make their own databases (an SQLite file, a new
PostgreSQL database on the test server) to start from an older revision.
"""

import datetime as dt
import os
import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from sqlalchemy import String, inspect, text
from sqlalchemy.exc import IntegrityError, StatementError

from cardmgmt.db import alembic_config, current_revision, head_revision, make_engine, upgrade
from cardmgmt.models import Base, Card, IssueRequest, Quote, Recharge, Reversal, SmsNotice, one_of
from cardmgmt.states import CardState, NoticeStatus, PostStatus, QuoteState, RequestStatus, ReversalStatus

# Every state column: its enum and the CHECK constraint that keeps the database to it.
STATE_COLUMNS = [
    (Card.__table__.c.state, CardState),
    (Card.__table__.c.prior_state, CardState),
    (Quote.__table__.c.state, QuoteState),
    (Recharge.__table__.c.post_status, PostStatus),
    (IssueRequest.__table__.c.status, RequestStatus),
    (SmsNotice.__table__.c.status, NoticeStatus),
    (Reversal.__table__.c.status, ReversalStatus),
    (Reversal.__table__.c.post_status, PostStatus),
]
IDS = [f"{c.table.name}.{c.name}" for c, _ in STATE_COLUMNS]


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize(("column", "enum"), STATE_COLUMNS, ids=IDS)
def test_state_columns_are_varchar_of_the_enum(column, enum):
    # VARCHAR in the database, so COPY and raw executemany write plain strings.
    assert isinstance(column.type, String) and column.type.length == 16
    assert column.type.enums == [m.value for m in enum]
    assert max(len(m.value) for m in enum) <= column.type.length


@pytest.mark.parametrize(("column", "enum"), STATE_COLUMNS, ids=IDS)
def test_the_database_admits_exactly_the_enums_values(engine, column, enum):
    """The migrated CHECK constraint lists the enum's values: a new state needs a new migration."""
    name = f"ck_{column.table.name}_{column.name}"
    checks = {c["name"]: c["sqltext"] for c in inspect(engine).get_check_constraints(column.table.name)}
    assert name in checks, f"no CHECK constraint {name}; write a migration"
    assert set(re.findall(r"'([^']*)'", checks[name])) == {m.value for m in enum}
    declared = [c for c in column.table.constraints if c.name == name]
    assert len(declared) == 1 and str(declared[0].sqltext) == str(one_of(column.table.name, column.name, enum).sqltext)


def test_a_state_outside_the_enum_is_refused_by_the_database(engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO halls (code, name) VALUES ('H1', 'hall')"))
        hall = conn.execute(text("SELECT id FROM halls")).scalar_one()
    with pytest.raises(IntegrityError, match="ck_issue_requests_status"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO issue_requests (face_value, quantity, hall_id, status, reason, requested_by, requested_at)"
                " VALUES (5000, 1, :hall, 'lost', 'r', 'alice', CURRENT_TIMESTAMP)"
            ),
            {"hall": hall},
        )


def test_a_state_outside_the_enum_is_refused_before_the_database(engine):
    with pytest.raises(StatementError, match="lost"), engine.begin() as conn:
        conn.execute(Card.__table__.update().where(Card.__table__.c.id == 0).values(state="lost"))


def test_states_read_back_as_members(engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO halls (code, name) VALUES ('H1', 'hall')"))
        hall = conn.execute(text("SELECT id FROM halls")).scalar_one()
        conn.execute(
            IssueRequest.__table__.insert(),
            {"face_value": 5000, "quantity": 1, "hall_id": hall, "status": "pending", "reason": "r",
             "requested_by": "alice", "requested_at": dt.datetime.now(dt.UTC)},
        )
        status = conn.execute(IssueRequest.__table__.select()).one().status
    assert status is RequestStatus.PENDING


def test_every_state_column_is_listed_here():
    enums = (CardState, QuoteState, PostStatus, RequestStatus, NoticeStatus, ReversalStatus)
    typed = [
        f"{t.name}.{c.name}" for t in Base.metadata.sorted_tables for c in t.columns
        if getattr(c.type, "enum_class", None) in enums
    ]
    assert sorted(typed) == sorted(IDS)


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request, tmp_path) -> Iterator[str]:
    """An empty database with no schema at all, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    admin_url = os.environ.get("CARDS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"cards_mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_state_constraints_migrate_with_rows_in_place(blank_url):
    """0004 on a database with cards that quotes and recharges refer to; then down and up again."""
    engine = make_engine(blank_url)
    try:
        upgrade(engine, "0003")
        now = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO factories (id, name, public_key_pem, fingerprint, registered_at)"
                              " VALUES (1, 'F1', 'k', 'fp', :now)"), {"now": now})
            conn.execute(text("INSERT INTO batches (id, batch_no, face_value, quantity, box_size, expiry, first_serial,"
                              " last_serial, factory_id, new_card_digest, created_by, created_at) VALUES (1, 'B1', 5000,"
                              " 2, 1, :day, '000000000018', '000000000026', 1, 'd', 'alice', :now)"),
                         {"day": dt.date(2030, 1, 1), "now": now})
            conn.execute(text("INSERT INTO cards (id, batch_id, serial, box_no, pin_hash, state, prior_state)"
                              " VALUES (1, 1, '000000000018', 1, :a, 'frozen', 'issued'),"
                              " (2, 1, '000000000026', 1, :b, 'redeemed', NULL)"), {"a": b"a" * 32, "b": b"b" * 32})
            conn.execute(text("INSERT INTO recharge_quotes (key, call_id, channel, caller, account_no, card_id, amount,"
                              " state, hold_until, created_at) VALUES ('c#1', 'c', 'hotline', '', '3100000001', 2, 5000,"
                              " 'committed', :now, :now)"), {"now": now})
            conn.execute(text("INSERT INTO recharges (key, call_id, channel, caller, card_id, card_serial, account_no,"
                              " amount, committed_at, post_status, post_attempts, next_attempt_at) VALUES ('c#1', 'c',"
                              " 'hotline', '', 2, '000000000026', '3100000001', 5000, :now, 'pending', 0, :now)"),
                         {"now": now})
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            # 0008: a card frozen while issued (redeemable then) returns to sold, still redeemable.
            assert conn.execute(text("SELECT state, prior_state FROM cards ORDER BY id")).all() == [
                ("frozen", "sold"), ("redeemed", None)]
            assert conn.execute(text("SELECT card_id FROM recharges")).scalar_one() == 2
            if engine.dialect.name == "sqlite":
                # Enforcement, switched off while tables were copied, is back on for the pool's connections.
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        with pytest.raises(IntegrityError, match="ck_cards_state"), engine.begin() as conn:
            conn.execute(text("UPDATE cards SET state = 'lost' WHERE id = 1"))
        command.downgrade(alembic_config(engine), "0003")
        with engine.begin() as conn:
            conn.execute(text("UPDATE cards SET state = 'lost' WHERE id = 1"))
            conn.execute(text("UPDATE cards SET state = 'frozen' WHERE id = 1"))
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_migrations_match_the_models(database_url):
    """Alembic's history and the declared models describe the same schema, on each backend."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_0010_down_turns_resolved_postings_back_into_rejected_ones(blank_url):
    engine = make_engine(blank_url)
    try:
        upgrade(engine)
        now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO factories (id, name, public_key_pem, fingerprint, registered_at)"
                              " VALUES (1, 'F1', 'k', 'fp', :now)"), {"now": now})
            conn.execute(text("INSERT INTO batches (id, batch_no, face_value, quantity, box_size, expiry, first_serial,"
                              " last_serial, factory_id, new_card_digest, created_by, created_at) VALUES (1, 'B1', 5000,"
                              " 1, 1, :day, '000000000018', '000000000018', 1, 'd', 'alice', :now)"),
                         {"day": dt.date(2030, 1, 1), "now": now})
            conn.execute(text("INSERT INTO cards (id, batch_id, serial, box_no, pin_hash, state)"
                              " VALUES (1, 1, '000000000018', 1, :a, 'redeemed')"), {"a": b"a" * 32})
            conn.execute(text("INSERT INTO recharges (id, key, call_id, channel, caller, card_id, card_serial,"
                              " account_no, amount, committed_at, post_status, post_attempts, next_attempt_at)"
                              " VALUES (1, 'c#1', 'c', 'hotline', '', 1, '000000000018', '3100000001', 5000, :now,"
                              " 'resolved', 1, :now)"), {"now": now})
            conn.execute(text("INSERT INTO reversals (ref, recharge_id, original_ref, account_no, card_serial, channel,"
                              " amount, status, reason, filed_by, filed_at, post_attempts) VALUES ('26113000000001R', 1,"
                              " '26113000000001', '3100000001', '000000000018', 'hotline', 5000, 'pending', 'r',"
                              " 'alice', :now, 0)"), {"now": now})
        with pytest.raises(IntegrityError, match="ck_reversals_status"), engine.begin() as conn:
            conn.execute(text("UPDATE reversals SET status = 'lost'"))
        with pytest.raises(IntegrityError, match="reversals"), engine.begin() as conn:  # one reversal per recharge
            conn.execute(text("INSERT INTO reversals (ref, recharge_id, original_ref, account_no, card_serial, channel,"
                              " amount, status, reason, filed_by, filed_at, post_attempts) VALUES ('X', 1, 'X',"
                              " '3100000001', '000000000018', 'hotline', 5000, 'pending', 'r', 'alice', :now, 0)"),
                         {"now": now})
        command.downgrade(alembic_config(engine), "0009")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT post_status FROM recharges")).scalar_one() == "rejected"
            assert "reversals" not in inspect(conn).get_table_names()
        with pytest.raises(IntegrityError, match="ck_recharges_post_status"), engine.begin() as conn:
            conn.execute(text("UPDATE recharges SET post_status = 'resolved'"))
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
