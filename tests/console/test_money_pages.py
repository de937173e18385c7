"""The console's money pages over real HTTPS: reports with their charts, reversals to decide, settlement payments.

Each test runs on SQLite and on PostgreSQL against a console of its own
(``client_for`` in conftest); recharges are written straight into the card
database (``testkit.marketing.Ledger``).  Every refusal is checked to have
changed nothing.
"""

import datetime as dt
import re

from cardmgmt import audit, reports, reversals
from cardmgmt.context import Permission
from cardmgmt.days import day_bounds
from cardmgmt.states import PostStatus
from testkit.marketing import Ledger

DAY1, DAY2 = dt.date(2026, 3, 2), dt.date(2026, 3, 3)


def signed_in(client_for, name):
    c = client_for()
    assert c.sign_in(name).status == 303
    return c


def assert_refused(r, status, *phrases):
    assert r.status == status, r.text
    assert 'id="error"' in r.text and "Traceback" not in r.text
    for phrase in phrases:
        assert phrase in r.text


def bars(text, chart):
    """A chart's bars as {label: value} from the page's SVG."""
    svg = re.search(rf'<svg[^>]* data-chart="{re.escape(chart)}".*?</svg>', text, re.S)
    assert svg, chart
    return {label: int(value) for label, value in re.findall(r'data-label="([^"]*)" data-value="(-?\d+)"', svg.group(0))}


def csv_rows(client, path):
    r = client.get(path)
    assert r.status == 200, r.text
    return [line.split(",") for line in r.body.decode("utf-8-sig").splitlines()]


def add_recharges(bench):
    """Recharges over two business days on two channels; the by-day figures in fen."""
    ledger = Ledger(bench.system.db)
    start1, start2 = day_bounds(DAY1)[0], day_bounds(DAY2)[0]
    ledger.add("3100000001", 5000, start1 + dt.timedelta(hours=1), channel="hotline")
    ledger.add("3100000002", 10000, start1 + dt.timedelta(hours=23, minutes=59), channel="pos")
    ledger.add("3100000003", 2345, start2, channel="hotline")
    ledger.add("3100000004", 5000, start2 - dt.timedelta(seconds=1), channel="hotline")  # the last second of DAY1
    return ledger


def test_the_reports_page_shows_recharges_by_day_as_report_recharges_does(client_for, console_bench):
    add_recharges(console_bench)
    with console_bench.unit() as ctx:
        expected = reports.recharges(ctx.session, reports.Period(DAY1, DAY2), "day").rows
    assert [(r["day"], r["amount"]) for r in expected] == [("2026-03-02", 20000), ("2026-03-03", 2345)]
    c = signed_in(client_for, "carol")
    page = c.get(f"/reports?from={DAY1}&to={DAY2}&lang=en")
    assert page.status == 200 and 'id="error"' not in page.text
    assert bars(page.text, "recharges") == {r["day"]: r["amount"] for r in expected}
    assert bars(page.text, "recharges-hotline") == {"2026-03-02": 10000, "2026-03-03": 2345}
    assert bars(page.text, "recharges-pos") == {"2026-03-02": 10000}
    rows = csv_rows(c, f"/reports.csv?table=recharges&from={DAY1}&to={DAY2}&lang=en")
    assert rows == [["Business day", "Recharges", "Amount (yuan)"], ["2026-03-02", "3", "200.00"],
                    ["2026-03-03", "1", "23.45"]]
    split = csv_rows(c, f"/reports.csv?table=recharges_by_channel&from={DAY1}&to={DAY2}")
    assert split[1:] == [["2026-03-02", "hotline", "2", "100.00"], ["2026-03-02", "pos", "1", "100.00"],
                         ["2026-03-03", "hotline", "1", "23.45"]]
    for name in ("sales", "reversals"):
        assert c.get(f"/reports.csv?table={name}").status == 200
    # The link to each table's CSV keeps the period.
    assert f'/reports.csv?table=recharges&amp;from={DAY1}&amp;to={DAY2}' in page.text


