"""``settle``: hall settlement (电费解交): payments recorded by finance, voids, and a hall's day checked against the back end."""

# test-case-name: tests.cli.test_settle

import datetime as dt
import sys
from pathlib import Path

import click

from cardmgmt import settlement
from cardmgmt.context import Permission
from cardmgmt.money import format_fen
from cli import EXIT_DISCREPANCY, App, cli, csv_option, emit, emit_json, json_option, parse_date, pass_app


@cli.group()
def settle() -> None:
    """Hall settlement: what halls paid for the cards they sold, and their sales checked against the back end.

    The figures (owed, paid, balance carried day to day) are in
    `cli.py report settlement`.
    """


@settle.command("pay")
@click.option("--hall", "hall_code", required=True, help="The hall that paid.")
@click.option("--day", required=True, callback=parse_date, help="The business day the money settles (YYYY-MM-DD).")
@click.option("--amount", required=True, help="Yuan paid in, at most two decimals (1234.50).")
@click.option("--ref", "reference", required=True, help="The bank slip's number; once per hall.")
@click.option("--note", help="Anything finance wants kept with it.")
@json_option
@pass_app
def settle_pay(app: App, hall_code: str, day: dt.date, amount: str, reference: str, note: str | None,
               as_json: bool) -> None:
    """Record money a hall paid in for a business day (finance staff only).

    Example: cli.py -u bob settle pay --hall H01 --day 2027-01-05 --amount 1234.50 --ref SLIP-77
    """
    with app.unit(Permission.RECORD_PAYMENTS) as ctx:
        p = settlement.record_payment(ctx, hall_code, day, amount, reference, note=note)
        row = settlement.payment_row(p, hall_code)
    if as_json:
        emit_json(row)
        return
    click.echo(f"payment {row['payment']} recorded: hall {hall_code} paid {format_fen(p.amount)} yuan "
               f"for {row['day']} (slip {p.reference})")


@settle.command("void")
@click.argument("payment_id", type=int)
@click.option("--reason", required=True, help="Why the payment was wrong (kept with the void and in the operation log).")
@json_option
@pass_app
def settle_void(app: App, payment_id: int, reason: str, as_json: bool) -> None:
    """Void a mistaken payment by a counter-entry on its hall and day; the payment itself stays on record.

    Its slip can then be recorded again with the right amount.

    Example: cli.py -u bob settle void 17 --reason "typed 1243.50 for 1234.50"
    """
    with app.unit(Permission.RECORD_PAYMENTS) as ctx:
        v = settlement.void_payment(ctx, payment_id, reason)
        [row] = settlement.payments(ctx.session, ids=[v.id])
    if as_json:
        emit_json(row)
        return
    click.echo(f"payment {payment_id} voided by entry {row['payment']}: {format_fen(-v.amount)} yuan taken off "
               f"hall {row['hall']}'s {row['day']}")


@settle.command("payments")
@click.option("--hall", "hall_code", help="Only this hall, or the halls beneath this office.")
@click.option("--from", "day_from", callback=parse_date, help="First business day (YYYY-MM-DD).")
@click.option("--to", "day_to", callback=parse_date, help="Last business day, inclusive.")
@json_option
@csv_option
@pass_app
def settle_payments(app: App, hall_code: str | None, day_from: dt.date | None, day_to: dt.date | None,
                    as_json: bool, as_csv: bool) -> None:
    """Payments and voids as recorded, oldest first; amounts in yuan (--json: fen).

    Example: cli.py -u bob settle payments --hall H01 --from 2027-01-01 --to 2027-01-31
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = settlement.payments(ctx.session, hall_code=hall_code, day_from=day_from, day_to=day_to)
    emit(rows, as_json, as_csv=as_csv)


@settle.command("reconcile")
@click.option("--hall", "hall_code", required=True, help="The hall whose day is checked.")
@click.option("--day", required=True, callback=parse_date, help="The business day (YYYY-MM-DD).")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_app
def settle_reconcile(app: App, hall_code: str, day: dt.date, file: Path, as_json: bool) -> None:
    """Check a hall's own record of a day's sales (CSV) against the back end's; exit 3 on any difference.

    The file: a header line naming first_serial,last_serial,cards,amount
    (any order; other columns ignored), then one sale per line, amount in
    yuan with at most two decimals.  A file that cannot be read is refused
    whole (exit 1).

    Example: cli.py -u bob settle reconcile --hall H01 --day 2027-01-05 H01-20270105.csv
    """
    sales = settlement.read_hall_file(file)
    with app.unit(Permission.VIEW) as ctx:
        rec = settlement.reconcile(ctx.session, hall_code, day, sales)
    if as_json:
        emit_json(rec.as_dict())
    else:
        for line in rec.lines:
            if line["outcome"] != settlement.MATCHED:
                click.echo(settlement.describe(line))
        c, t = rec.counts, rec.totals()
        click.echo(f"hall {rec.hall} {rec.day.isoformat()}: {c['matched']} matched, {c['differs']} differ, "
                   f"{c['only_in_file']} only in the hall's file, {c['only_in_backend']} only in the back end; "
                   f"hall {format_fen(t['file_amount'])} yuan, back end {format_fen(t['backend_amount'])} yuan")
    if not rec.agrees:
        sys.exit(EXIT_DISCREPANCY)
