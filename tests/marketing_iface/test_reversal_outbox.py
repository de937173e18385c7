"""Reversals through the outbox into the stand-in marketing database, and rejected postings retried or resolved.

Card databases on SQLite and on the real PostgreSQL server; the marketing
side is the stand-in marketing database through ``SqlMarketing`` (its own
SQLite file, or its own throwaway database on the PostgreSQL server), so the
marketing system's own rules for reversals (original present, same account,
amount negated, once) are the real ones.  The races run on PostgreSQL with
parallel threads.
"""

import datetime as dt
import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import insert, select

from cardmgmt import audit, rejected_postings, reversals
from cardmgmt.context import Permission, Role
from cardmgmt.errors import CardError, ConflictError, IllegalTransition, InvalidInput, NotFound, PermissionDenied
from cardmgmt.marketing import MarketingUnavailable, Posting, PostingRejected
from cardmgmt.models import Recharge, Reversal, SmsNotice
from cardmgmt.states import PostStatus, ReversalStatus
from marketing_iface import outbox
from marketing_iface.outbox import DrainResult, drain, drain_all, drain_reversals, posting_for_reversal
from marketing_iface.reconcile import card_reversals, reconcile
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import SAMPLE_ACCOUNTS, accounts, create_standin
from testkit.marketing import balances, posting_log, reset_standin

