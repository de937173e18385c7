"""Stock by hall and state (``reports.stock``, as ``cli.py report stock --by hall``), with the cards by state as a chart.

The cards by state are the by-hall rows summed per state, not a second
pass over every card: every card is in exactly one by-hall row (``(none)``
for those in no hall), so the sums are ``report stock --by state`` exactly
(a test compares them), at half the page's cost over a million cards.
"""

# test-case-name: tests.console.test_web

from cardmgmt import reports
from cardmgmt.context import Context
from console.charts import Bar, bar_chart
from console.pages import Env, Form, Page, View
from console.tables import Column, Table

BY_HALL = [Column("hall", "col.hall"), *(Column(s, f"state.{s}") for s in reports.STATES),
           Column("expired", "col.expired"), Column("total", "col.total")]
BY_STATE = [Column("state", "col.state"), Column("cards", "col.cards")]


def view(ctx: Context, _query: Form, env: Env) -> View:
    by_hall = reports.stock(ctx.session, "hall")
    by_state = [{"state": env.t(f"state.{s}"), "cards": sum(r[s] for r in by_hall)} for s in reports.STATES]
    chart = bar_chart(env.t("chart.cards_by_state"), [Bar(r["state"], r["cards"], str(r["cards"])) for r in by_state])
    return View(tables=[Table("by_hall", BY_HALL, by_hall), Table("by_state", BY_STATE, by_state)], charts=[chart])


PAGE = Page("stock", "page.stock", "stock.html", view)
