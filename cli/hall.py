"""``hall``: the business halls that receive issued cards."""

# test-case-name: tests.cli.test_hall

import click

from cardmgmt import halls
from cardmgmt.operators import Permission
from cli import App, cli, emit, json_option, pass_app


@cli.group()
def hall() -> None:
    """Business halls that receive issued cards."""


@hall.command("add")
@click.argument("code")
@click.argument("name")
@pass_app
def hall_add(app: App, code: str, name: str) -> None:
    """Register a hall.  Example: cli.py -u alice hall add H01 "Lubei business hall" """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        halls.add(ctx, code, name)
    click.echo(f"hall {code} added")


@hall.command("list")
@json_option
@pass_app
def hall_list(app: App, as_json: bool) -> None:
    """List halls."""
    with app.unit(Permission.VIEW) as ctx:
        rows = [{"code": h.code, "name": h.name} for h in halls.listing(ctx.session)]
    emit(rows, as_json)