def test_a_long_period_is_shown_by_month_with_its_days_as_csv(client_for, console_bench):
    add_recharges(console_bench)
    first = DAY1 - dt.timedelta(days=70)
    with console_bench.unit() as ctx:
        by_day = reports.recharges(ctx.session, reports.Period(first, DAY2), "day")
    c = signed_in(client_for, "carol")
    page = c.get(f"/reports?from={first}&to={DAY2}&lang=en")
    assert "Recharges per month" in page.text and 'id="t-recharges_by_month"' in page.text
    assert 'id="t-recharges"' not in page.text, "a long period's days are not on the page"
    assert bars(page.text, "recharges") == {r["month"]: r["amount"] for r in reports.monthly(by_day).rows} == {
        "2026-03": 22345}
    assert bars(page.text, "recharges-pos") == {"2026-03": 10000}
    assert csv_rows(c, f"/reports.csv?table=recharges_by_channel_by_month&from={first}&to={DAY2}")[1:] == [
        ["2026-03", "hotline", "3", "123.45"], ["2026-03", "pos", "1", "100.00"]]
    assert f'/reports.csv?table=recharges&amp;from={first}&amp;to={DAY2}' in page.text, "the days, as CSV"
    assert csv_rows(c, f"/reports.csv?table=recharges&from={first}&to={DAY2}")[1:] == [
        ["2026-03-02", "3", "200.00"], ["2026-03-03", "1", "23.45"]]


def test_stock_value_by_place_is_report_stock_value(client_for, console_bench):
    with console_bench.unit() as ctx:
        expected = reports.stock_value(ctx.session, "hall").rows
    held = sum(r["value"] for r in expected if r["state"] in ("in_stock", "issued"))
    c = signed_in(client_for, "bob")
    assert 'id="show-value"' in c.get("/reports").text and "stock-value" not in c.get("/reports").text
    page = c.get("/reports?value=1")  # the page's button: every card is read only when asked for
    assert sum(bars(page.text, "stock-value").values()) == held == 40 * 5000
    assert 'id="show-value"' not in page.text
    assert len(csv_rows(signed_in(client_for, "carol"), "/reports.csv?table=stock_value&value=1")) == len(expected) + 1


def test_a_bad_period_is_one_line_and_every_role_sees_the_page(client_for):
    c = signed_in(client_for, "carol")
    assert_refused(c.get("/reports?from=2026-13-01"), 400, "is not a date")
    assert_refused(c.get(f"/reports?from={DAY2}&to={DAY1}"), 400, "is after")
    for name in ("alice", "bob"):
        assert signed_in(client_for, name).get("/reports?lang=en").status == 200


def filed_reversals(bench, count):
    """``count`` posted recharges, each with a reversal filed by alice; the reversals' ids."""
    ledger = Ledger(bench.system.db)
    ids = []
    for i in range(count):
        rid = ledger.add(f"31000000{i:02d}", 5000 + i, day_bounds(DAY1)[0] + dt.timedelta(hours=i))
        ledger.update(rid, post_status=PostStatus.POSTED, posted_at=day_bounds(DAY1)[0] + dt.timedelta(hours=i))
        with bench.unit(Permission.MANAGE_CARDS) as ctx:
            ids.append(reversals.file(ctx, ledger.get(rid).ref, "customer keyed a wrong account").id)
    return ids


def reversal_snapshot(bench):
    with bench.system.db.transaction() as s:
        return [reversals.describe(r) for r in reversals.listing(s)], audit.count(s)


def test_finance_approves_and_rejects_reversals_and_the_log_names_them(client_for, console_bench):
    first, second = filed_reversals(console_bench, 2)
    c = signed_in(client_for, "bob")
    page = c.get("/reversals")
    assert f'id="approve-{first}"' in page.text and f'id="reject-{second}"' in page.text
    r = c.post("/reversals/decide", {"csrf": page.csrf(), "id": str(first), "decision": "approve", "comment": "recording heard"})
    assert r.status == 303 and r.header("location") == f"/reversals?done=reversal_approved&ref={first}"
    assert f"已批准冲正 {first}" in c.get(r.header("location")).text
    r = c.post("/reversals/decide", {"csrf": page.csrf(), "id": str(second), "decision": "reject", "comment": "no proof"})
    assert r.status == 303
    with console_bench.system.db.transaction() as s:
        got = [(r.status.value, r.decided_by, r.decision_comment) for r in reversals.listing(s)]
        log = [(e.operator, e.action) for e in audit.entries(s, 2)]
    assert got == [("approved", "bob", "recording heard"), ("rejected", "bob", "no proof")]
    assert log == [("bob", "reversal.reject"), ("bob", "reversal.approve")]
    shown = c.get("/reversals?lang=en").text
    assert "Reversals decided last" in shown and 'data-col="status">rejected<' in shown
    rows = csv_rows(c, "/reversals.csv?table=reversals_decided")
    assert [r[0] for r in rows[1:]] == [str(second), str(first)] and rows[1][3] == "50.01"


