"""``lockout``: callers and accounts locked out after too many wrong PINs, and clearing them."""

# test-case-name: tests.cli.test_root, tests.cardmgmt.test_recharge

import click

from cardmgmt import lockouts
from cardmgmt.context import Permission
from cardmgmt.recharge import Policy
from cli import App, cli, emit, json_option, pass_app


@cli.group()
def lockout() -> None:
    """Callers and accounts locked out after too many wrong PINs."""


@lockout.command("list")
@json_option
@pass_app
def lockout_list(app: App, as_json: bool) -> None:
    """List current lockouts.  Example: cli.py -u alice lockout list"""
    with app.unit(Permission.VIEW) as ctx:
        rows = lockouts.active(ctx, Policy.from_settings(app.settings))
    emit(rows, as_json)


@lockout.command("clear")
@click.argument("kind", type=click.Choice(sorted(lockouts.KINDS)))
@click.argument("value")
@click.option("--reason", required=True)
@pass_app
def lockout_clear(app: App, kind: str, value: str, reason: str) -> None:
    """Clear a lockout.  Example: cli.py -u alice lockout clear account 3100000001 --reason 'verified at counter'"""
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        n = lockouts.clear(ctx, kind, value, reason)
    click.echo(f"{kind} {value}: {n} wrong PINs cleared")
