"""The hall hierarchy (``halls.tree``, as ``cli.py hall list``): unsold stock and sales rolled up, and stock value by hall."""

# test-case-name: tests.console.test_web

from cardmgmt import halls
from cardmgmt.context import Context
from cardmgmt.models import HallLevel
from cardmgmt.money import format_fen
from console.charts import Bar, bar_chart
from console.pages import Env, Form, Page, View, date_field
from console.tables import Column, Table

COLUMNS = [
    Column("code", "col.code"), Column("name", "col.name"), Column("level", "col.level"), Column("parent", "col.parent"),
    Column("unsold_cards", "col.unsold_cards"), Column("unsold_value", "col.unsold_value", money=True),
    Column("sold_cards", "col.sold_cards"), Column("sold_value", "col.sold_value", money=True),
]


def view(ctx: Context, query: Form, env: Env) -> View:
    day_from, day_to = date_field(query, "from"), date_field(query, "to")
    nodes = halls.tree(ctx.session, sold_from=day_from, sold_to=day_to)
    rows = [{"code": n.code, "name": n.name, "level": env.t(f"level.{n.level.value}"), "parent": n.parent or "",
             "depth": n.depth, "unsold_cards": n.total.unsold_cards, "unsold_value": n.total.unsold_value,
             "sold_cards": n.total.sold_cards, "sold_value": n.total.sold_value} for n in nodes]
    chart = bar_chart(env.t("chart.stock_value_by_hall"),
                      [Bar(n.code, n.own.unsold_value, format_fen(n.own.unsold_value)) for n in nodes
                       if n.level is HallLevel.HALL])
    return View(tables=[Table("halls", COLUMNS, rows)], charts=[chart],
                facts={"from": day_from.isoformat() if day_from else "", "to": day_to.isoformat() if day_to else ""})


PAGE = Page("halls", "page.halls", "halls.html", view)