UTC = dt.UTC
T0 = dt.datetime(2024, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 on 1 March in Beijing
DAY = dt.date(2024, 3, 1)
APPROVED = T0 + dt.timedelta(hours=3)
LATER = T0 + dt.timedelta(hours=4)
UNKNOWN = "3199999999"  # no such account in the stand-in, until a test opens it


@pytest.fixture
def standin_url(system, tmp_path, request) -> str:  # type: ignore[no-untyped-def]
    if system.settings.database_url.startswith("postgresql"):
        url = request.getfixturevalue("pg_standin_database")
        reset_standin(url)
    else:
        url = f"sqlite:///{tmp_path / 'marketing.db'}"
        create_standin(url)
    return url


@pytest.fixture
def marketing(standin_url) -> Iterator[SqlMarketing]:  # type: ignore[no-untyped-def]
    m = SqlMarketing(standin_url)
    yield m
    m.close()


@pytest.fixture
def journal(system):  # type: ignore[no-untyped-def]
    return posting_log(system)


def open_account(url: str, account_no: str = UNKNOWN) -> None:
    """The marketing side fixes what it refused: the account now exists."""
    m = SqlMarketing(url)
    try:
        with m.engine.begin() as conn:
            conn.execute(insert(accounts).values(account_no=account_no, holder_name="赵六", address="路北区", balance=0))
    finally:
        m.close()


def file_and_approve(bench, ref: str, now: dt.datetime = APPROVED, approver: str = "bob") -> int:  # type: ignore[no-untyped-def]
    with bench.unit(Permission.MANAGE_CARDS) as ctx:
        rid = reversals.file(ctx, ref, "customer keyed a wrong account").id
    with bench.unit(Permission.DECIDE_REQUESTS, who=approver) as ctx:
        reversals.decide(ctx, rid, approve=True, comment="checked", now=now)
    return rid


def reversal(system, rid: int) -> Reversal:  # type: ignore[no-untyped-def]
    with system.db.transaction() as s:
        return reversals.get(s, rid)


def post_outcomes(system) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    with system.db.transaction() as s:
        entries = [e for e in reversed(audit.entries(s, 10_000)) if e.action == "reversal.post"]
    return [(e.operator, e.object, e.after) for e in entries]


def verify_log(system) -> None:  # type: ignore[no-untyped-def]
    with system.db.transaction() as s:
        result = audit.verify_installation(s, system.keys(), system.settings.audit_anchor_file)
    assert result.ok, result.problems


def test_the_whole_flow_takes_the_money_back_once_and_reconciles(system, bench, ledger, marketing, journal):
    rid = ledger.add("3100000001", 5000, T0)
    other = ledger.add("3100000002", 2000, T0)
    start = balances(marketing)
    assert drain_all(system.db, marketing, T0, journal) == DrainResult(posted=2)
    credited = balances(marketing)
    assert credited["3100000001"] == start["3100000001"] + 5000
    ref = ledger.get(rid).ref

    rev_id = file_and_approve(bench, ref)
    assert drain_all(system.db, marketing, LATER, journal) == DrainResult(posted=1)
    assert drain_all(system.db, marketing, LATER, journal) == DrainResult()
    after = balances(marketing)
    assert after["3100000001"] == credited["3100000001"] - 5000
    assert after == start | {"3100000002": credited["3100000002"]}

    rev = reversal(system, rev_id)
    assert (rev.post_status, rev.post_attempts) == (PostStatus.POSTED, 1)
    assert rev.posted_at is not None
    theirs = {p.recharge_ref: p for p in marketing.postings_for_day(DAY)}
    assert theirs[ref + "R"] == Posting(ref + "R", "3100000001", -5000, ledger.get(rid).card_serial, "hotline",
                                        APPROVED, reverses=ref)
    assert ledger.get(other).post_status == PostStatus.POSTED
    [(who, obj, after_entry)] = post_outcomes(system)
    assert who == "server T" and ref + "R" in obj and '"outcome":"posted"' in after_entry.replace(" ", "")
    with system.db.transaction() as s:
        rec = reconcile(s, marketing, DAY, card_reversals)
    assert rec.ok, rec.findings
    assert (rec.card_count, rec.card_total, rec.card_reversals) == (3, 2000, 1)
    assert (rec.marketing_count, rec.marketing_total, rec.marketing_reversals) == (3, 2000, 1)
    verify_log(system)
    # The customer is told by SMS that the money was taken back, once, as for the recharge itself.
    with system.db.transaction() as s:
        notices = {n.posting_ref: n for n in s.scalars(select(SmsNotice))}
    assert set(notices) == {ref, ledger.get(other).ref, ref + "R"}
    assert notices[ref + "R"].recharge_id is None and "冲正" in notices[ref + "R"].text
    assert "50.00" in notices[ref + "R"].text


def test_a_reversal_waits_for_its_original_and_then_follows_it(system, bench, ledger, marketing, journal):
    rid = ledger.add("3100000001", 5000, T0)
    ledger.update(rid, next_attempt_at=LATER)  # the original is not due yet (backing off)
    rev_id = file_and_approve(bench, ledger.get(rid).ref)
    before = balances(marketing)
    assert drain_all(system.db, marketing, APPROVED, journal) == DrainResult()
    with system.db.transaction() as s:
        [waiting] = [e for e in outbox.entries(s) if e.kind == "reversal"]
        assert waiting.amount == -5000 and "waits for its original" in waiting.last_error
        assert outbox.backlog(s)["reversals_pending"] == 1
    # Once the original is due, one run posts it and then its reversal.
    assert drain_all(system.db, marketing, LATER, journal) == DrainResult(posted=2)
    assert balances(marketing) == before
    assert reversal(system, rev_id).post_status == PostStatus.POSTED


def test_only_approved_reversals_are_posted(system, bench, ledger, marketing, journal):
    refs = [ledger.get(ledger.add("3100000001", 5000, T0)).ref for _ in range(3)]
    drain(system.db, marketing, T0)
    with bench.unit(Permission.MANAGE_CARDS) as ctx:
        pending_id = reversals.file(ctx, refs[0], "wrong account").id
        rejected_id = reversals.file(ctx, refs[1], "wrong account").id
    with bench.unit(Permission.DECIDE_REQUESTS, who="bob") as ctx:
        reversals.decide(ctx, rejected_id, approve=False, comment="no")
    assert drain_reversals(system.db, marketing, LATER, journal) == DrainResult()
    assert reversal(system, pending_id).post_status is None
    assert reversal(system, rejected_id).post_status is None


class CrashAfterPosting:
    """The worker dies after the marketing system committed the postings, before the card database marks them."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner

    def post_recharges(self, postings: list[Posting], **kw: bool) -> list[bool | PostingRejected]:
        self.inner.post_recharges(postings, **kw)
        raise KeyboardInterrupt("worker killed")


class Down:
    def post_recharges(self, postings: list[Posting], **kw: bool) -> list[bool | PostingRejected]:
        raise MarketingUnavailable("marketing system unavailable (gone)")


def test_a_crash_between_posting_and_marking_debits_once(system, bench, ledger, marketing, journal):
    rid = ledger.add("3100000001", 5000, T0)
    drain(system.db, marketing, T0)
    rev_id = file_and_approve(bench, ledger.get(rid).ref)
    before = balances(marketing)
    with pytest.raises(KeyboardInterrupt):
        drain_reversals(system.db, CrashAfterPosting(marketing), LATER, journal)
    rev = reversal(system, rev_id)
    assert (rev.post_status, rev.post_attempts) == (PostStatus.PENDING, 0)
    assert post_outcomes(system) == []
    assert drain_reversals(system.db, marketing, LATER, journal) == DrainResult(repeated=1)
    assert balances(marketing)["3100000001"] == before["3100000001"] - 5000
    assert reversal(system, rev_id).post_status == PostStatus.POSTED
    assert '"outcome":"repeated"' in post_outcomes(system)[0][2].replace(" ", "")
    verify_log(system)


def test_an_outage_backs_off_and_posts_later(system, bench, ledger, marketing, journal):
    rid = ledger.add("3100000001", 5000, T0)
    drain(system.db, marketing, T0)
    rev_id = file_and_approve(bench, ledger.get(rid).ref)
    assert drain_reversals(system.db, Down(), LATER, journal) == DrainResult(failed=1)
    rev = reversal(system, rev_id)
    assert (rev.post_status, rev.post_attempts) == (PostStatus.PENDING, 1)
    assert "gone" in (rev.last_error or "")
    assert drain_reversals(system.db, marketing, LATER, journal) == DrainResult()  # backing off
    assert drain_reversals(system.db, marketing, LATER + dt.timedelta(seconds=2), journal) == DrainResult(posted=1)
    assert post_outcomes(system)[0][2].count("posted") >= 1


def test_a_reversal_of_a_refused_original_is_refused_then_both_retried(system, bench, ledger, standin_url, marketing,
                                                                       journal):
    """The original is refused (no such account) after the reversal was approved; billing opens the account; both go."""
    rid = ledger.add(UNKNOWN, 5000, T0)
    ref = ledger.get(rid).ref
    rev_id = file_and_approve(bench, ref)
    assert drain_all(system.db, marketing, LATER, journal) == DrainResult(rejected=2)
    assert ledger.get(rid).post_status == PostStatus.REJECTED
    rev = reversal(system, rev_id)
    assert rev.post_status == PostStatus.REJECTED and "never taken by the marketing system" in (rev.last_error or "")
    with system.db.transaction() as s:
        assert {e.ref for e in outbox.entries(s, PostStatus.REJECTED)} == {ref, ref + "R"}
        assert outbox.backlog(s)["reversals_rejected"] == 1

    open_account(standin_url)
    with bench.unit(Permission.MANAGE_CARDS) as ctx:
        retried = rejected_postings.retry(ctx, ref, "billing opened the account", now=LATER)
        assert (retried.post_status, retried.post_attempts, retried.last_error) == (PostStatus.PENDING, 0, None)
        rejected_postings.retry(ctx, ref + "R", "its original goes again", now=LATER)
    assert drain_all(system.db, marketing, LATER, journal) == DrainResult(posted=2)
    assert marketing.lookup_account(UNKNOWN).balance == 0  # type: ignore[union-attr]
    with system.db.transaction() as s:
        rec = reconcile(s, marketing, DAY, card_reversals)
        actions = [e.action for e in audit.entries(s, 100)]
    assert rec.ok, rec.findings
    assert actions.count("posting.retry") == 2
    verify_log(system)


def test_a_resolved_posting_is_listed_as_resolved_not_as_a_mismatch(system, bench, ledger, marketing, journal):
    good = ledger.add("3100000001", 5000, T0)
    bad = ledger.add(UNKNOWN, 3000, T0)
    assert drain_all(system.db, marketing, T0, journal) == DrainResult(posted=1, rejected=1)
    ref = ledger.get(bad).ref
    with system.db.transaction() as s:
        rec = reconcile(s, marketing, DAY, card_reversals)
    assert [d.recharge_ref for d in rec.missing_in_marketing] == [ref] and not rec.ok

    with bench.unit(Permission.MANAGE_CARDS) as ctx:
        row = rejected_postings.resolve(ctx, ref, "refunded in cash at hall H01")
    assert row.post_status == PostStatus.RESOLVED
    assert drain_all(system.db, marketing, LATER, journal) == DrainResult()
    with system.db.transaction() as s:
        rec = reconcile(s, marketing, DAY, card_reversals)
        [entry] = [e for e in audit.entries(s, 100) if e.action == "posting.resolve"]
        assert [e.ref for e in outbox.entries(s, PostStatus.RESOLVED)] == [ref]
    assert rec.ok
    assert [d.recharge_ref for d in rec.resolved] == [ref]
    assert (rec.card_count, rec.card_total) == (1, 5000) == (rec.marketing_count, rec.marketing_total)
    assert rec.to_dict()["resolved"][0]["recharge_ref"] == ref
    assert "refunded in cash" in entry.after and entry.operator == "alice"
    assert ledger.get(good).post_status == PostStatus.POSTED
    # Final: neither retried nor resolved again, nothing changed.
    for action in (rejected_postings.retry, rejected_postings.resolve):
        with pytest.raises(IllegalTransition, match="is resolved, not rejected"), bench.unit() as ctx:
            action(ctx, ref, "again")
    verify_log(system)


def test_retry_and_resolve_refuse_what_is_not_rejected(system, bench, ledger, marketing, journal):
    bench.add_operator("carol", Role.AUDITOR)
    rid = ledger.add("3100000001", 5000, T0)
    ref = ledger.get(rid).ref
    with system.db.transaction() as s:
        before = audit.count(s)
    cases: list[tuple[str, str, str, type[CardError], str]] = [
        ("alice", ref, "go", IllegalTransition, "is pending, not rejected"),
        ("alice", ref, " ", InvalidInput, "needs a reason"),
        ("alice", "24039999999999", "go", NotFound, "no recharge has reference"),
        ("alice", "24039999999999R", "go", NotFound, "no reversal has reference"),
        ("alice", "nonsense", "go", InvalidInput, "not a recharge reference"),
        ("carol", ref, "go", PermissionDenied, "carol"),
        ("bob", ref, "go", PermissionDenied, "bob"),
    ]
    for who, what, reason, error, words in cases:
        for action in (rejected_postings.retry, rejected_postings.resolve):
            with pytest.raises(error, match=words), bench.unit(Permission.VIEW, who=who) as ctx:
                action(ctx, what, reason)
    drain(system.db, marketing, T0)
    with pytest.raises(IllegalTransition, match="is posted, not rejected"), bench.unit() as ctx:
        rejected_postings.resolve(ctx, ref, "go")
    with bench.unit() as ctx:
        rev_id = reversals.file(ctx, ref, "wrong account").id
    with pytest.raises(IllegalTransition, match="is not approved, not rejected"), bench.unit() as ctx:
        rejected_postings.retry(ctx, ref + "R", "go")
    with system.db.transaction() as s:
        assert audit.count(s) == before + 1  # the filing only
        assert ledger.get(rid).post_status == PostStatus.POSTED
        assert s.get(Reversal, rev_id).post_status is None  # type: ignore[union-attr]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_200_concurrent_drains_and_approvals_post_each_reversal_once(system, bench, ledger, marketing, journal):
    bench.add_operator("dave", Role.FINANCE)
    owner = [SAMPLE_ACCOUNTS[i % 12].account_no for i in range(20)]
    ids = [ledger.add(owner[i], 100 * (i + 1), T0) for i in range(20)]
    assert drain(system.db, marketing, T0) == DrainResult(posted=20)
    before = balances(marketing)
    with bench.unit() as ctx:
        rev_ids = [reversals.file(ctx, ledger.get(i).ref, "wrong account").id for i in ids]
    tasks = [("approve", rev_ids[n // 2 % 20], "bob" if n % 4 else "dave") if n % 2 == 0 else ("drain", 0, "") for n in range(200)]
    random.Random(7).shuffle(tasks)

    def run(task: tuple[str, int, str]) -> object:
        kind, rid, who = task
        if kind == "drain":
            return drain_reversals(system.db, marketing, LATER, journal)
        try:
            with bench.unit(Permission.DECIDE_REQUESTS, who=who) as ctx:
                return reversals.decide(ctx, rid, approve=True, comment="ok", now=APPROVED).status
        except (ConflictError, IllegalTransition) as e:
            return e

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(run, tasks))
    results.append(drain_reversals(system.db, marketing, LATER, journal))  # whatever was approved after the last drain

    approvals = [r for r in results if r == ReversalStatus.APPROVED]
    drains = [r for r in results if isinstance(r, DrainResult)]
    assert len(approvals) == 20
    assert sum(d.posted for d in drains) == 20
    assert sum(d.repeated + d.rejected + d.failed for d in drains) == 0
    after = balances(marketing)
    assert after == {a: before[a] - sum(100 * (i + 1) for i in range(20) if owner[i] == a) for a in before}
    outcomes = Counter(obj for _, obj, _ in post_outcomes(system))
    assert len(outcomes) == 20 and set(outcomes.values()) == {1}
    with system.db.transaction() as s:
        revs = reversals.listing(s)
        assert {r.post_status for r in revs} == {PostStatus.POSTED}
        assert {r.post_attempts for r in revs} == {1}
        postings = {p.recharge_ref: p for p in marketing.postings_for_day(DAY)}
        assert all(postings[r.ref] == posting_for_reversal(r) for r in revs)
        assert all(s.get(Recharge, r.recharge_id).post_status == PostStatus.POSTED for r in revs)  # type: ignore[union-attr]
    verify_log(system)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_retry_and_a_resolve_racing_settle_each_posting_once(system, bench, ledger, marketing, journal):
    bench.add_operator("dave", Role.ADMIN)
    refs = [ledger.get(ledger.add(UNKNOWN, 1000, T0)).ref for _ in range(10)]
    assert drain(system.db, marketing, T0) == DrainResult(rejected=10)

    def settle(task: tuple[str, str]) -> object:
        who, ref = task
        action = rejected_postings.retry if who == "alice" else rejected_postings.resolve
        try:
            with bench.unit(who=who) as ctx:
                return action(ctx, ref, "settled").post_status
        except CardError as e:
            return e

    tasks = [(who, ref) for ref in refs for who in ("alice", "dave")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(settle, tasks))
    done = [r for r in results if not isinstance(r, CardError)]
    assert len(done) == len(refs)
    assert all(isinstance(r, ConflictError | IllegalTransition) for r in results if isinstance(r, CardError))
    with system.db.transaction() as s:
        final = Counter(r.post_status for r in s.scalars(select(Recharge)))
        logged = [e.action for e in audit.entries(s, 100) if e.action.startswith("posting.")]
    assert final == Counter(done)
    assert sorted(logged) == sorted(f"posting.{'retry' if r == PostStatus.PENDING else 'resolve'}" for r in done)
