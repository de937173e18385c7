"""``hall``: the sales hierarchy (city → county → hall) that receives and sells issued cards."""

# test-case-name: tests.cli.test_hall

import datetime as dt
from dataclasses import asdict

import click

from cardmgmt import halls
from cardmgmt.context import Permission
from cardmgmt.models import HallLevel
from cli import App, cli, emit, emit_json, json_option, parse_date, pass_app


@cli.group()
def hall() -> None:
    """The sales hierarchy: city and county offices, and the business halls that sell cards."""


@hall.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--level", type=click.Choice([level.value for level in HallLevel]), default=HallLevel.HALL.value,
              show_default=True, help="What the node is; only a hall receives and sells cards.")
@click.option("--parent", help="Code of the office above it (a city, or a county).")
@pass_app
def hall_add(app: App, code: str, name: str, level: str, parent: str | None) -> None:
    """Register a hall or an office.

    \b
    Examples:
      cli.py -u alice hall add TS "Tangshan city" --level city
      cli.py -u alice hall add TS-LB "Lubei county" --level county --parent TS
      cli.py -u alice hall add H01 "Lubei business hall" --parent TS-LB
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        halls.add(ctx, code, name, level=level, parent=parent)
    click.echo(f"{level} {code} added" + (f" under {parent}" if parent else ""))


@hall.command("list")
@click.option("--from", "day_from", callback=parse_date, help="Count sales from this business day (YYYY-MM-DD).")
@click.option("--to", "day_to", callback=parse_date, help="Count sales up to this business day, inclusive.")
@json_option
@pass_app
def hall_list(app: App, day_from: dt.date | None, day_to: dt.date | None, as_json: bool) -> None:
    """The hierarchy, each node with its unsold stock and sales, rolled up from the halls beneath it.

    Amounts in yuan (--json: fen; `own` and `total` per node).

    Example: cli.py -u carol hall list --from 2027-01-01 --to 2027-01-31
    """
    with app.unit(Permission.VIEW) as ctx:
        nodes = halls.tree(ctx.session, sold_from=day_from, sold_to=day_to)
    if as_json:
        emit_json([{"code": n.code, "name": n.name, "level": n.level.value, "parent": n.parent,
                    "own": asdict(n.own), "total": asdict(n.total)} for n in nodes])
        return
    emit([{"code": "  " * n.depth + n.code, "name": n.name, "level": n.level.value,
           "unsold": n.total.unsold_cards, "unsold_value": n.total.unsold_value,
           "sold": n.total.sold_cards, "sold_value": n.total.sold_value} for n in nodes], False)
