"""Daily reconciliation (对账) of the card side's recharges with the marketing system's postings.

Card databases on SQLite and on the real PostgreSQL server; the marketing
side is ``NullMarketing``, and once the stand-in on SQLite through ``SqlMarketing``.
"""

import dataclasses
import datetime as dt

import pytest

from cardmgmt.days import business_day
from cardmgmt.marketing import MarketingUnavailable, Posting
from marketing_iface.outbox import DrainResult, drain, posting_for
from marketing_iface.reconcile import CardEntry, Discrepancy, reconcile
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import create_standin
from testkit.marketing import sample_null_marketing

UTC = dt.UTC
DAY = dt.date(2024, 3, 1)
# 1 March in Beijing runs from 16:00 UTC on 29 February to 16:00 UTC on 1 March.
MORNING = dt.datetime(2024, 2, 29, 23, 0, tzinfo=UTC)  # 07:00 on 1 March in Beijing
NEXT_WEEK = dt.datetime(2024, 3, 8, tzinfo=UTC)


@pytest.fixture
def null():
    return sample_null_marketing()


def day_of_recharges(ledger) -> list[int]:  # type: ignore[no-untyped-def]
    return [
        ledger.add("3100000001", 5000, MORNING),
        ledger.add("3100000002", 10_000, MORNING + dt.timedelta(hours=1)),
        ledger.add("3100000005", 2000, MORNING + dt.timedelta(hours=2)),
    ]


def run(system, marketing, day=DAY):  # type: ignore[no-untyped-def]
    with system.db.transaction() as s:
        return reconcile(s, marketing, day)


def test_a_clean_day_is_ok(system, ledger, null):
    day_of_recharges(ledger)
    drain(system.db, null, NEXT_WEEK)
    rec = run(system, null)
    assert rec.ok
    assert (rec.card_count, rec.card_total) == (3, 17_000)
    assert (rec.marketing_count, rec.marketing_total) == (3, 17_000)
    assert rec.missing_in_marketing == rec.missing_in_cards == rec.amount_differs == rec.account_differs == ()


def test_an_empty_day_is_ok(system, null):
    rec = run(system, null)
    assert rec.ok
    assert (rec.card_count, rec.card_total, rec.marketing_count, rec.marketing_total) == (0, 0, 0, 0)


def test_a_clean_day_through_the_sql_stand_in(system, ledger, tmp_path):
    url = f"sqlite:///{tmp_path / 'marketing.db'}"
    create_standin(url)
    with SqlMarketing(url) as marketing:
        day_of_recharges(ledger)
        assert drain(system.db, marketing, NEXT_WEEK) == DrainResult(posted=3)
        rec = run(system, marketing)
    assert rec.ok and rec.marketing_total == 17_000


def test_records_not_yet_posted_are_missing_in_marketing_with_their_outbox_state(system, ledger, null):
    ids = day_of_recharges(ledger)
    drain(system.db, null, NEXT_WEEK, limit=2)
    ledger.update(ids[0], post_status="posted")  # and one the outbox believes it posted, but which is not there
    null.postings.pop(ledger.get(ids[0]).ref)
    rec = run(system, null)
    assert not rec.ok
    assert [(d.recharge_ref, d.post_status) for d in rec.missing_in_marketing] == [
        (ledger.get(ids[0]).ref, "posted"),
        (ledger.get(ids[2]).ref, "pending"),
    ]
    assert rec.missing_in_marketing[1] == Discrepancy(ledger.get(ids[2]).ref, posting_for(ledger.get(ids[2])), None, "pending")
    assert (rec.card_count, rec.card_total, rec.marketing_count, rec.marketing_total) == (3, 17_000, 1, 10_000)
    assert rec.missing_in_cards == rec.amount_differs == rec.account_differs == ()


def test_a_posting_unknown_to_the_cards_is_missing_in_cards(system, ledger, null):
    day_of_recharges(ledger)
    drain(system.db, null, NEXT_WEEK)
    stray = Posting("24030199999999", "3100000007", 3000, "900000099999", "pos", MORNING)
    null.post_recharge(stray)
    rec = run(system, null)
    assert rec.missing_in_cards == (Discrepancy(stray.recharge_ref, None, stray, None),)
    assert (rec.card_total, rec.marketing_total) == (17_000, 20_000)
    assert not rec.ok


@pytest.mark.parametrize("field, value, kind", [
    ("amount", 4999, "amount_differs"),
    ("account_no", "3100000003", "account_differs"),
])
def test_a_posting_that_differs_is_listed_with_both_sides(system, ledger, null, field, value, kind):
    ids = day_of_recharges(ledger)
    ours = posting_for(ledger.get(ids[0]))
    theirs = dataclasses.replace(ours, **{field: value})
    null.post_recharge(theirs)  # got there first, with the wrong content
    assert drain(system.db, null, NEXT_WEEK) == DrainResult(posted=2, rejected=1)
    rec = run(system, null)
    assert getattr(rec, kind) == (Discrepancy(ours.recharge_ref, ours, theirs, "rejected"),)
    others = {"amount_differs", "account_differs", "missing_in_marketing", "missing_in_cards"} - {kind}
    assert all(getattr(rec, k) == () for k in others)
    assert not rec.ok


