"""The money reports over business days (``--from``/``--to``, as ``cli.py report ...``), each table with its chart.

Recharges, sales and reversals by day are ``reports.recharges``,
``reports.sales`` and ``reports.reversals`` over the period asked for (by
default today's business day); the recharges are read once, by day and
channel (``reports.recharges_by_day_and_channel``), and summed per day for
the by-day table (``reports.summed``), which is ``report recharges --by day
--json`` to the fen (a browser test compares them); closed business days
are read from their totals (``reports.close_days``), so a year costs about
what a day does.  Stock value by place is ``reports.stock_value(by="hall")``;
its chart shows what each place holds unsold (cards in stock at the
warehouse, issued at a hall).  It reads every card (as the stock page
does), so it is shown when asked for (``?value=1``, the page's button), not
with every period.  Every chart is drawn from the rows of the table beside it.
Periods longer than two months are shown by month (``reports.monthly``),
their by-day tables offered as CSV downloads.
"""

# test-case-name: tests.console.test_web

from collections.abc import Iterable

from markupsafe import Markup

from cardmgmt import reports
from cardmgmt.context import Context
from cardmgmt.days import business_day
from cardmgmt.money import format_fen
from cardmgmt.states import CardState
from console.charts import Bar, bar_chart
from console.pages import Env, Form, Page, View, date_field
from console.tables import Column, Row, Table

RECHARGES = [Column("day", "col.day"), Column("recharges", "col.recharges"), Column("amount", "col.amount", money=True)]
BY_CHANNEL = [Column("day", "col.day"), Column("channel", "col.channel"), Column("recharges", "col.recharges"),
              Column("amount", "col.amount", money=True)]
SALES = [Column("day", "col.day"), Column("sales", "col.sales"), Column("cards", "col.cards"),
         Column("amount", "col.amount", money=True)]
REVERSALS = [Column("day", "col.day"), Column("reversals", "col.reversals"), Column("amount", "col.amount", money=True),
             Column("posted", "col.posted")]
STOCK_VALUE = [Column("place", "col.place"), Column("face_value", "col.face_value", money=True),
               Column("state", "col.state"), Column("cards", "col.cards"), Column("value", "col.total_value", money=True)]
UNSOLD = (CardState.IN_STOCK.value, CardState.ISSUED.value)
# Longer periods are shown by month (a bar a day would make a year's chart 10,000 pixels tall, and a
# year's tables thousands of rows); their by-day tables are still there, as CSV downloads.
DAILY_UP_TO = 62


def _money_chart(title: str, name: str, rows: Iterable[Row], label: str, value: str = "amount") -> Markup:
    return bar_chart(title, [Bar(str(r[label]), int(r[value]), format_fen(int(r[value]))) for r in rows], name)


def _stock_value(ctx: Context, env: Env) -> tuple[Table, Markup]:
    """The card value by place and state, and the chart of what each place holds unsold."""
    value = reports.stock_value(ctx.session, "hall").rows
    places: dict[str, int] = {}
    for r in value:
        if r["state"] in UNSOLD:
            places[r["place"]] = places.get(r["place"], 0) + r["value"]
    shown = [{**r, "state": env.t(f"state.{r['state']}")} for r in value]
    chart = _money_chart(env.t("chart.unsold_value_by_place"), "stock-value",
                         [{"place": p, "amount": v} for p, v in sorted(places.items())], "place")
    return Table("stock_value", STOCK_VALUE, shown), chart


def _by_month(table: Table) -> Table:
    """A by-day table summed per month (``reports.monthly``), under the name ``<name>_by_month``."""
    keys = [c.key for c in table.columns if c.key in ("day", "channel")]
    measures = [c.key for c in table.columns if c.key not in keys]
    rep = reports.monthly(reports.Report(table.name, None, "day", keys, measures, list(table.rows)))
    columns = [Column("month", "col.month") if c.key == "day" else c for c in table.columns]
    return Table(f"{table.name}_by_month", columns, rep.rows)


def view(ctx: Context, query: Form, env: Env) -> View:
    period = reports.Period.of(date_field(query, "from"), date_field(query, "to"), today=business_day(env.now))
    s = ctx.session
    split = reports.recharges_by_day_and_channel(s, period)
    daily = [Table("recharges", RECHARGES, reports.summed(split, "day").rows),
             Table("recharges_by_channel", BY_CHANNEL, split.rows),
             Table("sales", SALES, reports.sales(s, period, "day").rows),
             Table("reversals", REVERSALS, reports.reversals(s, period, "day").rows)]
    long = len(period.days()) > DAILY_UP_TO
    shown = [_by_month(t) for t in daily] if long else daily
    per = "month" if long else "day"
    recharges, by_channel, sales, reversals = shown
    channels = sorted({r["channel"] for r in split.rows})
    title = env.t(f"chart.recharges_by_{per}")
    charts = [_money_chart(title, "recharges", recharges.rows, per)]
    charts += [_money_chart(f"{title} · {c}", f"recharges-{c}", (r for r in by_channel.rows if r["channel"] == c), per)
               for c in channels]
    charts += [_money_chart(env.t(f"chart.sales_by_{per}"), "sales", sales.rows, per),
               _money_chart(env.t(f"chart.reversals_by_{per}"), "reversals", reversals.rows, per)]
    with_value = query.get("value") == "1"
    if with_value:
        table, chart = _stock_value(ctx, env)
        shown.append(table)
        charts.append(chart)
    return View(tables=shown, charts=charts, downloads=daily if long else [],
                facts={"from": period.first.isoformat(), "to": period.last.isoformat(), "value": with_value})


PAGE = Page("reports", "page.reports", "reports.html", view)
