"""Tests for recharge_server.jobs: schedules with ``Clock``, leadership gating, failures, and the real jobs' work."""

import datetime as dt
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select
from twisted.internet import defer
from twisted.internet.task import Clock

from cardmgmt import nonces
from cardmgmt.db import Database
from cardmgmt.models import RequestNonce
from recharge_server.jobs import NONCE_RETENTION, Job, JobRunner, standard_jobs
from recharge_server.metrics import Metrics
from testkit.live_api import StubRecharge, run_now

UTC = dt.UTC


class Leader:
    def __init__(self, leading: bool = True) -> None:
        self.leading = leading

    def __call__(self) -> bool:
        return self.leading


def runner(jobs: list[Job], leader: Leader, clock: Clock, run: Any = run_now) -> JobRunner:
    return JobRunner(jobs, is_leader=leader, run_blocking=run, reactor=clock, metrics=Metrics())


def counting(name: str, interval: float, runs: list[str]) -> Job:
    return Job(name, interval, lambda now: runs.append(name))


def test_each_job_runs_on_its_own_schedule_only_while_leading() -> None:
    clock, leader, runs = Clock(), Leader(False), []
    r = runner([counting("outbox", 1, runs), counting("expire", 5, runs), counting("prune", 60, runs)], leader, clock)
    r.startService()
    for _ in range(10):
        clock.advance(1)
    assert runs == []  # standby: nothing
    leader.leading = True
    for _ in range(60):
        clock.advance(1)
    assert runs.count("outbox") == 60 and runs.count("expire") == 12 and runs.count("prune") == 1
    leader.leading = False
    for _ in range(10):
        clock.advance(1)
    assert runs.count("outbox") == 60
    r.stopService()
    assert not any(loop.running for loop in r.loops.values())


def test_a_failing_job_is_counted_and_keeps_its_schedule() -> None:
    clock, calls = Clock(), []

    def boom(now: dt.datetime) -> None:
        calls.append(now)
        raise RuntimeError("marketing system on fire")

    r = runner([Job("outbox", 1, boom)], Leader(), clock)
    r.startService()
    for _ in range(3):
        clock.advance(1)
    assert len(calls) == 3
    assert r.metrics.job_runs[("outbox", "error")] == 3
    assert calls[0] == dt.datetime.fromtimestamp(1, UTC)


def test_a_job_still_running_past_its_time_limit_is_not_started_again() -> None:
    clock, started = Clock(), []

    def stuck(f: Any, *a: Any, **kw: Any) -> defer.Deferred[Any]:
        started.append(f)
        return defer.Deferred()  # the thread never comes back

    r = runner([Job("outbox", 1, lambda now: None, timeout=2)], Leader(), clock, run=stuck)
    r.startService()
    for _ in range(6):
        clock.advance(1)
    assert len(started) == 1
    assert r.metrics.job_runs[("outbox", "error")] == 1  # the timeout


def test_the_standard_jobs(db: Database) -> None:
    from marketing_iface.null import NullMarketing

    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    with db.engine.begin() as conn:
        nonces.record(conn, "a" * 32, now - NONCE_RETENTION - dt.timedelta(seconds=1))
        nonces.record(conn, "b" * 32, now - dt.timedelta(seconds=5))
    with pytest.raises(nonces.Replayed), db.engine.begin() as conn:
        nonces.record(conn, "b" * 32, now)
    recharge = StubRecharge()
    jobs = {
        j.name: j
        for j in standard_jobs(db=db, recharge=recharge, marketing=NullMarketing(), prune_nonces=partial(nonces.prune, db))
    }
    assert {n: j.interval for n, j in jobs.items()} == {
        "outbox": 1.0, "sms": 1.0, "expire-holds": 5.0, "prune-nonces": 60.0, "close-days": 300.0}
    assert jobs["prune-nonces"].work(now) == 1
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(RequestNonce)) == 1
    assert jobs["expire-holds"].work(now) == 0
    assert jobs["outbox"].work(now).posted == 0  # type: ignore[attr-defined]
    assert jobs["sms"].work(now).sent == 0  # type: ignore[attr-defined]
    assert jobs["close-days"].work(now) == 0  # no recharges yet: no day to close


@pytest.mark.parametrize("result,noted", [(0, False), (3, True), ({"posted": 0}, False), ({"posted": 1}, True), (None, False)])
def test_only_results_that_did_something_are_logged(result: Any, noted: bool) -> None:
    from recharge_server.jobs import _worth_noting

    assert _worth_noting(result) is noted


def test_the_outbox_job_posts_reversals_after_their_originals_when_given_a_journal(db: Database) -> None:
    from cardmgmt import audit
    from cardmgmt.models import LogEntry, Reversal
    from cardmgmt.states import PostStatus, ReversalStatus
    from marketing_iface.outbox import DrainResult, PostingLog
    from testkit.marketing import Ledger, balances, sample_null_marketing

    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    ledger = Ledger(db)
    rid = ledger.add("3100000001", 5000, now)
    original = ledger.get(rid)
    with db.transaction() as s:
        s.add(Reversal(ref=original.ref + "R", recharge_id=rid, original_ref=original.ref, account_no="3100000001",
                       card_serial=original.card_serial, channel="hotline", amount=5000,
                       status=ReversalStatus.APPROVED, reason="wrong account", filed_by="alice", filed_at=now,
                       decided_by="bob", decided_at=now, decision_comment="ok", post_status=PostStatus.PENDING,
                       post_attempts=0, next_attempt_at=now))
    marketing = sample_null_marketing()
    before = balances(marketing)
    heads: list[tuple[int, str]] = []
    journal = PostingLog(b"k" * 32, "server A", lambda seq, h: heads.append((seq, h)))
    recharge = StubRecharge()
    prune = partial(nonces.prune, db)
    without = {j.name: j for j in standard_jobs(db=db, recharge=recharge, marketing=marketing, prune_nonces=prune)}
    assert without["outbox"].work(now) == DrainResult(posted=1)  # no journal: recharges only
    jobs = {j.name: j for j in standard_jobs(db=db, recharge=recharge, marketing=marketing, prune_nonces=prune,
                                             journal=journal)}
    assert jobs["outbox"].work(now) == DrainResult(posted=1)
    assert balances(marketing) == before
    with db.transaction() as s:
        [entry] = audit.entries(s, 10)
        assert (entry.operator, entry.action) == ("server A", "reversal.post")
        assert heads == [(entry.seq, entry.hash)]
        assert s.scalar(select(func.count()).select_from(LogEntry)) == 1
