"""``stock``: taking checked cards into stock, the intake listing (入库明细), and stock counts (盘点)."""

# test-case-name: tests.cli.test_stock

import sys
from typing import Any

import click

from cardmgmt import lookups, stock
from cardmgmt.context import Permission
from cli import EXIT_DISCREPANCY, App, cli, emit, emit_json, json_option, make_selection, pass_app, selection_options


@cli.group("stock")
def stock_group() -> None:
    """Stock intake, the intake listing and stock counts.

    Cards reserved for approved issue requests are still in stock; `report
    stock` shows them as reserved beside the free ones.
    """


@stock_group.command("intake")
@selection_options
@pass_app
def stock_intake(app: App, **sel: Any) -> None:
    """Take checked cards into stock, by batch, box or serial range.

    Example: cli.py -u alice stock intake --batch B001 --box 3
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        records = stock.intake(ctx, make_selection(**sel))
        rows = [{"box": r.box_no, "first_serial": r.first_serial, "last_serial": r.last_serial, "cards": r.quantity} for r in records]
    emit(rows, False)
    click.echo(f"{sum(r['cards'] for r in rows)} cards taken into stock")


@stock_group.command("intakes")
@click.option("--batch", "batch_no", help="Only this batch's intakes.")
@click.option("--from", "first_day", metavar="DAY", help="From this business day (Beijing time), like 2026-11-01.")
@click.option("--to", "last_day", metavar="DAY", help="Up to and including this business day.")
@json_option
@pass_app
def stock_intakes(app: App, batch_no: str | None, first_day: str | None, last_day: str | None, as_json: bool) -> None:
    """List stock intakes (入库明细), oldest first: batch, box, serial range, cards, who and when.

    \b
    Examples:
      cli.py -u carol stock intakes --batch B001
      cli.py -u carol stock intakes --from 2026-11-01 --to 2026-11-30 --json
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = lookups.intakes(ctx, batch_no=batch_no, first_day=first_day, last_day=last_day)
    emit(rows, as_json)


@stock_group.command("count")
@selection_options
@click.option("--scanned", type=click.File("r"), help="File of the serials found, one per line.")
@click.option("--counted", type=click.IntRange(0), help="Number of cards found (when serials were not scanned).")
@json_option
@pass_app
def stock_count(app: App, scanned: Any, counted: int | None, as_json: bool, **sel: Any) -> None:
    """Record a stock count (盘点) of a box or range and report discrepancies (exit 3 if any).

    Example: cli.py -u alice stock count --batch B001 --box 3 --scanned box3.txt
    """
    lines = [line for line in scanned.read().splitlines() if line.strip()] if scanned else None
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        result = stock.count_stock(ctx, make_selection(**sel), scanned=lines, counted=counted)
        c = result.count
        doc = {"count_id": c.id, "scope": c.scope, "expected": c.expected, "counted": c.counted, "missing": c.missing,
               "unexpected": c.unexpected, "findings": [{"serial": f.serial, "finding": f.kind, "detail": f.detail} for f in result.findings]}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"count {c.id} of {c.scope}: expected {c.expected}, counted {c.counted}, missing {c.missing}, unexpected {c.unexpected}")
        if doc["findings"]:
            emit(doc["findings"], False)
    if not result.clean:
        sys.exit(EXIT_DISCREPANCY)
