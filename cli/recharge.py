"""``recharge``: customer service's look-ups of recharges (by card, account, reference, day, channel)."""

# test-case-name: tests.cli.test_recharge

import click

from cardmgmt import lookups
from cardmgmt.channel_clients import CHANNELS
from cardmgmt.context import Permission
from cli import App, cli, emit, json_option, pass_app


@cli.group()
def recharge() -> None:
    """Recharges (充值业务明细) as customer service looks them up."""


@recharge.command("find")
@click.option("--serial", help="The card's serial (12 digits, printed on the card).")
@click.option("--account", help="The electricity account number (10 digits).")
@click.option("--ref", help="The recharge reference the caller heard: yymmdd and the record number.")
@click.option("--day", help="A business day (Beijing time), like 2026-11-30.")
@click.option("--channel", help=f"The channel: {', '.join(CHANNELS)}.")
@click.option("--limit", type=int, default=lookups.DEFAULT_LIMIT, show_default=True,
              help=f"At most this many rows (1-{lookups.MAX_LIMIT}).")
@json_option
@pass_app
def recharge_find(app: App, serial: str | None, account: str | None, ref: str | None, day: str | None,
                  channel: str | None, limit: int, as_json: bool) -> None:
    """Find recharges, newest first; the criteria given are combined.

    Each row: reference, time (Beijing), account (masked), amount (yuan; fen
    in --json), card serial, channel, and whether the marketing system has it
    (post_status pending / posted / rejected).

    \b
    Examples:
      cli.py -u carol recharge find --ref 26113000000042
      cli.py -u carol recharge find --account 3100000001 --day 2026-11-30
      cli.py -u carol recharge find --serial 000000000018 --json
      cli.py -u carol recharge find --day 2026-11-30 --channel pos --limit 200
    """
    query = lookups.RechargeQuery(serial=serial, account=account, ref=ref, day=day, channel=channel, limit=limit)
    with app.unit(Permission.VIEW) as ctx:
        rows = lookups.find_recharges(ctx, query)
    emit(rows, as_json, None if as_json else ["ref", "at", "account", "amount", "serial", "channel", "post_status"])
