"""``reversal`` and ``marketing retry/resolve``: a reversal from filing to the marketing balance, rejected postings settled.

Driven through click's CliRunner on SQLite and PostgreSQL card databases; the
marketing system is a stand-in SQLite database made by ``marketing standin``;
recharges are written straight into the card database (``testkit.marketing.Ledger``).
"""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from cardmgmt.days import business_day
from cardmgmt.db import Database
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import accounts
from testkit.commandline import Installation, Refusals, assert_one_line_error
from testkit.marketing import Ledger

UNKNOWN = "3199999999"


@pytest.fixture
def mkt(inst: Installation, tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'marketing.db'}"
    assert "ready" in inst.ok("--marketing-db", url, "marketing", "standin", user=None)
    yield url


@pytest.fixture
def ledger(inst: Installation) -> Iterator[Ledger]:
    db = Database(inst.db)
    yield Ledger(db)
    db.dispose()


def balance(url: str, account_no: str) -> int:
    m = SqlMarketing(url)
    try:
        found = m.lookup_account(account_no)
        assert found is not None
        return found.balance
    finally:
        m.close()


def open_account(url: str) -> None:
    m = SqlMarketing(url)
    try:
        with m.engine.begin() as conn:
            conn.execute(insert(accounts).values(account_no=UNKNOWN, holder_name="赵六", address="路北区", balance=0))
    finally:
        m.close()


def test_a_reversal_from_filing_to_the_marketing_balance(inst: Installation, mkt: str, ledger: Ledger) -> None:
    now = dt.datetime.now(dt.UTC)
    rid = ledger.add("3100000001", 5000, now)
    ref = ledger.get(rid).ref
    m = ("--marketing-db", mkt)
    assert inst.ok(*m, "marketing", "drain").splitlines()[0] == "posted 1, already there 0, failed 0, rejected 0"
    credited = balance(mkt, "3100000001")

    out = inst.ok("reversal", "file", ref, "--reason", "customer keyed a wrong account")
    assert out == (f"reversal 1 ({ref}R) of recharge {ref} filed: 50.00 yuan from account 3100000001; "
                   "waiting for finance approval\n")
    refusals = Refusals()
    before = inst.snapshot() | {"reversals": inst.json("reversal", "list")}
    refusals.check("the filer is no approver", inst.run("reversal", "approve", "1", "--comment", "ok"), "may not")
    refusals.check("an auditor files nothing", inst.run("reversal", "file", ref, "--reason", "x", user="carol"), "may not")
    refusals.check("a second filing", inst.run("reversal", "file", ref, "--reason", "again"), "already has reversal 1")
    refusals.check("a reversal of a reversal", inst.run("reversal", "file", ref + "R", "--reason", "x"),
                   "a reversal cannot be reversed")
    refusals.check("an unknown reference", inst.run("reversal", "file", "24030199999999", "--reason", "x"),
                   "no recharge has reference")
    refusals.check("not a reference", inst.run("reversal", "file", "abc", "--reason", "x"), "not a recharge reference")
    refusals.check("an unknown reversal", inst.run("reversal", "approve", "9", "--comment", "ok", user="bob"),
                   "reversal 9 does not exist")
    refusals.check("no comment", inst.run("reversal", "approve", "1", "--comment", " ", user="bob"), "needs a comment")
    refusals.check("nothing to retry", inst.run(*m, "marketing", "retry", ref, "--reason", "x"), "not rejected")
    refusals.check("no reason", inst.run("reversal", "file", ref, user="alice"), "--reason", code=2)
    refusals.assert_all_clean()
    assert inst.snapshot() | {"reversals": inst.json("reversal", "list")} == before

    assert inst.ok("reversal", "approve", "1", "--comment", "call recording checked", user="bob") == (
        "reversal 1 approved; its counter-entry goes to the marketing system with the next drain\n")
    assert_one_line_error(inst.run("reversal", "reject", "1", "--comment", "no", user="bob"), "is approved, not pending")
    [row] = inst.json("reversal", "list", "--status", "approved")
    assert (row["ref"], row["amount"], row["filed_by"], row["decided_by"], row["post_status"]) == (
        ref + "R", 5000, "alice", "bob", "pending")
    assert inst.json("reversal", "list", "--status", "pending") == []
    outbox = inst.ok("marketing", "outbox", user="carol")
    assert f"{ref}R" in outbox and "-50.00" in outbox and "reversals: 1 pending, 0 rejected" in outbox

    assert inst.ok(*m, "marketing", "drain").splitlines()[0] == "posted 1, already there 0, failed 0, rejected 0"
    assert balance(mkt, "3100000001") == credited - 5000
    shown = inst.json("reversal", "show", "1")
    assert (shown["post_status"], shown["post_attempts"], shown["comment"]) == ("posted", 1, "call recording checked")
    text = inst.ok("reversal", "show", "1", user="carol")
    assert "amount: 50.00" in text and "status: approved" in text
    days = {business_day(now), business_day(dt.datetime.fromisoformat(shown["decided_at"]))}
    for day in days:
        report = inst.ok(*m, "marketing", "reconcile", day.isoformat(), user="carol")
        assert report.endswith("reconciled: both sides agree\n")
    log = inst.json("audit", "log", "--limit", "50")
    actions = [e["action"] for e in log]
    assert {"reversal.file", "reversal.approve", "reversal.post"} <= set(actions)
    # The posting outcome was logged by the drain in its own transaction and anchored with the unit.
    assert inst.ok("audit", "verify", user="carol").startswith("operation log intact")


