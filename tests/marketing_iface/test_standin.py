"""The stand-in marketing database: schema, trigger and sample accounts (SQLite and the real PostgreSQL)."""

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, exc, func, insert, select, update

from cardmgmt.db import make_engine
from cardmgmt.marketing import Posting, PostingRejected
from marketing_iface.standin import (
    SAMPLE_ACCOUNTS,
    StandinOutdated,
    accounts,
    check_posting,
    create_standin,
    recharge_interface,
)
from testkit.databases import pg_database

AT = dt.datetime(2024, 3, 1, 2, 30, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A database with nothing in it yet, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'marketing.db'}"
    else:
        with pg_database("standin_test") as url:
            yield url


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    e = make_engine(empty_url)
    yield e
    e.dispose()


def balance(engine: Engine, account_no: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(accounts.c.balance).where(accounts.c.account_no == account_no))  # type: ignore[return-value]


def row(ref: str, account_no: str = "3100000001", amount: int = 5000) -> dict[str, object]:
    return {"recharge_ref": ref, "account_no": account_no, "amount": amount, "card_serial": "900000000001",
            "channel": "hotline", "recharged_at": AT}


def test_sample_accounts_look_like_real_ones():
    numbers = [a.account_no for a in SAMPLE_ACCOUNTS]
    assert len(SAMPLE_ACCOUNTS) == 12
    assert len(set(numbers)) == len(numbers)
    assert all(re.fullmatch(r"\d{10}", n) for n in numbers)
    assert all(re.fullmatch(r"[\u4e00-\u9fff]{2,4}", a.holder_name) for a in SAMPLE_ACCOUNTS)
    assert any(a.balance < 0 for a in SAMPLE_ACCOUNTS) and any(a.balance > 0 for a in SAMPLE_ACCOUNTS)
    assert all(isinstance(a.balance, int) for a in SAMPLE_ACCOUNTS)


def test_create_is_idempotent_and_keeps_balances(empty_url, engine):
    create_standin(empty_url)
    with engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.account_no == "3100000001").values(balance=1))
        conn.execute(insert(recharge_interface).values(row("R1")))
    create_standin(empty_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(accounts)) == 12
        assert conn.scalar(select(func.count()).select_from(recharge_interface)) == 1
    assert balance(engine, "3100000001") == 5001
    # The trigger was not doubled by the second create.
    with engine.begin() as conn:
        conn.execute(insert(recharge_interface).values(row("R2")))
    assert balance(engine, "3100000001") == 10_001


def test_without_sample_accounts(empty_url, engine):
    create_standin(empty_url, sample_accounts=False)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(accounts)) == 0


def test_the_trigger_credits_each_row_once(empty_url, engine):
    create_standin(empty_url)
    with engine.begin() as conn:
        conn.execute(insert(recharge_interface), [row("R1", amount=5000), row("R2", amount=2000)])
        conn.execute(insert(recharge_interface).values(row("R3", account_no="3100000002", amount=10_000)))
    assert balance(engine, "3100000001") == 12_850 + 7000
    assert balance(engine, "3100000002") == -4_620 + 10_000


def test_the_interface_table_refuses_what_the_marketing_system_would(empty_url, engine):
    create_standin(empty_url)
    with engine.begin() as conn:
        conn.execute(insert(recharge_interface).values(row("R1")))
    for bad in (row("R1"), row("R2", account_no="3199999999"), row("R3", amount=0)):
        with pytest.raises(exc.DBAPIError), engine.begin() as conn:
            conn.execute(insert(recharge_interface).values(bad))
    assert balance(engine, "3100000001") == 12_850 + 5000
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(recharge_interface)) == 1


def test_received_at_is_stamped_by_the_database(empty_url, engine):
    create_standin(empty_url)
    with engine.begin() as conn:
        conn.execute(insert(recharge_interface).values(row("R1")))
        assert conn.scalar(select(recharge_interface.c.received_at)) is not None


def test_check_posting_accepts_a_good_posting():
    check_posting(Posting("24030100000001", "3100000001", 5000, "900000000001", "hotline", AT))


@pytest.mark.parametrize(
    "posting",
    [
        Posting("R" * 25, "3100000001", 5000, "900000000001", "hotline", AT),
        Posting("R1", "3100000001", 2**63, "900000000001", "hotline", AT),
        Posting("R1", "3100000001", 5000, "900000000001", "", AT),
        Posting("R1", "3100000001", 5000, "900000000001", "hotline", "2024-03-01"),  # type: ignore[arg-type]
    ],
)
def test_check_posting_refuses_what_cannot_fit(posting):
    with pytest.raises(PostingRejected):
        check_posting(posting)


def test_a_reversal_row_debits_and_the_sign_must_match(empty_url, engine):
    create_standin(empty_url)
    with engine.begin() as conn:
        conn.execute(insert(recharge_interface).values(row("R1")))
        conn.execute(insert(recharge_interface).values(row("V1", amount=-5000) | {"reverses": "R1"}))
    assert balance(engine, "3100000001") == 12_850
    for bad in (row("R2", amount=-10), row("V2", amount=10) | {"reverses": "R1"},
                row("V3", amount=-5000) | {"reverses": "R1"}):  # R1 is reversed already (unique)
        with pytest.raises(exc.DBAPIError), engine.begin() as conn:
            conn.execute(insert(recharge_interface).values(bad))
    assert balance(engine, "3100000001") == 12_850


def test_accounts_carry_phone_numbers_and_one_has_none(empty_url, engine):
    create_standin(empty_url)
    with engine.connect() as conn:
        phones = dict(conn.execute(select(accounts.c.account_no, accounts.c.phone)).all())
    assert phones["3100000001"] == "13803150001"
    assert phones["3100000006"] is None
    assert all(p is None or re.fullmatch(r"1\d{10}", p) for p in phones.values())


def test_an_outdated_standin_is_refused_until_recreated(empty_url, engine):
    with engine.begin() as conn:  # the shape an earlier version made
        conn.exec_driver_sql("CREATE TABLE accounts (account_no VARCHAR(10) PRIMARY KEY, holder_name VARCHAR(64) "
                             "NOT NULL, address VARCHAR(200) NOT NULL, balance BIGINT NOT NULL DEFAULT 0)")
    with pytest.raises(StandinOutdated, match="accounts has no phone.*--recreate"):
        create_standin(empty_url)
    create_standin(empty_url, recreate=True)
    create_standin(empty_url)
    assert balance(engine, "3100000005") == 35_000
