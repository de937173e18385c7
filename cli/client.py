"""``client``: channel clients (the hotline, POS terminals, partners), each with its own revocable key."""

# test-case-name: tests.cli.test_client

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from cardmgmt import channel_clients, tls
from cardmgmt.context import Permission
from cardmgmt.keys import read_hex_key
from cardmgmt.money import format_fen
from cli import App, cli, emit, emit_json, json_option, pass_app


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


def _server(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.port is None:
        raise click.UsageError(f"--server {url[:80]!r} must be https://HOST:PORT (the servers speak TLS only)")
    return parts.hostname, parts.port


@client.command("sell")
@click.argument("name")
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The terminal's key file (written by `client add --out`).")
@click.option("--server", "servers", required=True, multiple=True,
              help="A recharge server, https://HOST:PORT; repeat for the pair, the primary first.")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The installation's certificate authority [default: tls-ca.pem in the key directory].")
@click.option("--sale-key", required=True, help="The sale's idempotency key (a receipt number): the same key again is the same sale.")
@click.option("--serial", help="One card's serial.")
@click.option("--from", "first", help="First serial of a range (with --to).")
@click.option("--to", "last", help="Last serial of a range (with --from).")
@click.option("--batch", "batch_no", help="A batch (with --box).")
@click.option("--box", "box_no", type=int, help="A box of --batch.")
@json_option
@pass_app
def client_sell(app: App, name: str, key_file: Path, servers: tuple[str, ...], ca_file: Path | None, sale_key: str,
                serial: str | None, first: str | None, last: str | None, batch_no: str | None, box_no: int | None,
                as_json: bool) -> None:
    """Sell cards as POS terminal NAME through the sales-point API (what a terminal at the hall sends).

    Needs no operator: the terminal's key signs the request, and the servers
    let it sell only its own hall's cards.

    Example: cli.py client sell pos-h01-1 --key-file pos-h01-1.key --server https://127.0.0.1:8441 --sale-key R-0001 --batch B001 --box 3
    """
    from ivr.client import tls_context
    from recharge_server.sales_point import SalesPointClient

    cards: dict[str, Any] = {k: v for k, v in (("serial", serial), ("first_serial", first), ("last_serial", last),
                                               ("batch", batch_no), ("box", box_no)) if v is not None}
    ca = ca_file or app.settings.key_dir / tls.CA_CERT
    seller = SalesPointClient([_server(u) for u in servers], read_hex_key(key_file), client=name,
                              tls=tls_context(str(ca)))
    status, answer = seller.sell(sale_key, **cards)
    if status == 503:
        raise click.ClickException("no recharge server could answer; repeat the same command (the same --sale-key "
                                   "never sells twice)")
    if status != 200:
        raise click.ClickException(f"{answer.get('error', 'refused')}: {answer.get('message', f'HTTP {status}')}")
    if as_json:
        emit_json(answer)
        return
    what = "already sold as sale" if answer["repeated"] else "sold: sale"
    click.echo(f"{what} {answer['sale']}: {answer['cards']} cards ({answer['first_serial']}-{answer['last_serial']}) "
               f"at hall {answer['hall']}, {format_fen(answer['amount'])} yuan on {answer['day']}")
