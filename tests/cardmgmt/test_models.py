"""The declared models against the migrated database: state columns and their CHECK constraints, on each backend."""

import datetime as dt
import re

import pytest
from sqlalchemy import String, inspect, text
from sqlalchemy.exc import IntegrityError, StatementError

from cardmgmt.db import make_engine
from cardmgmt.models import Base, Card, IssueRequest, Quote, Recharge, one_of
from cardmgmt.states import CardState, PostStatus, QuoteState, RequestStatus

# Every state column: its enum and the CHECK constraint that keeps the database to it.
STATE_COLUMNS = [
    (Card.__table__.c.state, CardState),
    (Card.__table__.c.prior_state, CardState),
    (Quote.__table__.c.state, QuoteState),
    (Recharge.__table__.c.post_status, PostStatus),
    (IssueRequest.__table__.c.status, RequestStatus),
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
    enums = (CardState, QuoteState, PostStatus, RequestStatus)
    typed = [
        f"{t.name}.{c.name}" for t in Base.metadata.sorted_tables for c in t.columns
        if getattr(c.type, "enum_class", None) in enums
    ]
    assert sorted(typed) == sorted(IDS)
