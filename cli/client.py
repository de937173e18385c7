"""``client``: channel clients (the hotline, POS terminals, partners), each with its own revocable key."""

# test-case-name: tests.cli.test_client

from pathlib import Path

import click

from cardmgmt import channel_clients
from cardmgmt.operators import Permission
from cli import App, cli, emit, json_option, pass_app


@cli.group()
def client() -> None:
    """Channel clients (the hotline, POS terminals, partners): each with its own revocable key."""


@client.command("add")
@click.argument("name")
@click.option("--channel", required=True, type=click.Choice(channel_clients.CHANNELS), help="The client's channel.")
@click.option("--hall", "hall_code", help="A POS terminal's hall: the one hall whose cards it may sell.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="New owner-only file for the client's key, to install on its host (never overwritten).")
@pass_app
def client_add(app: App, name: str, channel: str, hall_code: str | None, out: Path) -> None:
    """Register a channel client and write its signing key to --out.

    A POS terminal (--channel pos) sells cards through the sales-point API
    only with --hall, and only that hall's cards.

    Example: cli.py -u alice client add pos-h01-1 --channel pos --hall H01 --out pos-h01-1.key
    """
    with app.unit(Permission.MANAGE_CLIENTS) as ctx:
        # Written inside the unit: a key file that cannot be written leaves no client registered.
        channel_clients.write_key_file(out, channel_clients.add(ctx, name, channel, hall=hall_code))
    at = f" at hall {hall_code}" if hall_code else ""
    click.echo(f"channel client {name} ({channel}{at}) registered; its key is in {out} (owner-only)")


@client.command("key")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="New owner-only file for the key (never overwritten).")
@pass_app
def client_key(app: App, name: str, out: Path) -> None:
    """Write a registered client's key again (a host reinstalled); recorded in the operation log.

    Example: cli.py -u alice client key hotline --out /tmp/agi-host-2.key
    """
    with app.unit(Permission.MANAGE_CLIENTS) as ctx:
        channel_clients.write_key_file(out, channel_clients.key_of(ctx, name))
    click.echo(f"the key of channel client {name} is in {out} (owner-only)")


@client.command("list")
@json_option
@pass_app
def client_list(app: App, as_json: bool) -> None:
    """List channel clients, revoked ones included.  Example: cli.py -u alice client list --json"""
    with app.unit(Permission.VIEW) as ctx:
        rows = channel_clients.listing(ctx.session)
    emit(rows, as_json, None if as_json else ["name", "channel", "hall", "created_by", "created_at", "revoked_at", "revoked_by", "reason"])


@client.command("revoke")
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded in the client table and the operation log).")
@pass_app
def client_revoke(app: App, name: str, reason: str) -> None:
    """Revoke a channel client: both recharge servers refuse its requests within 5 seconds.

    Example: cli.py -u alice client revoke pos-hall-7 --reason "terminal stolen"
    """
    with app.unit(Permission.MANAGE_CLIENTS) as ctx:
        channel_clients.revoke(ctx, name, reason)
    click.echo(f"channel client {name} revoked; both servers refuse it within {channel_clients.MAX_AGE_SECONDS:g} s")