def test_days_are_cut_at_midnight_beijing_time_on_both_sides(system, ledger, null):
    midnight = dt.datetime(2024, 2, 29, 16, 0, tzinfo=UTC)  # 00:00 on 1 March in Beijing
    tick = dt.timedelta(microseconds=1)
    ledger.add("3100000001", 100, midnight - tick)  # 29 February
    ledger.add("3100000001", 200, midnight)  # 1 March
    ledger.add("3100000001", 400, midnight + dt.timedelta(days=1) - tick)  # 1 March
    ledger.add("3100000001", 800, midnight + dt.timedelta(days=1))  # 2 March
    drain(system.db, null, NEXT_WEEK)
    totals = {}
    for day in (dt.date(2024, 2, 29), DAY, dt.date(2024, 3, 2)):
        rec = run(system, null, day)
        assert rec.ok
        assert rec.card_total == rec.marketing_total
        totals[day] = (rec.card_count, rec.card_total)
    assert totals == {dt.date(2024, 2, 29): (1, 100), DAY: (2, 600), dt.date(2024, 3, 2): (1, 800)}


def test_an_unreachable_marketing_system_is_reported_not_reconciled(system, ledger, null):
    day_of_recharges(ledger)
    null.available = False
    with pytest.raises(MarketingUnavailable):
        run(system, null)


# Reversals: the card side's come from a provider (the reversal workflow keeps them).


def reversal_of(original: Posting, ref: str, **change: object) -> Posting:
    return dataclasses.replace(original, recharge_ref=ref, amount=-original.amount, reverses=original.recharge_ref,
                               recharged_at=original.recharged_at + dt.timedelta(hours=1), **change)


def provider(*entries: CardEntry):  # type: ignore[no-untyped-def]
    def reversals(session, day):  # type: ignore[no-untyped-def]
        return [e for e in entries if business_day(e.posting.recharged_at) == day]
    return reversals


def test_a_day_with_a_reversal_on_both_sides_is_ok_and_nets_out(system, ledger, null):
    ids = day_of_recharges(ledger)
    drain(system.db, null, NEXT_WEEK)
    back = reversal_of(posting_for(ledger.get(ids[1])), "V1")
    assert null.post_recharge(back)
    with system.db.transaction() as s:
        rec = reconcile(s, null, DAY, provider(CardEntry(back, "posted")))
    assert rec.ok
    assert (rec.card_count, rec.card_total, rec.card_reversals) == (4, 7000, 1)
    assert (rec.marketing_count, rec.marketing_total, rec.marketing_reversals) == (4, 7000, 1)
    assert rec.to_dict()["card_reversals"] == 1


def test_a_reversal_on_one_side_only_is_found(system, ledger, null):
    ids = day_of_recharges(ledger)
    drain(system.db, null, NEXT_WEEK)
    original = posting_for(ledger.get(ids[0]))
    back = reversal_of(original, "V1")
    # Only the card side has it (still pending) ...
    with system.db.transaction() as s:
        rec = reconcile(s, null, DAY, provider(CardEntry(back, "pending")))
    assert rec.missing_in_marketing == (Discrepancy("V1", back, None, "pending"),)
    # ... then only the marketing side (no provider: the card side has no reversals).
    null.post_recharge(back)
    rec = run(system, null)
    assert rec.missing_in_cards == (Discrepancy("V1", None, back, None),)
    assert rec.to_dict()["findings"][0]["marketing"] == {"account_no": "3100000001", "amount": -5000, "reverses": original.recharge_ref}


def test_a_reversal_naming_another_original_is_original_differs(system, ledger, null):
    ids = day_of_recharges(ledger)
    ledger.add("3100000001", 5000, MORNING + dt.timedelta(hours=3))
    drain(system.db, null, NEXT_WEEK)
    first, other = posting_for(ledger.get(ids[0])), posting_for(ledger.rows()[-1])
    theirs = reversal_of(first, "V1")
    null.post_recharge(theirs)
    ours = dataclasses.replace(theirs, reverses=other.recharge_ref)
    with system.db.transaction() as s:
        rec = reconcile(s, null, DAY, provider(CardEntry(ours, "posted")))
    assert rec.original_differs == (Discrepancy("V1", ours, theirs, "posted"),)
    assert rec.amount_differs == rec.account_differs == rec.missing_in_cards == rec.missing_in_marketing == ()
    assert not rec.ok