def test_a_reversal_decided_twice_an_unknown_id_and_bad_fields_change_nothing(client_for, console_bench):
    (rid,) = filed_reversals(console_bench, 1)
    c = signed_in(client_for, "bob")
    csrf = c.get("/reversals").csrf()
    assert c.post("/reversals/decide", {"csrf": csrf, "id": str(rid), "decision": "approve", "comment": "ok"}).status == 303
    before = reversal_snapshot(console_bench)
    cases = [
        ({"id": str(rid), "decision": "reject", "comment": "again"}, 409, "is approved, not pending"),
        ({"id": "999", "decision": "approve", "comment": "x"}, 404, "reversal 999 does not exist"),
        ({"id": "x1", "decision": "approve", "comment": "x"}, 400, "must be a whole number"),
        ({"id": "", "decision": "approve", "comment": "x"}, 400, "no reversal id"),
        ({"id": str(rid), "decision": "undo", "comment": "x"}, 400, "approve or reject"),
    ]
    for fields, status, line in cases:
        r = c.post("/reversals/decide", {"csrf": csrf, **fields})
        assert_refused(r, status, line)
        assert r.text.count('id="error"') == 1
    assert reversal_snapshot(console_bench) == before


def test_the_filer_and_an_auditor_see_a_reversal_but_cannot_decide_it(client_for, console_bench):
    (rid,) = filed_reversals(console_bench, 1)
    before = reversal_snapshot(console_bench)
    for name, why, status in (("alice", "own", 403), ("carol", "role", 403), ("dave", "role", 403)):
        c = signed_in(client_for, name)
        page = c.get("/reversals")
        assert f'data-why="{why}"' in page.text and f'id="approve-{rid}"' not in page.text
        r = c.post("/reversals/decide", {"csrf": page.csrf(), "id": str(rid), "decision": "approve", "comment": "try"})
        assert_refused(r, status)
    pending = signed_in(client_for, "bob").get("/reversals")
    assert f'id="approve-{rid}"' in pending.text
    after = reversal_snapshot(console_bench)
    assert after[0] == before[0]  # the log has only the sign-ins since
    with console_bench.system.db.transaction() as s:
        assert {e.action for e in audit.entries(s, after[1] - before[1])} == {"console.sign_in"}


def payments_now(bench):
    from cardmgmt import settlement

    with bench.system.db.transaction() as s:
        return settlement.payments(s)


def test_finance_records_and_voids_a_payment_and_the_day_settles(client_for, console_bench):
    c = signed_in(client_for, "bob")
    page = c.get(f"/settlement?day={DAY1}")
    assert 'id="pay-form"' in page.text
    r = c.post(f"/settlement/pay?day={DAY1}", {"csrf": page.csrf(), "day": str(DAY1), "hall": "H01", "amount": "100.50",
                                               "reference": "SLIP-1", "note": "counter 2"})
    assert r.status == 303, r.text
    (paid,) = payments_now(console_bench)
    assert (paid["hall"], paid["day"], paid["amount"], paid["reference"], paid["recorded_by"]) == (
        "H01", str(DAY1), 10050, "SLIP-1", "bob")
    assert r.header("location") == f"/settlement?done=paid&ref={paid['payment']}&day={DAY1}"
    shown = c.get(r.header("location"))
    assert f"已录入解款 {paid['payment']}" in shown.text and f'id="void-{paid["payment"]}"' in shown.text
    rows = csv_rows(c, f"/settlement.csv?table=settlement&day={DAY1}&lang=en")
    assert rows == [["Hall", "Carried in (yuan)", "Cards", "Owed (yuan)", "Paid in (yuan)", "Balance (yuan)"],
                    ["H01", "0.00", "0", "0.00", "100.50", "-100.50"]]
    with console_bench.unit() as ctx:
        report = reports.settlement(ctx.session, reports.Period(DAY1, DAY1), "hall")
    assert report.total["paid"] == 10050 and report.total["balance"] == -10050
    r = c.post(f"/settlement/void?day={DAY1}", {"csrf": page.csrf(), "id": str(paid["payment"]), "reason": "wrong slip"})
    assert r.status == 303 and "done=voided" in r.header("location")
    with console_bench.unit() as ctx:
        assert reports.settlement(ctx.session, reports.Period(DAY1, DAY1), "hall").total["paid"] == 0
        assert [(e.operator, e.action) for e in audit.entries(ctx.session, 2)] == [("bob", "settle.void"), ("bob", "settle.pay")]


