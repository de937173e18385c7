"""The console's money pages over real HTTPS: reports with their charts, reversals to decide, settlement payments.

Each test runs on SQLite and on PostgreSQL against a console of its own
(``client_for`` in conftest); recharges are written straight into the card
database (``testkit.marketing.Ledger``).  Every refusal is checked to have
changed nothing.
"""

import datetime as dt
import re

from cardmgmt import reports
from cardmgmt.days import day_bounds
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
    for name in ("sales", "reversals", "stock_value"):
        assert c.get(f"/reports.csv?table={name}").status == 200
    # The link to each table's CSV keeps the period.
    assert f'/reports.csv?table=recharges&amp;from={DAY1}&amp;to={DAY2}' in page.text


def test_stock_value_by_place_is_report_stock_value(client_for, console_bench):
    with console_bench.unit() as ctx:
        expected = reports.stock_value(ctx.session, "hall").rows
    held = sum(r["value"] for r in expected if r["state"] in ("in_stock", "issued"))
    page = signed_in(client_for, "bob").get("/reports")
    assert sum(bars(page.text, "stock-value").values()) == held == 40 * 5000
    assert len(csv_rows(signed_in(client_for, "carol"), "/reports.csv?table=stock_value")) == len(expected) + 1


def test_a_bad_period_is_one_line_and_every_role_sees_the_page(client_for):
    c = signed_in(client_for, "carol")
    assert_refused(c.get("/reports?from=2026-13-01"), 400, "is not a date")
    assert_refused(c.get(f"/reports?from={DAY2}&to={DAY1}"), 400, "is after")
    for name in ("alice", "bob"):
        assert signed_in(client_for, name).get("/reports?lang=en").status == 200
