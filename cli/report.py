"""``report``: stock, batch and issue reports; sales, recharges, settlement and stock value in yuan.

Each report over business days is one function in ``cardmgmt.reports`` and
one command here, printed by ``emit_report``: a table with a total line,
``--csv`` (the rows, money in yuan) or ``--json`` (rows and total, fen).
"""

# test-case-name: tests.cli.test_report

import datetime as dt
from collections.abc import Callable
from typing import Any

import click

from cardmgmt import reports
from cardmgmt.context import Permission
from cli import App, cli, csv_option, emit, emit_json, json_option, one_format, parse_date, pass_app


@cli.group()
def report() -> None:
    """Stock, batch and issue reports; sales, recharges, settlement and stock value over business days."""


@report.command("stock")
@click.option("--by", type=click.Choice(reports.DIMENSIONS), default="face-value", show_default=True)
@json_option
@pass_app
def report_stock(app: App, by: str, as_json: bool) -> None:
    """Cards by state, grouped by face value, batch, state or hall.  Example: cli.py -u carol report stock --by hall"""
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.stock(ctx.session, by)
    emit(rows, as_json)


@report.command("batches")
@json_option
@pass_app
def report_batches(app: App, as_json: bool) -> None:
    """Batch summary: order, expiry, factory and card states.

    Example: cli.py -u carol report batches --json
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.batch_summary(ctx.session)
    emit(rows, as_json)


@report.command("issues")
@json_option
@pass_app
def report_issues(app: App, as_json: bool) -> None:
    """Issue history: requests, decisions, collections.

    Example: cli.py -u carol report issues
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.issue_history(ctx.session)
    emit(rows, as_json)


# --- reports over business days, in yuan (--json in fen, --csv for spreadsheets) ------------------------------


def period_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--from/--to: business days (UTC+8), inclusive; today when left out."""
    f = click.option("--to", "day_to", callback=parse_date, help="Last business day, inclusive (default: today).")(f)
    return click.option("--from", "day_from", callback=parse_date,
                        help="First business day, YYYY-MM-DD (default: today).")(f)


def hall_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--hall", "hall_code", help="Only this hall, or the halls beneath this office.")(f)


def emit_report(rep: reports.Report, as_json: bool, as_csv: bool) -> None:
    """A report as JSON (the rows and total, money in fen), CSV (the rows, yuan) or a table with a total line (yuan)."""
    if as_json:
        one_format(as_json, as_csv)
        emit_json(rep.as_dict())
        return
    if as_csv or not rep.rows:
        emit(rep.rows, False, rep.columns, as_csv=as_csv)
        return
    total = {**{k: "" for k in rep.keys}, rep.keys[0]: "total", **rep.total}
    emit([*rep.rows, total], False, rep.columns)


def _period_report(
    name: str, service: Callable[..., reports.Report], dimensions: tuple[str, ...], default: str, by_help: str | None,
    doc: str,
) -> None:
    """Register ``report NAME``: a money report over business days, by one of ``dimensions``, for one hall or office."""

    @report.command(name, help=doc)
    @period_options
    @click.option("--by", type=click.Choice(dimensions), default=default, show_default=True, help=by_help)
    @hall_option
    @json_option
    @csv_option
    @pass_app
    def command(app: App, day_from: dt.date | None, day_to: dt.date | None, by: str, hall_code: str | None,
                as_json: bool, as_csv: bool) -> None:
        one_format(as_json, as_csv)
        with app.unit(Permission.VIEW) as ctx:
            rep = service(ctx.session, reports.Period.of(day_from, day_to), by, hall_code)
        emit_report(rep, as_json, as_csv)


_period_report("sales", reports.sales, reports.SALES_BY, "day", None, """\
Cards sold at halls: sales, cards and yuan owed per day, hall, channel or face value.

Example: cli.py -u carol report sales --from 2027-01-01 --to 2027-01-31 --by hall --csv > sales.csv
""")
_period_report("recharges", reports.recharges, reports.RECHARGES_BY, "day",
               "hall: the hall that sold the card; face-value: the card's batch's.", """\
Recharges committed: how many and their yuan per day, hall, channel or face value.

Example: cli.py -u carol report recharges --from 2027-01-05 --by channel
""")
_period_report("reversals", reports.reversals, reports.REVERSALS_BY, "day",
               "day: the business day of approval; channel: the original recharge's; hall: the one that sold the card.",
               """\
Approved reversals (冲正): how many, the yuan taken back and how many are posted, per day, channel or hall.

Example: cli.py -u carol report reversals --from 2027-01-01 --to 2027-01-31 --by channel --csv
""")
_period_report("settlement", reports.settlement, reports.SETTLEMENT_BY, "hall",
               "hall: a row per hall and day; day: the halls rolled up, a row per day.", """\
Hall settlement (解交) per business day: opening balance, cards sold, owed, paid in, closing balance.

balance = opening + owed - paid; the opening of a day is the balance of
the day before.  With --hall an office, its halls (--by day: rolled up).

\b
Examples:
  cli.py -u bob report settlement --from 2027-01-01 --to 2027-01-07 --hall H01
  cli.py -u bob report settlement --from 2027-01-01 --to 2027-01-31 --hall TS --by day --csv
""")


@report.command("stock-value")
@click.option("--by", type=click.Choice(reports.STOCK_VALUE_BY), default="hall", show_default=True,
              help="hall: where the cards are (a hall, or the warehouse); state: face value and state only.")
@json_option
@csv_option
@pass_app
def report_stock_value(app: App, by: str, as_json: bool, as_csv: bool) -> None:
    """Cards now by state and face value, with their face value in yuan; by hall or warehouse.

    Example: cli.py -u carol report stock-value --csv > stock-value.csv
    """
    one_format(as_json, as_csv)
    with app.unit(Permission.VIEW) as ctx:
        rep = reports.stock_value(ctx.session, by)
    emit_report(rep, as_json, as_csv)
