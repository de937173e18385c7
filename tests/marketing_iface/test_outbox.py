"""The outbox worker: every recharge reaches the marketing system exactly once, through outages and crashes.

Card databases on SQLite and on the real PostgreSQL server (the ``system``
fixture); the marketing system is ``NullMarketing`` for most tests, and a
stand-in marketing database on its own throwaway PostgreSQL database for the
real outage and for two workers draining at once.
"""

import datetime as dt
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from cardmgmt.days import as_utc
from cardmgmt.db import Database
from cardmgmt.marketing import MarketingUnavailable, Posting, PostingRejected
from cardmgmt.models import Recharge
from marketing_iface import outbox
from marketing_iface.outbox import DrainResult, backoff, drain, posting_for
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import SAMPLE_ACCOUNTS, create_standin
from testkit.databases import pg_database, pg_outage
from testkit.marketing import balances, sample_null_marketing

UTC = dt.UTC
T0 = dt.datetime(2024, 3, 1, 2, 0, tzinfo=UTC)
SECOND = dt.timedelta(seconds=1)
LATER = T0 + dt.timedelta(minutes=1)  # every record add_three makes is due by then


@pytest.fixture
def null():
    return sample_null_marketing()


def add_three(ledger) -> list[int]:  # type: ignore[no-untyped-def]
    return [
        ledger.add("3100000001", 5000, T0),
        ledger.add("3100000002", 10_000, T0 + SECOND),
        ledger.add("3100000001", 2000, T0 + 2 * SECOND),
    ]


def test_drain_posts_every_due_record_once(system, ledger, null):
    ids = add_three(ledger)
    before = balances(null)
    now = T0 + dt.timedelta(minutes=1)
    assert drain(system.db, null, now) == DrainResult(posted=3)
    rows = ledger.rows()
    assert [r.post_status for r in rows] == ["posted"] * 3
    assert all(as_utc(r.posted_at) == now for r in rows)
    assert [r.post_attempts for r in rows] == [1, 1, 1]
    assert sorted(null.postings) == sorted(r.ref for r in rows)
    assert null.postings[ledger.get(ids[1]).ref] == posting_for(ledger.get(ids[1]))
    after = balances(null)
    assert after["3100000001"] == before["3100000001"] + 7000
    assert after["3100000002"] == before["3100000002"] + 10_000
    assert drain(system.db, null, now) == DrainResult()


def test_drain_takes_an_engine_too(system, ledger, null):
    add_three(ledger)
    assert drain(system.db.engine, null, T0 + dt.timedelta(minutes=1)) == DrainResult(posted=3)


def test_the_posting_carries_the_record(system, ledger):
    rid = ledger.add("3100000005", 5000, dt.datetime(2024, 3, 1, 17, 0, tzinfo=UTC), channel="web")
    r = ledger.get(rid)
    # 17:00 UTC on 1 March is 01:00 on 2 March in Beijing: the reference carries the business day.
    assert posting_for(r) == Posting(
        recharge_ref=f"240302{rid:08d}", account_no="3100000005", amount=5000, card_serial=r.card_serial,
        channel="web", recharged_at=dt.datetime(2024, 3, 1, 17, 0, tzinfo=UTC),
    )


def test_records_not_yet_due_wait(system, ledger, null):
    ids = add_three(ledger)
    ledger.update(ids[0], next_attempt_at=T0 + dt.timedelta(hours=1))
    assert drain(system.db, null, T0 + dt.timedelta(minutes=1)) == DrainResult(posted=2)
    assert ledger.get(ids[0]).post_status == "pending"
    assert drain(system.db, null, T0 + dt.timedelta(hours=1)) == DrainResult(posted=1)


def test_limit_takes_the_oldest_first(system, ledger, null):
    ids = [ledger.add("3100000001", 100 * (i + 1), T0) for i in range(5)]
    assert drain(system.db, null, T0, limit=2) == DrainResult(posted=2)
    assert [ledger.get(i).post_status for i in ids] == ["posted"] * 2 + ["pending"] * 3


