"""The ``MarketingSystem`` contract, run against every implementation.

``SqlMarketing`` runs on a stand-in marketing database on SQLite and on the
real PostgreSQL server (a throwaway database of its own, never the card
database); ``NullMarketing`` runs in memory.  Each test below runs on all
three, so the implementations cannot drift apart.
"""

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager

import pytest

from cardmgmt.days import BUSINESS_TZ
from cardmgmt.marketing import Account, MarketingSystem, MarketingUnavailable, Posting, PostingRejected
from marketing_iface.null import NullMarketing
from marketing_iface.sql import SqlMarketing, one_line, with_connect_timeout
from marketing_iface.standin import create_standin
from testkit.databases import pg_outage
from testkit.marketing import balances, reset_standin, sample_null_marketing

UTC = dt.UTC
AT = dt.datetime(2024, 3, 1, 2, 30, tzinfo=UTC)


@pytest.fixture(params=["sql-sqlite", "sql-postgresql", "null"])
def marketing(request: pytest.FixtureRequest, tmp_path) -> Iterator[MarketingSystem]:  # type: ignore[no-untyped-def]
    if request.param == "null":
        yield sample_null_marketing()
        return
    if request.param == "sql-sqlite":
        url = f"sqlite:///{tmp_path / 'marketing.db'}"
        create_standin(url)
    else:
        url = request.getfixturevalue("pg_standin_database")
        reset_standin(url)
    m = SqlMarketing(url)
    yield m
    m.close()


def posting(ref: str = "24030100000001", account_no: str = "3100000001", amount: int = 5000,
            at: dt.datetime = AT, serial: str = "900000000001") -> Posting:
    return Posting(recharge_ref=ref, account_no=account_no, amount=amount, card_serial=serial,
                   channel="hotline", recharged_at=at)


def test_implements_the_protocol(marketing):
    assert isinstance(marketing, MarketingSystem)


def test_lookup_finds_an_account(marketing):
    acct = marketing.lookup_account("3100000001")
    assert acct == Account("3100000001", "张三明", 12_850)
    assert acct.masked_name == "张*明"


def test_lookup_shows_arrears_as_negative(marketing):
    assert marketing.lookup_account("3100000002") == Account("3100000002", "李四", -4_620)


@pytest.mark.parametrize("account_no", ["3199999999", "", "31000000011", "'; DROP TABLE accounts; --"])
def test_lookup_of_no_such_account_is_none(marketing, account_no):
    assert marketing.lookup_account(account_no) is None


def test_posting_is_written_once_and_credits_once(marketing):
    before = balances(marketing)
    assert marketing.post_recharge(posting()) is True
    assert marketing.post_recharge(posting()) is False
    assert marketing.post_recharge(posting()) is False
    after = balances(marketing)
    assert after.pop("3100000001") == before.pop("3100000001") + 5000
    assert after == before
    assert marketing.postings_for_day(dt.date(2024, 3, 1)) == [posting()]


def test_repeat_with_the_same_instant_in_another_zone_is_a_repeat(marketing):
    assert marketing.post_recharge(posting()) is True
    assert marketing.post_recharge(posting(at=AT.astimezone(BUSINESS_TZ))) is False
    assert marketing.lookup_account("3100000001").balance == 12_850 + 5000


def test_arrears_are_paid_off_by_a_recharge(marketing):
    marketing.post_recharge(posting(account_no="3100000002", amount=5000))
    assert marketing.lookup_account("3100000002").balance == 380


def test_several_postings_each_credit(marketing):
    marketing.post_recharge(posting(ref="R1", amount=5000))
    marketing.post_recharge(posting(ref="R2", amount=10000, serial="900000000002"))
    assert marketing.lookup_account("3100000001").balance == 12_850 + 15_000


