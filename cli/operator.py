"""``operator``: adding, disabling and listing the people who may use the system."""

# test-case-name: tests.cli.test_operator

import click

from cardmgmt import operators
from cardmgmt.operators import Permission
from cli import App, cli, emit, json_option, pass_app


@cli.group()
def operator() -> None:
    """Operators and roles (admin, finance, auditor)."""


@operator.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice([r.value for r in operators.Role]))
@click.password_option("--new-password", envvar="CARDS_NEW_PASSWORD", prompt="password for the new operator", help="[env CARDS_NEW_PASSWORD]")
@pass_app
def operator_add(app: App, name: str, role: str, new_password: str) -> None:
    """Add an operator.  Example: cli.py -u alice operator add bob --role finance"""
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.add(ctx, name, operators.Role(role), new_password)
    click.echo(f"operator {name} added as {role}")


@operator.command("disable")
@click.argument("name")
@pass_app
def operator_disable(app: App, name: str) -> None:
    """Disable an operator's account (it stays in the log)."""
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.disable(ctx, name)
    click.echo(f"operator {name} disabled")


@operator.command("list")
@json_option
@pass_app
def operator_list(app: App, as_json: bool) -> None:
    """List operators and their roles."""
    with app.unit(Permission.VIEW) as ctx:
        rows = [{"name": o.name, "role": o.role, "active": o.active} for o in operators.listing(ctx.session)]
    emit(rows, as_json)
