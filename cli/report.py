"""``report``: stock, batch and issue reports."""

# test-case-name: tests.cli.test_report

import click

from cardmgmt import reports
from cardmgmt.operators import Permission
from cli import App, cli, emit, json_option, pass_app


@cli.group()
def report() -> None:
    """Stock, batch and issue reports."""


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
    """Batch summary: order, expiry, factory and card states."""
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.batch_summary(ctx.session)
    emit(rows, as_json)


@report.command("issues")
@json_option
@pass_app
def report_issues(app: App, as_json: bool) -> None:
    """Issue history: requests, decisions, collections."""
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.issue_history(ctx.session)
    emit(rows, as_json)