def test_a_batch_of_postings_answers_each_in_order(marketing):
    assert marketing.post_recharge(posting(ref="R0")) is True
    results = marketing.post_recharges([
        posting(ref="R1", amount=1000),
        posting(ref="R0"),  # already there: a harmless repeat
        posting(ref="R2", account_no="3199999999"),  # no such account
        posting(ref="R3", account_no="3100000002", amount=2000, serial="900000000003"),
    ])
    assert results[:2] == [True, False] and results[3] is True
    assert isinstance(results[2], PostingRejected) and "no account 3199999999" in str(results[2])
    assert marketing.lookup_account("3100000001").balance == 12_850 + 5000 + 1000
    assert marketing.lookup_account("3100000002").balance == -4_620 + 2000
    assert marketing.post_recharges([]) == []


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 5001},
        {"account_no": "3100000003"},
        {"card_serial": "900000000999"},
        {"channel": "web"},
        {"recharged_at": AT + dt.timedelta(microseconds=1)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_same_reference_with_different_content_is_rejected(marketing, change):
    marketing.post_recharge(posting())
    before = balances(marketing)
    with pytest.raises(PostingRejected, match="different content"):
        marketing.post_recharge(dataclasses.replace(posting(), **change))
    assert balances(marketing) == before
    assert marketing.postings_for_day(dt.date(2024, 3, 1)) == [posting()]


def test_unknown_account_is_rejected_and_nothing_is_written(marketing):
    before = balances(marketing)
    with pytest.raises(PostingRejected, match="no account 3199999999"):
        marketing.post_recharge(posting(account_no="3199999999"))
    assert balances(marketing) == before
    assert marketing.postings_for_day(dt.date(2024, 3, 1)) == []
    # A refused reference is not used up: once right, it is written.
    assert marketing.post_recharge(posting()) is True


@pytest.mark.parametrize(
    "bad",
    [
        {"amount": 0},
        {"amount": -5000},
        {"amount": True},
        {"recharge_ref": "R" * 25},
        {"recharge_ref": ""},
        {"channel": "c" * 17},
        {"card_serial": ""},
    ],
    ids=lambda c: f"{next(iter(c))}={str(next(iter(c.values())))[:5]}",
)
def test_a_posting_that_cannot_fit_is_rejected(marketing, bad):
    before = balances(marketing)
    with pytest.raises(PostingRejected):
        marketing.post_recharge(dataclasses.replace(posting(), **bad))
    assert balances(marketing) == before
    assert marketing.postings_for_day(dt.date(2024, 3, 1)) == []


def test_postings_for_day_cuts_at_midnight_beijing_time(marketing):
    # 2024-03-01 00:00 in UTC+8 is 2024-02-29 16:00 UTC.
    midnight = dt.datetime(2024, 2, 29, 16, 0, tzinfo=UTC)
    tick = dt.timedelta(microseconds=1)
    a = posting("A", at=midnight - tick)  # last instant of 29 February
    b = posting("B", at=midnight, serial="900000000002")  # first instant of 1 March
    c = posting("C", at=midnight + dt.timedelta(days=1) - tick, serial="900000000003")  # last of 1 March
    d = posting("D", at=midnight + dt.timedelta(days=1), serial="900000000004")  # first of 2 March
    for p in (d, c, a, b):
        assert marketing.post_recharge(p)
    assert marketing.postings_for_day(dt.date(2024, 2, 29)) == [a]
    assert marketing.postings_for_day(dt.date(2024, 3, 1)) == [b, c]
    assert marketing.postings_for_day(dt.date(2024, 3, 2)) == [d]
    assert marketing.postings_for_day(dt.date(2024, 3, 3)) == []


def test_postings_come_back_in_utc_whatever_zone_they_were_posted_in(marketing):
    marketing.post_recharge(posting(at=AT.astimezone(BUSINESS_TZ)))
    [back] = marketing.postings_for_day(dt.date(2024, 3, 1))
    assert back.recharged_at == AT
    assert back.recharged_at.utcoffset() == dt.timedelta(0)


# Outages: the same promise from each implementation that can be taken down.


@pytest.fixture(params=["sql-postgresql", "null"])
def downable(request: pytest.FixtureRequest) -> Iterator[tuple[MarketingSystem, Callable[[], AbstractContextManager[None]]]]:
    """A marketing system and a way to take it down for the length of a block."""
    if request.param == "null":
        null = sample_null_marketing()

        @contextmanager
        def switched_off() -> Iterator[None]:
            null.available = False
            try:
                yield
            finally:
                null.available = True

        yield null, switched_off
        return
    url = request.getfixturevalue("pg_standin_database")
    reset_standin(url)
    m = SqlMarketing(url)
    yield m, lambda: pg_outage(url)
    m.close()


def test_an_outage_raises_unavailable_and_changes_nothing(downable):
    marketing, outage = downable
    assert marketing.post_recharge(posting("BEFORE")) is True  # a pooled connection exists when it goes down
    before = balances(marketing)
    with outage():
        for call in (
            lambda: marketing.lookup_account("3100000001"),
            lambda: marketing.post_recharge(posting()),
            lambda: marketing.post_recharges([posting(ref="B1"), posting(ref="B2")]),
            lambda: marketing.postings_for_day(dt.date(2024, 3, 1)),
        ):
            with pytest.raises(MarketingUnavailable) as e:
                call()
            assert "\n" not in str(e.value)
            assert "unavailable" in str(e.value)
    # Back up: nothing was written during the outage, and it works again.
    assert balances(marketing) == before
    assert [p.recharge_ref for p in marketing.postings_for_day(dt.date(2024, 3, 1))] == ["BEFORE"]
    assert marketing.post_recharge(posting()) is True


def test_unreachable_server_is_unavailable_within_the_connect_timeout():
    m = SqlMarketing("postgresql://postgres@127.0.0.1:1/marketing")
    started = time.monotonic()
    with pytest.raises(MarketingUnavailable, match="unavailable \\(account look-up\\): .*refused"):
        m.lookup_account("3100000001")
    assert time.monotonic() - started < 4
    m.close()


def test_a_database_without_the_interface_tables_is_unavailable(tmp_path):
    m = SqlMarketing(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(MarketingUnavailable, match="no such table"):
        m.post_recharge(posting())
    m.close()


def test_null_marketing_switched_off_raises_on_every_call():
    m = NullMarketing([Account("3100000001", "张三明", 0)], available=False)
    with pytest.raises(MarketingUnavailable):
        m.lookup_account("3100000001")
    with pytest.raises(MarketingUnavailable):
        m.post_recharge(posting())
    with pytest.raises(MarketingUnavailable):
        m.postings_for_day(dt.date(2024, 3, 1))
    assert m.postings == {}


def test_connect_timeout_is_added_to_postgresql_urls_only():
    assert with_connect_timeout("postgresql://u:secret@h/db") == "postgresql+psycopg://u:secret@h/db?connect_timeout=3"
    assert with_connect_timeout("postgresql://h/db?connect_timeout=10").endswith("connect_timeout=10")
    assert with_connect_timeout("sqlite:///x.db") == "sqlite:///x.db"


def test_one_line_keeps_the_first_line_of_the_driver_message():
    assert one_line(RuntimeError("connection failed:   refused\n\tIs the server running?")) == "connection failed: refused"
    assert one_line(RuntimeError("")) == "RuntimeError"


# Reversals (冲正): a counter-entry against an original posting, never a deletion.


def reversal(ref: str = "V24030100000001", of: str = "24030100000001", account_no: str = "3100000001",
             amount: int = -5000, at: dt.datetime = AT + dt.timedelta(hours=3)) -> Posting:
    return Posting(recharge_ref=ref, account_no=account_no, amount=amount, card_serial="900000000001",
                   channel="hotline", recharged_at=at, reverses=of)


def test_a_reversal_debits_once_and_is_listed_with_its_day(marketing):
    marketing.post_recharge(posting())
    before = balances(marketing)
    assert marketing.post_recharge(reversal()) is True
    assert marketing.post_recharge(reversal()) is False  # a repeat with the same content is harmless
    after = balances(marketing)
    assert after.pop("3100000001") == before.pop("3100000001") - 5000
    assert after == before
    assert marketing.postings_for_day(dt.date(2024, 3, 1)) == [posting(), reversal()]
    assert marketing.postings_for_day(dt.date(2024, 3, 1))[1].is_reversal


def test_a_reversal_can_take_an_account_into_arrears(marketing):
    marketing.post_recharge(posting(account_no="3100000003", amount=5000))
    marketing.post_recharge(posting(ref="R2", account_no="3100000003", amount=2000, serial="900000000002"))
    assert marketing.post_recharge(reversal(of="24030100000001", account_no="3100000003")) is True
    assert marketing.lookup_account("3100000003").balance == 2000


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"reverses": "24039999999999"}, "not in the marketing system"),
        ({"account_no": "3100000002"}, "does not match its original"),
        ({"amount": -4999}, "does not match its original"),
        ({"amount": -5001}, "does not match its original"),
        ({"account_no": "3199999999"}, "no account 3199999999"),
        ({"amount": 5000}, "must be negative"),
        ({"amount": 0}, "must be negative"),
        ({"reverses": "V24030100000001"}, "cannot reverse itself"),
        ({"reverses": "R" * 25}, "reverses must be"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_a_reversal_that_does_not_match_its_original_is_rejected(marketing, bad, why):
    marketing.post_recharge(posting())
    before = balances(marketing)
    with pytest.raises(PostingRejected, match=why):
        marketing.post_recharge(dataclasses.replace(reversal(), **bad))
    assert balances(marketing) == before
    assert marketing.postings_for_day(dt.date(2024, 3, 1)) == [posting()]
    # The refused reference is not used up.
    assert marketing.post_recharge(reversal()) is True


def test_an_original_is_reversed_at_most_once(marketing):
    marketing.post_recharge(posting())
    assert marketing.post_recharge(reversal()) is True
    with pytest.raises(PostingRejected, match="already reversed by V24030100000001"):
        marketing.post_recharge(reversal(ref="V2"))
    with pytest.raises(PostingRejected, match="itself a reversal"):
        marketing.post_recharge(reversal(ref="V3", of="V24030100000001", amount=5000 * -1))
    assert marketing.lookup_account("3100000001").balance == 12_850


def test_a_reversal_reference_with_different_content_is_rejected(marketing):
    marketing.post_recharge(posting())
    marketing.post_recharge(posting(ref="R2", serial="900000000002"))
    marketing.post_recharge(reversal())
    with pytest.raises(PostingRejected, match="different content"):
        marketing.post_recharge(reversal(of="R2"))
    assert marketing.lookup_account("3100000001").balance == 12_850 + 5000


def test_a_recharge_and_its_reversal_in_one_batch(marketing):
    results = marketing.post_recharges([posting(), reversal(), reversal(ref="V2")])
    assert results[:2] == [True, True]
    assert isinstance(results[2], PostingRejected) and "already reversed" in str(results[2])
    assert marketing.lookup_account("3100000001").balance == 12_850


def test_racing_reversals_of_one_original_debit_once(marketing):
    marketing.post_recharge(posting())

    def attempt(i: int) -> bool | PostingRejected:
        try:
            return marketing.post_recharge(reversal(ref=f"V{i}"))
        except PostingRejected as e:
            return e

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(40)))
    assert results.count(True) == 1
    assert all(isinstance(r, PostingRejected) and "already reversed" in str(r) for r in results if r is not True)
    assert marketing.lookup_account("3100000001").balance == 12_850