def test_outage_loses_nothing_counts_attempts_and_backs_off(system, ledger, null):
    ids = add_three(ledger)
    before = balances(null)
    null.available = False
    # The first failure stops the drain: the others are not tried (or charged an attempt).
    assert drain(system.db, null, T0) == DrainResult(failed=1)
    first = ledger.get(ids[0])
    assert (first.post_status, first.post_attempts) == ("pending", 1)
    assert as_utc(first.next_attempt_at) == T0 + SECOND
    assert "unavailable" in first.last_error
    assert [ledger.get(i).post_attempts for i in ids[1:]] == [0, 0]

    # Retried as each backoff runs out: 1, 2, 4, ... seconds.  The oldest
    # record is the probe; the ones behind it are not charged attempts.
    due = T0 + SECOND
    waits = []
    for _ in range(10):
        assert drain(system.db, null, due) == DrainResult(failed=1)
        r = ledger.get(ids[0])
        nxt = as_utc(r.next_attempt_at)
        waits.append((nxt - due).total_seconds())
        due = nxt
    assert waits == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert [ledger.get(i).post_attempts for i in ids] == [11, 0, 0]
    assert all(ledger.get(i).post_status == "pending" for i in ids)
    assert null.postings == {}

    null.available = True
    assert drain(system.db, null, due) == DrainResult(posted=3)
    assert len(null.postings) == 3
    after = balances(null)
    assert after["3100000001"] == before["3100000001"] + 7000
    assert after["3100000002"] == before["3100000002"] + 10_000
    assert [ledger.get(i).post_attempts for i in ids] == [12, 1, 1]