def test_rejected_postings_are_retried_or_resolved(inst: Installation, mkt: str, ledger: Ledger) -> None:
    now = dt.datetime.now(dt.UTC)
    first = ledger.get(ledger.add(UNKNOWN, 3000, now)).ref
    second = ledger.get(ledger.add(UNKNOWN, 2000, now)).ref
    m = ("--marketing-db", mkt)
    assert inst.ok(*m, "marketing", "drain").splitlines()[0] == "posted 0, already there 0, failed 0, rejected 2"
    listed = inst.json("marketing", "outbox", "--status", "rejected")
    assert [(r["kind"], r["ref"], r["amount"]) for r in listed] == [("recharge", first, 3000), ("recharge", second, 2000)]
    day = business_day(now).isoformat()
    assert "missing_in_marketing" in inst.ok(*m, "marketing", "reconcile", day, user="carol", code=3)

    open_account(mkt)
    assert inst.ok("marketing", "retry", first, "--reason", "billing opened the account") == (
        f"posting of recharge {first} is pending; it goes with the next drain\n")
    assert inst.ok("marketing", "resolve", second, "--reason", "refunded in cash at hall H01") == (
        f"posting of recharge {second} is resolved\n")
    before = inst.snapshot()
    assert_one_line_error(inst.run("marketing", "resolve", second, "--reason", "again"), "is resolved, not rejected")
    assert_one_line_error(inst.run("marketing", "retry", second, "--reason", "x", user="carol"), "may not")
    assert_one_line_error(inst.run("marketing", "retry", first, "--reason", " "), "needs a reason")
    assert inst.snapshot() == before
    assert inst.ok(*m, "marketing", "drain").splitlines()[0] == "posted 1, already there 0, failed 0, rejected 0"
    assert balance(mkt, UNKNOWN) == 3000
    report = inst.ok(*m, "marketing", "reconcile", day, user="carol")
    assert f"resolved outside the system (not a mismatch): {second} {UNKNOWN} 20.00" in report
    assert report.endswith("reconciled: both sides agree\n")
    assert [r["ref"] for r in inst.json("marketing", "outbox", "--status", "resolved")] == [second]
    assert inst.json(*m, "marketing", "reconcile", day)["resolved"][0]["recharge_ref"] == second
    actions = [e["action"] for e in inst.json("audit", "log", "--limit", "50")]
    assert actions.count("posting.retry") == 1 and actions.count("posting.resolve") == 1
    assert inst.ok("audit", "verify", user="carol").startswith("operation log intact")