def test_bad_payments_and_voids_are_one_line_and_change_nothing(client_for, console_bench):
    c = signed_in(client_for, "bob")
    csrf = c.get(f"/settlement?day={DAY1}").csrf()
    good = {"csrf": csrf, "day": str(DAY1), "hall": "H01", "amount": "50", "reference": "SLIP-9"}
    assert c.post(f"/settlement/pay?day={DAY1}", good).status == 303
    (paid,) = payments_now(console_bench)
    assert c.post("/settlement/void", {"csrf": csrf, "id": str(paid["payment"]), "reason": "typo"}).status == 303
    assert c.post(f"/settlement/pay?day={DAY1}", good).status == 303  # voiding freed the slip
    before = payments_now(console_bench)
    standing = before[-1]["payment"]
    cases = [
        ("pay", {**good, "amount": "1.234"}, 400, "more than two decimal places"),
        ("pay", {**good, "amount": "fifty", "reference": "SLIP-10"}, 400, "is not a number of yuan"),
        ("pay", {**good, "amount": "", "reference": "SLIP-10"}, 400, "is not a number of yuan"),
        ("pay", good, 409, "already recorded"),
        ("pay", {**good, "hall": "NOPE", "reference": "SLIP-11"}, 404, "does not exist"),
        ("pay", {**good, "day": "2099-01-01", "reference": "SLIP-12"}, 400, "in the future"),
        ("void", {"csrf": csrf, "id": str(paid["payment"]), "reason": "again"}, 409, "already voided"),
        ("void", {"csrf": csrf, "id": "999", "reason": "x"}, 404, "payment 999 does not exist"),
        ("void", {"csrf": csrf, "id": str(standing), "reason": " "}, 400, "give a reason"),
    ]
    for action, fields, status, line in cases:
        r = c.post(f"/settlement/{action}?day={DAY1}", fields)
        assert_refused(r, status, line)
        assert r.text.count('id="error"') == 1 and f'value="{DAY1}"' in r.text
    assert payments_now(console_bench) == before


def test_an_auditor_and_an_administrator_see_settlement_but_cannot_act(client_for, console_bench):
    for name in ("carol", "alice"):
        c = signed_in(client_for, name)
        page = c.get(f"/settlement?day={DAY1}")
        assert page.status == 200 and 'id="pay-form"' not in page.text and 'data-why="role"' in page.text
        r = c.post(f"/settlement/pay?day={DAY1}", {"csrf": page.csrf(), "day": str(DAY1), "hall": "H01",
                                                   "amount": "10", "reference": f"SLIP-{name}"})
        assert_refused(r, 403, "record and void")
    assert payments_now(console_bench) == []


def test_the_health_page_charts_the_last_day_hour_by_hour(client_for, console_bench):
    from cardmgmt.models import PinFailure, utcnow

    now = utcnow()
    ledger = Ledger(console_bench.system.db)
    ledger.add("3100000001", 5000, now - dt.timedelta(hours=3))  # pending ever since
    with console_bench.system.db.transaction() as s:
        s.add(PinFailure(caller="13800138000", account_no="3100000001", at=now - dt.timedelta(hours=2)))
    page = signed_in(client_for, "carol").get("/health")
    assert page.status == 200 and 'id="t-hourly"' in page.text
    with console_bench.unit() as ctx:
        rows = reports.hourly(ctx.session, utcnow())
    whole = {r["hour"][5:16].replace("T", " "): r for r in rows[:24]}  # the whole hours; the one under way moves on
    backlog, wrong = bars(page.text, "backlog"), bars(page.text, "wrong-pins")
    assert {k: v for k, v in backlog.items() if k in whole} == {k: r["backlog"] for k, r in whole.items()}
    assert {k: v for k, v in wrong.items() if k in whole} == {k: r["wrong_pins"] for k, r in whole.items()}
    assert sum(wrong.values()) == 1 and list(backlog.values())[-1] == 1
    assert csv_rows(signed_in(client_for, "bob"), "/health.csv?table=hourly")[0][0] == "小时末（UTC）"
