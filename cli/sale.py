"""``sale``: cards sold at a business hall (售卡), unsold cards returned to the warehouse (退库), and the sales list."""

# test-case-name: tests.cli.test_sale

import datetime as dt
from typing import Any

import click

from cardmgmt import sales
from cardmgmt.context import Permission
from cardmgmt.models import Sale
from cardmgmt.money import format_fen
from cli import App, cli, emit, json_option, make_selection, parse_date, pass_app, selection_options


@cli.group()
def sale() -> None:
    """Card sales at business halls: record a sale, take unsold cards back, list sales."""


def _row(s: Sale, hall: str) -> dict[str, Any]:
    return {"sale": s.id, "hall": hall, "day": s.day.isoformat(), "first_serial": s.first_serial,
            "last_serial": s.last_serial, "cards": s.quantity, "amount": s.amount, "channel": s.channel, "seller": s.seller}


@sale.command("record")
@click.option("--hall", "hall_code", required=True, help="The hall that sold the cards (they must be issued to it).")
@selection_options
@click.option("--key", help="An idempotency key: recording the same key again changes nothing.")
@json_option
@pass_app
def sale_record(app: App, hall_code: str, key: str | None, as_json: bool, **sel: Any) -> None:
    """Record a sale at a hall: one card, a box, or a serial range; only sold cards can be redeemed.

    \b
    Examples:
      cli.py -u alice sale record --hall H01 --serial 000000000018
      cli.py -u alice sale record --hall H01 --batch B001 --box 3
      cli.py -u alice sale record --hall H01 --from 000000000018 --to 000000000984
    """
    with app.unit(Permission.SELL_CARDS) as ctx:
        done = sales.sell(ctx, hall_code, make_selection(**sel), key=key)
        row = _row(done.sale, done.hall)
    if as_json:
        emit([{**row, "repeated": done.repeated}], True)
        return
    what = "already recorded as" if done.repeated else "recorded:"
    click.echo(f"sale {what} {row['cards']} cards ({row['first_serial']}-{row['last_serial']}) at hall {row['hall']}, "
               f"{format_fen(row['amount'])} yuan owed on {row['day']}")


@sale.command("return")
@click.option("--hall", "hall_code", required=True, help="The hall giving the cards back.")
@selection_options
@click.option("--reason", required=True, help="Why (recorded in the operation log).")
@json_option
@pass_app
def sale_return(app: App, hall_code: str, reason: str, as_json: bool, **sel: Any) -> None:
    """Take a hall's unsold cards back into the warehouse's stock (退库), all of them or none.

    Example: cli.py -u alice sale return --hall H01 --batch B001 --box 7 --reason 'hall closing'
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        back = sales.return_unsold(ctx, hall_code, make_selection(**sel), reason)
        row = {"return": back.id, "hall": hall_code, "first_serial": back.first_serial, "last_serial": back.last_serial,
               "cards": back.quantity, "amount": back.amount}
    if as_json:
        emit([row], True)
    else:
        click.echo(f"{row['cards']} unsold cards ({row['first_serial']}-{row['last_serial']}) back in stock from hall {hall_code}")


@sale.command("list")
@click.option("--hall", "hall_code", help="Only this hall, or every hall beneath this office.")
@click.option("--from", "day_from", callback=parse_date, help="First business day (YYYY-MM-DD).")
@click.option("--to", "day_to", callback=parse_date, help="Last business day, inclusive.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@json_option
@pass_app
def sale_list(app: App, hall_code: str | None, day_from: dt.date | None, day_to: dt.date | None, limit: int,
              as_json: bool) -> None:
    """Recorded sales, newest first; amounts in yuan (--json: fen).

    Example: cli.py -u carol sale list --hall TS-LB --from 2027-01-01 --to 2027-01-31
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = [_row(s, code) for s, code in sales.listing(ctx.session, hall_code=hall_code, day_from=day_from,
                                                            day_to=day_to, limit=limit)]
    emit(rows, as_json)
