"""Reversals (冲正): filing, finance's decision, separation of duties, races, and the figures for reports.

Card databases on SQLite and on the real PostgreSQL server; recharges are
written straight into the card database (``testkit.marketing.Ledger``), and
the posting itself is tested in ``tests.marketing_iface.test_reversal_outbox``.
"""

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from cardmgmt import audit, reports, reversals
from cardmgmt.context import Permission, Role
from cardmgmt.errors import (
    AlreadyExists,
    CardError,
    ConflictError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from cardmgmt.models import Card, LogEntry, Reversal
from cardmgmt.states import PostStatus, ReversalStatus
from testkit.marketing import Ledger

UTC = dt.UTC
T0 = dt.datetime(2024, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 on 1 March in Beijing


@pytest.fixture
def ledger(bench) -> Ledger:
    return Ledger(bench.system.db)


def posted(ledger: Ledger, account_no: str = "3100000001", amount: int = 5000, at: dt.datetime = T0,
           channel: str = "hotline") -> str:
    """A recharge the marketing system has taken; its reference."""
    rid = ledger.add(account_no, amount, at, channel=channel)
    ledger.update(rid, post_status=PostStatus.POSTED, posted_at=at)
    return ledger.get(rid).ref


def file(bench, ref: str, reason: str = "customer keyed a wrong account", who: str = "alice") -> int:  # type: ignore[no-untyped-def]
    with bench.unit(Permission.MANAGE_CARDS, who=who) as ctx:
        return reversals.file(ctx, ref, reason).id


def decide(bench, rid: int, approve: bool = True, who: str = "bob", comment: str = "call recording checked",  # type: ignore[no-untyped-def]
           now: dt.datetime | None = None) -> Reversal:
    with bench.unit(Permission.DECIDE_REQUESTS, who=who) as ctx:
        return reversals.decide(ctx, rid, approve=approve, comment=comment, now=now)


def snapshot(bench) -> tuple[list[dict], int]:  # type: ignore[no-untyped-def,type-arg]
    with bench.system.db.transaction() as s:
        return [reversals.describe(r) for r in reversals.listing(s)], audit.count(s)


def log_actions(bench) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with bench.system.db.transaction() as s:
        return [(e.operator, e.action) for e in reversed(audit.entries(s, 1000)) if e.action.startswith("reversal.")]


def test_file_then_approve_queues_the_counter_entry(bench, ledger):
    ref = posted(ledger, amount=5000)
    rid = file(bench, ref)
    with bench.system.db.transaction() as s:
        rev = reversals.get(s, rid)
        assert (rev.status, rev.post_status, rev.ref, rev.original_ref) == (ReversalStatus.PENDING, None, ref + "R", ref)
        assert (rev.account_no, rev.amount, rev.filed_by) == ("3100000001", 5000, "alice")
    approved_at = T0 + dt.timedelta(hours=2)
    rev = decide(bench, rid, now=approved_at)
    assert (rev.status, rev.post_status, rev.decided_by, rev.post_attempts) == (
        ReversalStatus.APPROVED, PostStatus.PENDING, "bob", 0)
    assert rev.decision_comment == "call recording checked"
    assert log_actions(bench) == [("alice", "reversal.file"), ("bob", "reversal.approve")]
    # The card stays spent.
    with bench.system.db.transaction() as s:
        assert s.scalar(select(Card.state).where(Card.serial == rev.card_serial)) == "redeemed"


def test_a_rejected_reversal_is_final_and_posts_nothing(bench, ledger):
    rid = file(bench, posted(ledger))
    rev = decide(bench, rid, approve=False, comment="the account was right")
    assert (rev.status, rev.post_status) == (ReversalStatus.REJECTED, None)
    with pytest.raises(IllegalTransition, match="is rejected, not pending"):
        decide(bench, rid)
    with pytest.raises(AlreadyExists, match=f"already has reversal {rid} \\(rejected\\)"):
        file(bench, rev.original_ref)


def test_the_filer_cannot_decide_and_an_auditor_cannot_file(bench, ledger):
    bench.add_operator("carol", Role.AUDITOR)
    bench.add_operator("dave", Role.ADMIN)
    ref = posted(ledger)
    before = snapshot(bench)
    for who in ("carol", "bob"):  # an auditor, finance: neither files
        with pytest.raises(PermissionDenied):
            file(bench, ref, who=who)
    assert snapshot(bench) == before
    rid = file(bench, ref)
    before = snapshot(bench)
    with pytest.raises(PermissionDenied, match="filed reversal"):
        with bench.system.db.transaction() as s:  # alice as finance would still be the filer
            s.get(Reversal, rid).filed_by = "bob"  # type: ignore[union-attr]
        decide(bench, rid, who="bob")
    with bench.system.db.transaction() as s:
        s.get(Reversal, rid).filed_by = "alice"  # type: ignore[union-attr]
    for who in ("dave", "carol"):  # an administrator and an auditor are not finance
        with pytest.raises(PermissionDenied):
            decide(bench, rid, who=who)
    assert snapshot(bench) == before


@pytest.mark.parametrize(
    ("ref", "error", "words"),
    [
        ("", InvalidInput, "not a recharge reference"),
        ("2403", InvalidInput, "not a recharge reference"),
        ("24030100000001x", InvalidInput, "not a recharge reference"),
        ("24030199999999", NotFound, "no recharge has reference 24030199999999"),
        ("24030100000001R", InvalidInput, "a reversal cannot be reversed"),
    ],
)
def test_bad_references_are_refused_and_change_nothing(bench, ledger, ref, error, words):
    posted(ledger)
    before = snapshot(bench)
    with pytest.raises(error, match=words):
        file(bench, ref)
    assert snapshot(bench) == before


def test_a_reference_with_the_wrong_day_is_unknown(bench, ledger):
    ref = posted(ledger)
    wrong = f"{int(ref[:6]) + 1:06d}{ref[6:]}"
    with pytest.raises(NotFound):
        file(bench, wrong)


def test_a_second_reversal_of_one_recharge_is_refused(bench, ledger):
    ref = posted(ledger)
    rid = file(bench, ref)
    before = snapshot(bench)
    with pytest.raises(AlreadyExists, match=f"already has reversal {rid} \\(pending\\)"):
        file(bench, ref)
    decide(bench, rid)
    with pytest.raises(AlreadyExists, match="approved"):
        file(bench, ref)
    with pytest.raises(InvalidInput, match="a reversal cannot be reversed"):
        file(bench, ref + "R")
    assert snapshot(bench)[0][0]["status"] == "approved" and len(snapshot(bench)[0]) == len(before[0])


def test_a_recharge_the_marketing_system_never_took_cannot_be_reversed(bench, ledger):
    rid = ledger.add("3199999999", 5000, T0)
    ledger.update(rid, post_status=PostStatus.REJECTED, last_error="no account")
    ref = ledger.get(rid).ref
    before = snapshot(bench)
    with pytest.raises(IllegalTransition, match="never taken by the marketing system \\(rejected\\)"):
        file(bench, ref)
    assert snapshot(bench) == before


def test_a_pending_recharge_can_be_reversed_but_not_approved_once_rejected(bench, ledger):
    rid = ledger.add("3100000001", 5000, T0)
    rev_id = file(bench, ledger.get(rid).ref)  # still pending in the outbox: allowed, posted after it
    ledger.update(rid, post_status=PostStatus.REJECTED)
    with pytest.raises(IllegalTransition, match="never taken"):
        decide(bench, rev_id)
    assert decide(bench, rev_id, approve=False).status == ReversalStatus.REJECTED


@pytest.mark.parametrize(("reason", "comment"), [("  ", "ok"), ("why", " ")])
def test_a_reason_and_a_comment_are_required(bench, ledger, reason, comment):
    ref = posted(ledger)
    if not reason.strip():
        with pytest.raises(InvalidInput, match="needs a reason"):
            file(bench, ref, reason=reason)
        return
    rid = file(bench, ref, reason=reason)
    with pytest.raises(InvalidInput, match="needs a comment"):
        decide(bench, rid, comment=comment)


def test_unknown_reversal(bench):
    with pytest.raises(NotFound, match="reversal 42 does not exist"):
        decide(bench, 42)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_finance_officers_racing_make_exactly_one_decision(bench, ledger):
    bench.add_operator("dave", Role.FINANCE)
    ids = [file(bench, posted(ledger, account_no="3100000001")) for _ in range(10)]
    outcomes: dict[int, list[object]] = {i: [] for i in ids}

    def race(rid: int) -> None:
        barrier = threading.Barrier(2)

        def one(who: str, approve: bool) -> None:
            barrier.wait()
            try:
                outcomes[rid].append(decide(bench, rid, approve=approve, who=who).status)
            except CardError as e:
                outcomes[rid].append(e)

        threads = [threading.Thread(target=one, args=a) for a in (("bob", True), ("dave", False))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    for rid in ids:
        race(rid)
    with bench.system.db.transaction() as s:
        decided = {r.id: r for r in reversals.listing(s)}
        decisions = s.scalar(select(func.count()).select_from(LogEntry)
                             .where(LogEntry.action.in_(["reversal.approve", "reversal.reject"])))
    assert decisions == len(ids)
    for rid in ids:
        won = [o for o in outcomes[rid] if not isinstance(o, CardError)]
        lost = [o for o in outcomes[rid] if isinstance(o, CardError)]
        assert len(won) == 1 and len(lost) == 1, outcomes[rid]
        assert isinstance(lost[0], ConflictError | IllegalTransition)
        assert decided[rid].status == won[0]
        assert (decided[rid].post_status is None) == (won[0] == ReversalStatus.REJECTED)


def test_the_reversals_report_by_business_day_channel_and_hall(bench, ledger):
    day1 = dt.datetime(2024, 3, 1, 2, 0, tzinfo=UTC)
    refs = [posted(ledger, amount=5000), posted(ledger, amount=2000, channel="pos"),
            posted(ledger, amount=10_000), posted(ledger, amount=3000), posted(ledger, amount=700)]
    ids = [file(bench, ref) for ref in refs]
    decide(bench, ids[0], now=day1)
    decide(bench, ids[1], now=day1 + dt.timedelta(hours=1))
    decide(bench, ids[2], now=day1 + dt.timedelta(hours=3))
    # 17:00 UTC on 1 March is 01:00 on 2 March in Beijing.
    decide(bench, ids[3], now=dt.datetime(2024, 3, 1, 17, 0, tzinfo=UTC))
    decide(bench, ids[4], approve=False)  # rejected: not a figure
    with bench.system.db.transaction() as s:
        s.get(Reversal, ids[0]).post_status = PostStatus.POSTED  # type: ignore[union-attr]
    with bench.system.db.transaction() as s:
        by_day = reports.reversals(s, reports.Period(dt.date(2024, 3, 1), dt.date(2024, 3, 2)), "day")
        by_channel = reports.reversals(s, reports.Period(dt.date(2024, 3, 1), dt.date(2024, 3, 2)), "channel")
        second = reports.reversals(s, reports.Period(dt.date(2024, 3, 2), dt.date(2024, 3, 2)), "day")
        later = reports.reversals(s, reports.Period(dt.date(2024, 3, 3), dt.date(2024, 3, 9)), "day")
        by_hall = reports.reversals(s, reports.Period(dt.date(2024, 3, 1), dt.date(2024, 3, 2)), "hall")
        with pytest.raises(InvalidInput):
            reports.reversals(s, reports.Period(dt.date(2024, 3, 1), dt.date(2024, 3, 2)), "face-value")
    assert by_day.rows == [
        {"day": "2024-03-01", "reversals": 3, "amount": 17_000, "posted": 1},
        {"day": "2024-03-02", "reversals": 1, "amount": 3000, "posted": 0},
    ]
    assert by_channel.rows == [
        {"channel": "hotline", "reversals": 3, "amount": 18_000, "posted": 1},
        {"channel": "pos", "reversals": 1, "amount": 2000, "posted": 0},
    ]
    assert second.rows == by_day.rows[1:] and later.rows == []
    assert by_day.total == by_channel.total == by_hall.total == {"reversals": 4, "amount": 20_000, "posted": 1}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_administrators_filing_at_once_make_one_reversal(bench, ledger):
    bench.add_operator("dave", Role.ADMIN)
    refs = [posted(ledger) for _ in range(10)]
    results: list[object] = []

    def race(ref: str) -> None:
        barrier = threading.Barrier(2)

        def one(who: str) -> None:
            barrier.wait()
            try:
                results.append(file(bench, ref, who=who))
            except CardError as e:
                results.append(e)

        threads = [threading.Thread(target=one, args=(who,)) for who in ("alice", "dave")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    for ref in refs:
        race(ref)
    filed = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, CardError)]
    assert len(filed) == len(refs) and len(refused) == len(refs)
    assert all(isinstance(e, ConflictError | AlreadyExists) for e in refused)
    with bench.system.db.transaction() as s:
        assert sorted(r.original_ref for r in reversals.listing(s)) == sorted(refs)
        assert s.scalar(select(func.count()).select_from(LogEntry).where(LogEntry.action == "reversal.file")) == len(refs)


def test_why_not_says_before_decide_refuses(bench, ledger):
    from cardmgmt.approvals import NotDecidable
    from cardmgmt.context import Actor

    bench.add_operator("carol", Role.AUDITOR)
    rid = file(bench, posted(ledger))
    with bench.system.db.transaction() as s:
        rev = reversals.get(s, rid)
        seen = {name: reversals.why_not(Actor(name, role), rev)
                for name, role in (("alice", Role.ADMIN), ("carol", Role.AUDITOR), ("bob", Role.FINANCE))}
        shown = reversals.why_not(Actor("alice", Role.ADMIN), reversals.describe(rev))
    assert seen == {"alice": NotDecidable.OWN, "carol": NotDecidable.ROLE, "bob": None} and shown is NotDecidable.OWN
    decide(bench, rid)
    with bench.system.db.transaction() as s:
        assert reversals.why_not(Actor("bob", Role.FINANCE), reversals.get(s, rid)) is NotDecidable.DECIDED
    with pytest.raises(IllegalTransition, match="is approved, not pending"):
        decide(bench, rid)
