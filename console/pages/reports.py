"""The money reports over business days (``--from``/``--to``, as ``cli.py report ...``), each table with its chart.

Recharges, sales and reversals by day are ``reports.recharges``,
``reports.sales`` and ``reports.reversals`` over the period asked for (by
default today's business day); the recharges are read once, by day and
channel (``reports.recharges_by_day_and_channel``), and summed per day for
the by-day table, which is ``report recharges --by day --json`` to the fen
(a browser test compares them).  Stock value by place is
``reports.stock_value(by="hall")``; its chart shows what each place holds
unsold (cards in stock at the warehouse, issued at a hall).  Every chart is
drawn from the rows of the table beside it.
"""

# test-case-name: tests.console.test_web

from collections.abc import Iterable

from markupsafe import Markup

from cardmgmt import reports
from cardmgmt.days import business_day
from cardmgmt.money import format_fen
from cardmgmt.states import CardState
from cardmgmt.system import Context
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


def _money_chart(title: str, name: str, rows: Iterable[Row], label: str, value: str = "amount") -> Markup:
    return bar_chart(title, [Bar(str(r[label]), int(r[value]), format_fen(int(r[value]))) for r in rows], name)


def by_day(rows: list[Row]) -> list[Row]:
    """Day-and-channel rows summed per day, in day order: ``recharges(by="day")``'s rows."""
    days: dict[str, Row] = {}
    for r in rows:
        d = days.setdefault(r["day"], {"day": r["day"], "recharges": 0, "amount": 0})
        d["recharges"] += r["recharges"]
        d["amount"] += r["amount"]
    return [days[k] for k in sorted(days)]


def view(ctx: Context, query: Form, env: Env) -> View:
    period = reports.Period.of(date_field(query, "from"), date_field(query, "to"), today=business_day(env.now))
    s = ctx.session
    split = reports.recharges_by_day_and_channel(s, period).rows
    recharges = by_day(split)
    sales = reports.sales(s, period, "day").rows
    reversals = reports.reversals(s, period, "day").rows
    value = reports.stock_value(s, "hall").rows
    places: dict[str, int] = {}
    for r in value:
        if r["state"] in UNSOLD:
            places[r["place"]] = places.get(r["place"], 0) + r["value"]
    shown_value = [{**r, "state": env.t(f"state.{r['state']}")} for r in value]
    channels = sorted({r["channel"] for r in split})
    charts = [_money_chart(env.t("chart.recharges_by_day"), "recharges", recharges, "day")]
    charts += [_money_chart(f"{env.t('chart.recharges_by_day')} · {c}", f"recharges-{c}",
                            (r for r in split if r["channel"] == c), "day") for c in channels]
    charts += [_money_chart(env.t("chart.sales_by_day"), "sales", sales, "day"),
               _money_chart(env.t("chart.reversals_by_day"), "reversals", reversals, "day"),
               _money_chart(env.t("chart.unsold_value_by_place"), "stock-value",
                            [{"place": p, "amount": v} for p, v in sorted(places.items())], "place")]
    return View(
        tables=[Table("recharges", RECHARGES, recharges), Table("recharges_by_channel", BY_CHANNEL, split),
                Table("sales", SALES, sales), Table("reversals", REVERSALS, reversals),
                Table("stock_value", STOCK_VALUE, shown_value)],
        charts=charts,
        facts={"from": period.first.isoformat(), "to": period.last.isoformat()},
    )


PAGE = Page("reports", "page.reports", "reports.html", view)