class GoesDownAfter:
    """A marketing system that fails after ``n`` batches of postings."""

    def __init__(self, inner, n: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.left = inner, n

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def post_recharges(self, postings: list[Posting], **kw: bool) -> list[bool | PostingRejected]:
        if self.left == 0:
            raise MarketingUnavailable("marketing system unavailable (gone)")
        self.left -= 1
        return self.inner.post_recharges(postings, **kw)


def test_an_outage_midway_stops_the_drain(system, ledger, null, monkeypatch):
    monkeypatch.setattr(outbox, "BATCH", 2)
    ids = [ledger.add("3100000001", 100, T0) for _ in range(5)]
    assert drain(system.db, GoesDownAfter(null, 1), T0) == DrainResult(posted=2, failed=1)
    assert [ledger.get(i).post_status for i in ids] == ["posted", "posted", "pending", "pending", "pending"]
    assert [ledger.get(i).post_attempts for i in ids] == [1, 1, 1, 0, 0]
    assert len(null.postings) == 2  # the failed batch wrote nothing
    assert drain(system.db, null, T0 + SECOND) == DrainResult(posted=3)


class CrashAfterPosting:
    """The worker dies after the marketing system committed the posting, before the card database marks it."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner

    def post_recharges(self, postings: list[Posting], **kw: bool) -> list[bool | PostingRejected]:
        self.inner.post_recharges(postings, **kw)
        raise KeyboardInterrupt("worker killed")


def test_a_crash_between_posting_and_marking_reposts_harmlessly(system, ledger, null):
    ids = add_three(ledger)
    before = balances(null)
    with pytest.raises(KeyboardInterrupt):
        drain(system.db, CrashAfterPosting(null), T0 + SECOND)  # the first two are due: one batch
    due = [ledger.get(i) for i in ids[:2]]
    assert [(r.post_status, r.post_attempts) for r in due] == [("pending", 0)] * 2  # the marks were rolled back
    assert list(null.postings) == [r.ref for r in due]  # but the postings are there
    assert drain(system.db, null, T0 + dt.timedelta(minutes=1)) == DrainResult(posted=1, repeated=2)
    assert all(ledger.get(i).post_status == "posted" for i in ids)
    after = balances(null)
    assert after["3100000001"] == before["3100000001"] + 7000  # credited once, not twice
    assert len(null.postings) == 3


def test_rejected_records_wait_for_a_person_and_do_not_block_others(system, ledger, null):
    ids = add_three(ledger)
    bad = ledger.add("3199999999", 5000, T0)
    assert drain(system.db, null, LATER) == DrainResult(posted=3, rejected=1)
    r = ledger.get(bad)
    assert r.post_status == "rejected"
    assert "no account 3199999999" in r.last_error
    assert r.posted_at is None
    assert drain(system.db, null, T0 + dt.timedelta(days=1)) == DrainResult()
    assert all(ledger.get(i).post_status == "posted" for i in ids)


def test_a_reference_taken_with_other_content_is_rejected(system, ledger, null):
    rid = ledger.add("3100000001", 5000, T0)
    squatter = posting_for(ledger.get(rid))
    null.post_recharge(Posting(squatter.recharge_ref, "3100000001", 9999, "X", "pos", T0))
    assert drain(system.db, null, T0) == DrainResult(rejected=1)
    assert "different content" in ledger.get(rid).last_error


def test_backlog_and_pending_listing(system, ledger, null):
    with system.db.transaction() as s:
        assert outbox.backlog(s) == {"pending": 0, "oldest_pending": None, "rejected": 0,
                                     "reversals_pending": 0, "reversals_rejected": 0}
    ids = add_three(ledger)
    ledger.add("3199999999", 5000, T0 + 3 * SECOND)
    with system.db.transaction() as s:
        assert outbox.backlog(s) == {"pending": 4, "oldest_pending": T0, "rejected": 0,
                                     "reversals_pending": 0, "reversals_rejected": 0}
        assert [r.id for r in outbox.pending(s, limit=2)] == ids[:2]
    drain(system.db, GoesDownAfter(null, 1), T0 + 3 * SECOND)
    drain(system.db, null, T0 + dt.timedelta(minutes=1))
    with system.db.transaction() as s:
        assert outbox.backlog(s) == {"pending": 0, "oldest_pending": None, "rejected": 1,
                                     "reversals_pending": 0, "reversals_rejected": 0}
        assert outbox.pending(s) == []
        assert [r.account_no for r in outbox.pending(s, status="rejected")] == ["3199999999"]


def test_backoff_doubles_from_one_second_up_to_five_minutes():
    assert [backoff(n).total_seconds() for n in range(0, 12)] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff(10**9) == dt.timedelta(seconds=300)


@given(st.integers(min_value=1, max_value=10**6))
def test_backoff_never_shrinks_and_never_exceeds_the_cap(n):
    assert backoff(n) <= backoff(n + 1) <= dt.timedelta(seconds=300)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_reference_does_not_depend_on_the_session_time_zone(system, ledger, null):
    # Two workers whose sessions read timestamps in different zones must post
    # one recharge under one reference, or it would be credited twice.
    rid = ledger.add("3100000001", 5000, dt.datetime(2024, 3, 1, 15, 30, tzinfo=UTC))
    expected = f"240301{rid:08d}"  # 23:30 on 1 March in Beijing
    url = make_url(system.settings.database_url)
    for zone in ("UTC", "Asia/Shanghai", "America/Los_Angeles"):
        db = Database(url.update_query_dict({"options": f"-c TimeZone={zone}"}).render_as_string(hide_password=False))
        try:
            with db.transaction() as s:
                assert posting_for(s.get(Recharge, rid)).recharge_ref == expected
        finally:
            db.dispose()
    assert drain(system.db, null, T0 + dt.timedelta(days=1)) == DrainResult(posted=1)
    assert list(null.postings) == [expected]


class Slow:
    """Makes each posting take a little while, so two workers overlap; records who posted what."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.refs: list[str] = []

    def post_recharges(self, postings: list[Posting], **kw: bool) -> list[bool | PostingRejected]:
        time.sleep(0.002 * len(postings))
        self.refs += [p.recharge_ref for p in postings]
        return self.inner.post_recharges(postings, **kw)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_never_post_the_same_record(system, ledger, null):
    ids = [ledger.add(SAMPLE_ACCOUNTS[i % 12].account_no, 100, T0) for i in range(60)]
    workers = [Slow(null), Slow(null)]
    results: list[DrainResult] = []
    threads = [threading.Thread(target=lambda w=w: results.append(drain(system.db, w, T0))) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.posted for r in results) == len(ids)
    assert sum(r.repeated for r in results) == 0
    assert workers[0].refs and workers[1].refs  # both really worked
    assert not set(workers[0].refs) & set(workers[1].refs)
    assert all(r.post_status == "posted" for r in ledger.rows())


def test_a_real_postgresql_outage_loses_nothing_and_doubles_nothing(system, ledger):
    with pg_database("marketing_outage") as url:
        create_standin(url)
        marketing = SqlMarketing(url)
        try:
            before = balances(marketing)
            ids = add_three(ledger) + [ledger.add("3100000003", 3000, T0)]
            assert drain(system.db, marketing, LATER, limit=1) == DrainResult(posted=1)
            with pg_outage(url):
                # Each drain meets the outage on its first record and stops there.
                for i in range(3):
                    assert drain(system.db, marketing, LATER + i * dt.timedelta(milliseconds=1)) == DrainResult(failed=1)
                assert drain(system.db, marketing, LATER) == DrainResult()  # nothing more is due
                rows = ledger.rows()
                assert [r.post_status for r in rows] == ["posted", "pending", "pending", "pending"]
                assert [r.post_attempts for r in rows] == [1, 1, 1, 1]
                assert all("not currently accepting connections" in r.last_error for r in rows[1:])
            assert drain(system.db, marketing, T0 + dt.timedelta(hours=1)) == DrainResult(posted=3)
            assert drain(system.db, marketing, T0 + dt.timedelta(hours=2)) == DrainResult()
            after = balances(marketing)
            assert after["3100000001"] == before["3100000001"] + 7000
            assert after["3100000002"] == before["3100000002"] + 10_000
            assert after["3100000003"] == before["3100000003"] + 3000
            postings = marketing.postings_for_day(dt.date(2024, 3, 1))
            assert sorted(p.recharge_ref for p in postings) == sorted(ledger.get(i).ref for i in ids)
            # Posting any of them again changes nothing.
            assert not any(marketing.post_recharge(posting_for(ledger.get(i))) for i in ids)
            assert balances(marketing) == after
        finally:
            marketing.close()
