"""``card``: voiding, freezing, unfreezing and showing single cards and ranges."""

# test-case-name: tests.cli.test_card

from collections.abc import Callable
from typing import Any

import click

from cardmgmt import issuing, lookups, stock
from cardmgmt.context import Context, Permission
from cardmgmt.states import PAST, Event
from cli import App, cli, emit, emit_record, json_option, make_selection, pass_app, selection_options


@cli.group()
def card() -> None:
    """Single cards and ranges: void, freeze, unfreeze, show."""


def _card_change(name: str, service: Callable[[Context, stock.Selection, str | None], int], confirm: bool, doc: str) -> None:
    @card.command(name, help=doc)
    @selection_options
    @click.option("--reason", required=True, help="Why (recorded in the operation log).")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @pass_app
    def command(app: App, reason: str, yes: bool, **sel: Any) -> None:
        selection = make_selection(**sel)
        if confirm and not yes:
            click.confirm(f"{name} {selection.describe()}? This cannot be undone", abort=True)
        with app.unit(Permission.MANAGE_CARDS) as ctx:
            n = service(ctx, selection, reason)
            held = issuing.reserved_among(ctx.session, selection)
        click.echo(f"{n} cards {PAST[Event(name)]}")
        for rid, k in held.items():
            if name == "unfreeze":
                click.echo(f"{k} of them are reserved for issue request {rid} again")
            else:
                click.echo(f"{k} of them are reserved for issue request {rid}; it is collected only when every card it"
                           " reserved is in stock (unfreeze them, or cancel the request)")


_card_change("void", stock.void, True, "Void cards for good (damaged, wrong, lost).\n\nExample: cli.py -u alice card void --serial 000000000017 --reason 'torn at pick check'")
_card_change("freeze", stock.freeze, False, "Freeze cards reported lost or stolen.\n\nExample: cli.py -u alice card freeze --batch B001 --box 7 --reason 'box reported stolen'")
_card_change("unfreeze", stock.unfreeze, False, "Unfreeze cards; they return to the state they were frozen from.\n\nExample: cli.py -u alice card unfreeze --batch B001 --box 7 --reason 'box found at the hall'")


@card.command("show")
@click.argument("serial")
@json_option
@pass_app
def card_show(app: App, serial: str, as_json: bool) -> None:
    """Show one card: batch, box, state, hall, the request it is reserved for or was issued under, and its recharge.

    A redeemed card shows its recharge: reference, time (Beijing), the account
    (masked), channel and whether the marketing system has it (post_status).
    Never shows the PIN.

    Example: cli.py -u carol card show 000000000018 --json
    """
    with app.unit(Permission.VIEW) as ctx:
        row = lookups.card(ctx, serial)
    if as_json:
        emit([row], True)
    else:
        emit_record(row)
