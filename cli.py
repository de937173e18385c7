#!/usr/bin/env python3
"""The card administrators' and finance staff's command line.

Thin on purpose: each command parses its options, calls one service in
``cardmgmt`` inside an authenticated unit of work, and prints the result as a
table or, with ``--json``, as JSON.  Every ``CardError`` becomes one line on
stderr and a non-zero exit code; no traceback reaches an operator.

Exit codes: 0 done; 1 refused (bad input, wrong role, illegal change, rejected
file, ...); 2 usage error; 3 done, but discrepancies were found (file check,
stock count, operation-log verification, a reconciliation mismatch, a failed
call-script step in ``replay``).
"""

# test-case-name: tests.test_cli

import csv
import dataclasses
import datetime as dt
import json
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from cardmgmt import (
    audit,
    batches,
    channel_clients,
    checks,
    factories,
    factory_sim,
    halls,
    issuing,
    lockouts,
    operators,
    reports,
    stock,
    tls,
)
from cardmgmt.config import Settings
from cardmgmt.db import current_revision, head_revision, make_engine, upgrade
from cardmgmt.errors import CardError, InvalidInput
from cardmgmt.keys import create_keyring, generate_rsa_pair, load_api_key, load_private_key, load_public_key
from cardmgmt.marketing import MarketingUnavailable
from cardmgmt.models import utcnow
from cardmgmt.money import format_fen, parse_yuan
from cardmgmt.operators import Permission
from cardmgmt.recharge import Policy
from cardmgmt.states import PAST, Event
from cardmgmt.system import CardSystem, Context
from marketing_iface import outbox, reconcile
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import create_standin
from testkit import replay as replay_tool

EXIT_DISCREPANCY = 3


class CardCLI(click.Group):
    """A click group that turns every domain or database error into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CardError as e:
            raise click.ClickException(e.message) from None
        except SQLAlchemyError as e:
            first = str(getattr(e, "orig", e) or e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise click.ClickException(f"database error: {first}") from None
        except OSError as e:
            raise click.ClickException(f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:
            # A bug, not an operator mistake: still one line, never a traceback
            # (which could carry data from the failing frame).
            raise click.ClickException(f"internal error ({type(e).__name__}); nothing was committed") from None


class App:
    """Per-invocation state: settings, and the card system opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._system: CardSystem | None = None

    @property
    def system(self) -> CardSystem:
        if self._system is None:
            s = self.settings
            if s.operator and s.password is None:
                s = dataclasses.replace(s, password=click.prompt(f"password for {s.operator}", hide_input=True, err=True))
            self._system = CardSystem(s)
        return self._system

    @contextmanager
    def unit(self, permission: Permission) -> Iterator[Context]:
        with self.system.unit(permission) as ctx:
            yield ctx


pass_app = click.make_pass_decorator(App)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


MONEY_KEYS = {"face_value"}


def emit(rows: Sequence[dict[str, Any]], as_json: bool, columns: Sequence[str] | None = None) -> None:
    """Print rows as JSON (money in fen) or as an aligned table (money in yuan)."""
    if as_json:
        click.echo(json.dumps(list(rows), ensure_ascii=False, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
        return
    cols = list(columns or rows[0].keys())
    text = [[format_fen(r[c]) if c in MONEY_KEYS else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for t in text:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())


@contextmanager
def progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr that appears with the first progress, so a refused command prints only its error."""
    bar: Any = None

    def update(n: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=length, label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def parse_date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2027-12-31") from None


def parse_money(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_yuan(value)
    except InvalidInput as e:
        raise click.BadParameter(e.message) from None


def selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ways to choose cards: --serial, --from/--to, or --batch [--box]."""
    for opt in reversed(
        [
            click.option("--serial", help="One card's serial."),
            click.option("--from", "first", help="First serial of a range."),
            click.option("--to", "last", help="Last serial of a range."),
            click.option("--batch", "batch_no", help="A whole batch (or one box of it with --box)."),
            click.option("--box", "box_no", type=int, help="Box number within --batch."),
            click.option("--skip-voided", is_flag=True, help="Leave voided cards in the selection out instead of refusing."),
        ]
    ):
        f = opt(f)
    return f


def make_selection(serial: str | None, first: str | None, last: str | None, batch_no: str | None, box_no: int | None, skip_voided: bool = False) -> stock.Selection:
    if serial:
        if first or last or batch_no or box_no is not None:
            raise click.UsageError("--serial cannot be combined with --from/--to/--batch/--box")
        return stock.Selection(first_serial=serial, last_serial=serial, skip_voided=skip_voided)
    if box_no is not None and not batch_no:
        raise click.UsageError("--box needs --batch")
    return stock.Selection(batch_no=batch_no, box_no=box_no, first_serial=first, last_serial=last, skip_voided=skip_voided)


@click.group(cls=CardCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "database_url", metavar="URL", help="SQLAlchemy URL of the card database [env CARDS_DATABASE_URL; default sqlite:///var/cards.db].")
@click.option("--key-dir", type=click.Path(path_type=Path), help="Key directory [env CARDS_KEY_DIR; default var/keys].")
@click.option("--marketing-db", "marketing_url", metavar="URL", help="SQLAlchemy URL of the marketing system's database [env CARDS_MARKETING_URL; default the stand-in sqlite:///var/marketing.db].")
@click.option("--operator", "-u", help="Operator name [env CARDS_OPERATOR]; the password is prompted (or CARDS_PASSWORD).")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, key_dir: Path | None, marketing_url: str | None, operator: str | None) -> None:
    """Recharge-card management: batches, factory files, stock, issuing, reports.

    \b
    A new installation:
      cli.py db upgrade
      cli.py init --admin alice
    Then, as alice:
      cli.py -u alice operator add bob --role finance
      cli.py -u alice factory register F1 --public-key factory.pub.pem
      cli.py -u alice batch create B001 --face-value 50 --quantity 1000 \\
             --expiry 2028-12-31 --factory F1 --out B001.newcard

    Exit codes: 0 done, 1 refused, 2 usage error, 3 discrepancies found.
    """
    ctx.obj = App(Settings.load(database_url=database_url, key_dir=key_dir, marketing_url=marketing_url, operator=operator))
    ctx.call_on_close(lambda: ctx.obj._system and ctx.obj._system.close())


# --- installation -----------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create or upgrade the card database's schema to the newest revision.

    Example: cli.py --db postgresql://cards@dbhost/cards db upgrade
    """
    engine = make_engine(app.settings.database_url)
    upgrade(engine)
    click.echo(f"schema at revision {current_revision(engine)}")
    engine.dispose()


@db.command("current")
@pass_app
def db_current(app: App) -> None:
    """Show the schema revision of the database and the newest one known."""
    engine = make_engine(app.settings.database_url)
    click.echo(f"database: {current_revision(engine) or 'empty'}; newest: {head_revision()}")
    engine.dispose()


@cli.command()
@click.option("--admin", required=True, help="Name of the first administrator.")
@click.password_option("--admin-password", envvar="CARDS_ADMIN_PASSWORD", prompt="password for the first administrator", help="[env CARDS_ADMIN_PASSWORD]")
@pass_app
def init(app: App, admin: str, admin_password: str) -> None:
    """Set up a new installation: key directory (if absent) and the first administrator.

    Example: cli.py init --admin alice
    """
    system = CardSystem(app.settings)
    try:
        actor = system.initialise(admin, admin_password)
    finally:
        system.close()
    click.echo(f"installation ready; administrator {actor.name}; keys in {app.settings.key_dir}")


@cli.group()
def keys() -> None:
    """The key directory (master key, the system's RSA key pair, the TLS certificates)."""


@keys.command("init")
@click.option("--host", "hosts", multiple=True, metavar="NAME",
              help="A host name or address for the servers' TLS certificate, besides the loopback ones (repeat).")
@pass_app
def keys_init(app: App, hosts: tuple[str, ...]) -> None:
    """Create the key directory with owner-only permissions (never overwrites a key).

    Besides the keys: the installation's TLS certificate authority and the servers' certificate.

    Example: cli.py keys init --host recharge-a.example --host recharge-b.example
    """
    ring = create_keyring(app.settings.key_dir, hosts)
    click.echo(f"keys created in {app.settings.key_dir} (fingerprint {ring.fingerprint})")
    click.echo(f"give the factory {app.settings.key_dir / 'system.pub.pem'}")


@keys.command("tls")
@click.option("--host", "hosts", multiple=True, metavar="NAME",
              help="A host name or address the servers are reached by, besides 127.0.0.1, ::1 and localhost (repeat).")
@pass_app
def keys_tls(app: App, hosts: tuple[str, ...]) -> None:
    """Issue the recharge servers' TLS certificate from the installation's CA (made first if absent).

    Replaces the servers' certificate; restart both servers to use it.  The CA
    certificate (keys/tls-ca.pem) is what every channel client's host trusts.

    Example: cli.py -u alice keys tls --host recharge-a.example --host 10.0.0.11
    """
    with app.unit(Permission.MANAGE_CLIENTS) as ctx:
        names = tls.check_host_names(hosts)
        key_dir = app.settings.key_dir
        if not (key_dir / tls.CA_CERT).exists():
            tls.create_authority(key_dir, ctx.keys.fingerprint)
        cert = tls.issue_server_certificate(key_dir, hosts)
        ctx.log("keys.tls", "server certificate", after={"names": names, "certificate": tls.fingerprint(cert)})
    click.echo(f"server certificate {tls.fingerprint(cert)} for {', '.join(names)} in {key_dir}")
    click.echo(f"install {key_dir / tls.CA_CERT} on every channel client's host")


# --- channel clients ---------------------------------------------------------------


@cli.group()
def client() -> None:
    """Channel clients (the hotline, POS terminals, partners): each with its own revocable key."""


@client.command("add")
@click.argument("name")
@click.option("--channel", required=True, type=click.Choice(channel_clients.CHANNELS), help="The client's channel.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="New owner-only file for the client's key, to install on its host (never overwritten).")
@pass_app
def client_add(app: App, name: str, channel: str, out: Path) -> None:
    """Register a channel client and write its signing key to --out.

    Example: cli.py -u alice client add pos-hall-7 --channel pos --out pos-hall-7.key
    """
    if out.exists():
        raise click.ClickException(f"{out} already exists; refusing to overwrite a key file")
    with app.unit(Permission.MANAGE_CLIENTS) as ctx:
        key = channel_clients.add(ctx, name, channel)
        channel_clients.write_key_file(out, key)
    click.echo(f"channel client {name} ({channel}) registered; its key is in {out} (owner-only)")


@client.command("key")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="New owner-only file for the key (never overwritten).")
@pass_app
def client_key(app: App, name: str, out: Path) -> None:
    """Write a registered client's key again (a host reinstalled); recorded in the operation log.

    Example: cli.py -u alice client key hotline --out /tmp/agi-host-2.key
    """
    if out.exists():
        raise click.ClickException(f"{out} already exists; refusing to overwrite a key file")
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
    emit(rows, as_json, None if as_json else ["name", "channel", "created_by", "created_at", "revoked_at", "revoked_by", "reason"])


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


# --- operators ---------------------------------------------------------------------


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
        op = operators.create(ctx.session, name, operators.Role(role), new_password)
        ctx.log("operator.add", f"operator {op.name}", after={"role": role})
    click.echo(f"operator {name} added as {role}")


@operator.command("disable")
@click.argument("name")
@pass_app
def operator_disable(app: App, name: str) -> None:
    """Disable an operator's account (it stays in the log)."""
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        if name == ctx.actor.name:
            raise InvalidInput("an operator cannot disable their own account")
        op = operators.get(ctx.session, name)
        op.active = False
        ctx.log("operator.disable", f"operator {name}", before={"active": True}, after={"active": False})
    click.echo(f"operator {name} disabled")


@operator.command("list")
@json_option
@pass_app
def operator_list(app: App, as_json: bool) -> None:
    """List operators and their roles."""
    with app.unit(Permission.VIEW) as ctx:
        rows = [{"name": o.name, "role": o.role, "active": o.active} for o in operators.listing(ctx.session)]
    emit(rows, as_json)


# --- factories ---------------------------------------------------------------------


@cli.group()
def factory() -> None:
    """Card factories and their public keys."""


@factory.command("register")
@click.argument("name")
@click.option("--public-key", required=True, type=click.Path(path_type=Path), help="The factory's RSA public key (PEM).")
@pass_app
def factory_register(app: App, name: str, public_key: Path) -> None:
    """Register a factory.  Example: cli.py -u alice factory register F1 --public-key f1.pub.pem"""
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        f = factories.register(ctx, name, public_key)
    click.echo(f"factory {name} registered (key {f.fingerprint})")


@factory.command("list")
@json_option
@pass_app
def factory_list(app: App, as_json: bool) -> None:
    """List registered factories."""
    with app.unit(Permission.VIEW) as ctx:
        rows = [{"name": f.name, "key": f.fingerprint, "registered_at": f.registered_at} for f in factories.listing(ctx.session)]
    emit(rows, as_json)


@cli.group("factory-sim")
def factory_sim_group() -> None:
    """A stand-in card factory for demos and tests (holds the factory's private key)."""


@factory_sim_group.command("keygen")
@click.argument("directory", type=click.Path(path_type=Path))
def sim_keygen(directory: Path) -> None:
    """Create the factory's key pair: DIRECTORY/factory.pem and factory.pub.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "factory.pem").exists():
        raise InvalidInput(f"{directory / 'factory.pem'} already exists")
    generate_rsa_pair(directory / "factory.pem", directory / "factory.pub.pem")
    click.echo(f"factory keys in {directory}")


@factory_sim_group.command("produce")
@click.argument("new_card_file", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Where to write the post-production file.")
@click.option("--factory-key", required=True, type=click.Path(path_type=Path), help="The factory's private key.")
@click.option("--system-key", required=True, type=click.Path(path_type=Path), help="The card system's public key.")
@click.option("--name", default="F1", show_default=True, help="The factory's name.")
@click.option("--missing", default=0, help="Cards to leave out.")
@click.option("--extra", default=0, help="Cards to add that were never ordered.")
@click.option("--duplicate", default=0, help="Cards to list twice.")
@click.option("--altered", default=0, help="Cards whose PIN to change.")
@click.option("--damaged", default=0, help="Cards to report as damaged.")
@click.option("--seed", type=int, help="Make the choice of faulty cards repeatable.")
def sim_produce(new_card_file: Path, out: Path, factory_key: Path, system_key: Path, name: str, seed: int | None, **faults: int) -> None:
    """Decrypt a new-card file and write a signed post-production file, with optional faults.

    Example: cli.py factory-sim produce B001.newcard --out B001.produced
    --factory-key fk/factory.pem --system-key var/keys/system.pub.pem --damaged 2
    """
    report = factory_sim.produce(
        new_card_file,
        out,
        factory_name=name,
        factory_key=load_private_key(factory_key),
        system_key=load_public_key(system_key),
        faults=factory_sim.Faults(seed=seed, **faults),
    )
    click.echo(f"batch {report.batch_no}: read {report.rows_read} cards, wrote {report.rows_written} rows to {out}")
    for kind, serials in report.faults.items():
        if serials:
            click.echo(f"  {kind}: {', '.join(serials[:10])}{' ...' if len(serials) > 10 else ''}")


# --- halls ------------------------------------------------------------------------


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


# --- batches ----------------------------------------------------------------------


@cli.group()
def batch() -> None:
    """Card batches: order, new-card file, file check."""


@batch.command("create")
@click.argument("batch_no")
@click.option("--face-value", required=True, callback=parse_money, help="Face value in yuan, e.g. 50 or 50.00.")
@click.option("--quantity", required=True, type=click.IntRange(1), help="Number of cards.")
@click.option("--expiry", required=True, callback=parse_date, help="Last day the cards can be redeemed (YYYY-MM-DD).")
@click.option("--box-size", default=100, show_default=True, type=click.IntRange(1), help="Cards per box.")
@click.option("--factory", "factory_name", required=True, help="Registered factory that will print the cards.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Where to write the encrypted new-card file.")
@pass_app
def batch_create(app: App, batch_no: str, face_value: int, quantity: int, expiry: dt.date, box_size: int, factory_name: str, out: Path) -> None:
    """Order a batch: generate serials and PINs and write the encrypted new-card file.

    The PINs exist only inside the file, which only the factory can open.

    Example: cli.py -u alice batch create B001 --face-value 50 --quantity 10000
    --expiry 2028-12-31 --factory F1 --out B001.newcard
    """
    if out.exists():
        raise InvalidInput(f"{out} already exists; refusing to overwrite a new-card file")
    with app.unit(Permission.MANAGE_CARDS) as ctx, progress(quantity, f"generating {batch_no}") as update:
        b = batches.create(
            ctx, batch_no=batch_no, face_value=face_value, quantity=quantity, box_size=box_size,
            expiry=expiry, factory_name=factory_name, out=out, progress=update,
        )
    click.echo(f"batch {b.batch_no}: {b.quantity} cards of {format_fen(b.face_value)} yuan, serials {b.first_serial}-{b.last_serial}")
    click.echo(f"new-card file {out} (sha256 {b.new_card_digest})")


@batch.command("list")
@json_option
@pass_app
def batch_list(app: App, as_json: bool) -> None:
    """List batches with how their cards stand."""
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.batch_summary(ctx.session)
    emit(rows, as_json, None if as_json else ["batch_no", "face_value", "quantity", "expiry", "ordered", "produced", "in_stock", "issued", "redeemed", "voided", "frozen"])


@batch.command("check")
@click.argument("batch_no")
@click.argument("produced_file", type=click.Path(path_type=Path))
@click.option("--report-json", type=click.Path(path_type=Path), help="Also write every finding as JSON here.")
@click.option("--report-csv", type=click.Path(path_type=Path), help="Also write every finding as CSV here.")
@json_option
@pass_app
def batch_check(app: App, batch_no: str, produced_file: Path, report_json: Path | None, report_csv: Path | None, as_json: bool) -> None:
    """Verify the factory's post-production file and reconcile it card by card.

    Matched cards become 'produced' (ready for intake); damaged ones are voided.
    Exits 3 when anything did not match.

    Example: cli.py -u alice batch check B001 B001.produced --report-csv B001-check.csv
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        report = checks.check_file(ctx, batch_no, produced_file)
        findings = [{"serial": s, "finding": k, "detail": d} for s, k, d in report.findings]
        doc = {"batch_no": report.batch_no, "file_digest": report.file_digest, "counts": report.counts,
               "produced": report.produced, "voided": report.voided, "findings": findings}
        # Written before the check commits: a report that cannot be written
        # undoes the check, so it can be run again rather than being lost.
        if report_json:
            report_json.write_text(json.dumps(doc, ensure_ascii=False, indent=2))
        if report_csv:
            with report_csv.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["serial", "finding", "detail"])
                w.writeheader()
                w.writerows(findings)
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        click.echo(f"batch {report.batch_no}: file verified (sha256 {report.file_digest[:16]}...)")
        emit([{"finding": k, "cards": n} for k, n in report.counts.items()], False)
        if findings:
            click.echo("")
            emit(findings[:50], False)
            if len(findings) > 50:
                click.echo(f"... {len(findings) - 50} more (use --report-csv or --json)")
        click.echo(f"{report.produced} cards ready for intake; {report.voided} damaged cards voided")
    if not report.clean:
        sys.exit(EXIT_DISCREPANCY)


# --- stock ------------------------------------------------------------------------


@cli.group("stock")
def stock_group() -> None:
    """Stock intake and stock counts."""


@stock_group.command("intake")
@selection_options
@pass_app
def stock_intake(app: App, **sel: Any) -> None:
    """Take checked cards into stock, by batch, box or serial range.

    Example: cli.py -u alice stock intake --batch B001 --box 3
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        records = stock.intake(ctx, make_selection(**sel))
        rows = [{"box": r.box_no, "first_serial": r.first_serial, "last_serial": r.last_serial, "cards": r.quantity} for r in records]
    emit(rows, False)
    click.echo(f"{sum(r['cards'] for r in rows)} cards taken into stock")


@stock_group.command("count")
@selection_options
@click.option("--scanned", type=click.File("r"), help="File of the serials found, one per line.")
@click.option("--counted", type=click.IntRange(0), help="Number of cards found (when serials were not scanned).")
@json_option
@pass_app
def stock_count(app: App, scanned: Any, counted: int | None, as_json: bool, **sel: Any) -> None:
    """Record a stock count (盘点) of a box or range and report discrepancies (exit 3 if any).

    Example: cli.py -u alice stock count --batch B001 --box 3 --scanned box3.txt
    """
    lines = [line for line in scanned.read().splitlines() if line.strip()] if scanned else None
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        result = stock.count_stock(ctx, make_selection(**sel), scanned=lines, counted=counted)
        c = result.count
        doc = {"count_id": c.id, "scope": c.scope, "expected": c.expected, "counted": c.counted, "missing": c.missing,
               "unexpected": c.unexpected, "findings": [{"serial": f.serial, "finding": f.kind, "detail": f.detail} for f in result.findings]}
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        click.echo(f"count {c.id} of {c.scope}: expected {c.expected}, counted {c.counted}, missing {c.missing}, unexpected {c.unexpected}")
        if doc["findings"]:
            emit(doc["findings"], False)
    if not result.clean:
        sys.exit(EXIT_DISCREPANCY)


# --- cards ------------------------------------------------------------------------


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
        click.echo(f"{n} cards {PAST[Event(name)]}")


_card_change("void", stock.void, True, "Void cards for good (damaged, wrong, lost).\n\nExample: cli.py -u alice card void --serial 000000000017 --reason 'torn at pick check'")
_card_change("freeze", stock.freeze, False, "Freeze cards reported lost or stolen.\n\nExample: cli.py -u alice card freeze --batch B001 --box 7 --reason 'box reported stolen'")
_card_change("unfreeze", stock.unfreeze, False, "Unfreeze cards; they return to the state they were frozen from.")


@card.command("show")
@click.argument("serial")
@json_option
@pass_app
def card_show(app: App, serial: str, as_json: bool) -> None:
    """Show one card: batch, box, state, hall.  Never shows its PIN."""
    with app.unit(Permission.VIEW) as ctx:
        row = stock.describe_card(ctx.session, serial)
    emit([row], as_json)


# --- issue requests ---------------------------------------------------------------


@cli.group()
def request() -> None:
    """Issue requests (领卡申请): file, approve/reject (finance), collect."""


@request.command("file")
@click.option("--face-value", required=True, callback=parse_money, help="Face value in yuan.")
@click.option("--quantity", required=True, type=click.IntRange(1))
@click.option("--hall", "hall_code", required=True, help="Hall code.")
@click.option("--reason", required=True)
@pass_app
def request_file(app: App, face_value: int, quantity: int, hall_code: str, reason: str) -> None:
    """File a request for cards.  Example: cli.py -u alice request file --face-value 50 --quantity 200 --hall H01 --reason 'weekly'"""
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        req = issuing.file_request(ctx, face_value=face_value, quantity=quantity, hall_code=hall_code, reason=reason)
    click.echo(f"issue request {req.id} filed; waiting for finance approval")


def _decide(approve: bool) -> Callable[..., None]:
    @click.argument("request_id", type=int)
    @click.option("--comment", required=True)
    @pass_app
    def command(app: App, request_id: int, comment: str) -> None:
        with app.unit(Permission.DECIDE_REQUESTS) as ctx:
            req = issuing.decide(ctx, request_id, approve=approve, comment=comment)
        click.echo(f"issue request {req.id} {req.status}")

    return command


request.command("approve", help="Approve a request (finance; not the requester).\n\nExample: cli.py -u bob request approve 1 --comment ok")(_decide(True))
request.command("reject", help="Reject a request (finance; not the requester).")(_decide(False))


@request.command("cancel")
@click.argument("request_id", type=int)
@click.option("--reason", required=True)
@pass_app
def request_cancel(app: App, request_id: int, reason: str) -> None:
    """Withdraw a request that has not been collected."""
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        issuing.cancel(ctx, request_id, reason)
    click.echo(f"issue request {request_id} cancelled")


@request.command("collect")
@click.argument("request_id", type=int)
@json_option
@pass_app
def request_collect(app: App, request_id: int, as_json: bool) -> None:
    """Take an approved request's cards out of stock (earliest expiry first) and issue them to its hall."""
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        issued = issuing.collect(ctx, request_id)
    emit([{"first_serial": a, "last_serial": b, "cards": n} for a, b, n in issued], as_json)
    if not as_json:
        click.echo(f"{sum(n for _, _, n in issued)} cards issued for request {request_id}")


@request.command("list")
@click.option("--status", type=click.Choice([s.value for s in issuing.RequestStatus]))
@json_option
@pass_app
def request_list(app: App, status: str | None, as_json: bool) -> None:
    """List issue requests."""
    with app.unit(Permission.VIEW) as ctx:
        rows = [r for r in reports.issue_history(ctx.session) if status is None or r["status"] == status]
    emit(rows, as_json, None if as_json else ["id", "face_value", "quantity", "hall", "status", "requested_by", "decided_by", "comment"])


# --- reports and audit ------------------------------------------------------------


@cli.group()
def report() -> None:
    """Stock, batch and issue reports."""


@report.command("stock")
@click.option("--by", type=click.Choice(reports.DIMENSIONS), default="face-value", show_default=True)
@json_option
@pass_app
def report_stock(app: App, by: str, as_json: bool) -> None:
    """Cards by state, grouped by face value, batch, state or hall.  Example: cli.py -u carol report stock --by hall"""
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.stock(ctx.session, by)
    emit(rows, as_json)


@report.command("batches")
@json_option
@pass_app
def report_batches(app: App, as_json: bool) -> None:
    """Batch summary: order, expiry, factory and card states."""
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.batch_summary(ctx.session)
    emit(rows, as_json)


@report.command("issues")
@json_option
@pass_app
def report_issues(app: App, as_json: bool) -> None:
    """Issue history: requests, decisions, collections."""
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.issue_history(ctx.session)
    emit(rows, as_json)


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


@cli.group()
def marketing() -> None:
    """The marketing system: stand-in database, outbox, daily reconciliation (对账)."""


@marketing.command("standin")
@pass_app
def marketing_standin(app: App) -> None:
    """Create the stand-in marketing database (sample accounts) at CARDS_MARKETING_URL, for demos and tests."""
    create_standin(app.settings.marketing_url)
    click.echo(f"stand-in marketing database ready at {app.settings.marketing_url}")


@marketing.command("outbox")
@click.option("--status", type=click.Choice([outbox.PENDING, outbox.REJECTED]), default=outbox.PENDING, show_default=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_app
def marketing_outbox(app: App, status: str, limit: int, as_json: bool) -> None:
    """Recharges not yet posted to the marketing system (or refused by it)."""
    with app.unit(Permission.VIEW) as ctx:
        summary = outbox.backlog(ctx.session)
        rows = [{"recharge_ref": r.ref, "account_no": r.account_no, "amount": r.amount, "committed_at": r.committed_at,
                 "attempts": r.post_attempts, "next_attempt_at": r.next_attempt_at, "last_error": r.last_error or ""}
                for r in outbox.pending(ctx.session, limit, status=status)]
    emit(rows, as_json, None if as_json else ["recharge_ref", "account_no", "amount", "attempts", "next_attempt_at", "last_error"])
    if not as_json:
        click.echo(f"{summary['pending']} pending, {summary['rejected']} rejected; oldest pending {summary['oldest_pending'] or '-'}")


@marketing.command("drain")
@pass_app
def marketing_drain(app: App) -> None:
    """Post due recharges now (the leading recharge server does this every second)."""
    with app.unit(Permission.MANAGE_CARDS):
        pass  # authenticate and authorise only: drain runs its own short transactions
    mkt = SqlMarketing(app.settings.marketing_url)
    try:
        result = outbox.drain(app.system.db, mkt, utcnow())
    finally:
        mkt.close()
    click.echo(f"posted {result.posted}, already there {result.repeated}, failed {result.failed}, rejected {result.rejected}")


@marketing.command("reconcile")
@click.argument("day", callback=parse_date)
@json_option
@pass_app
def marketing_reconcile(app: App, day: dt.date, as_json: bool) -> None:
    """Reconcile one business day (UTC+8) with the marketing system; exits 3 on any mismatch.

    Example: cli.py -u bob marketing reconcile 2026-11-22
    """
    mkt = SqlMarketing(app.settings.marketing_url)
    try:
        with app.unit(Permission.VIEW) as ctx:
            rec = reconcile.reconcile(ctx.session, mkt, day)
    except MarketingUnavailable as e:
        raise click.ClickException(f"marketing system unavailable: {e}") from None
    finally:
        mkt.close()
    kinds = ("missing_in_marketing", "missing_in_cards", "amount_differs", "account_differs")
    rows = [
        {"finding": kind, "recharge_ref": d.recharge_ref,
         "cards": f"{d.cards.account_no} {format_fen(d.cards.amount)}" if d.cards else "-",
         "marketing": f"{d.marketing.account_no} {format_fen(d.marketing.amount)}" if d.marketing else "-",
         "post_status": d.post_status or "-"}
        for kind in kinds for d in getattr(rec, kind)
    ]
    if as_json:
        click.echo(json.dumps({"day": day.isoformat(), "ok": rec.ok, "card_count": rec.card_count, "card_total": rec.card_total,
                               "marketing_count": rec.marketing_count, "marketing_total": rec.marketing_total, "findings": rows}, indent=2))
    else:
        click.echo(f"{day}: cards {rec.card_count} recharges {format_fen(rec.card_total)} yuan; "
                   f"marketing {rec.marketing_count} postings {format_fen(rec.marketing_total)} yuan")
        if rows:
            emit(rows, False)
        click.echo("reconciled: both sides agree" if rec.ok else f"{len(rows)} mismatches")
    if not rec.ok:
        sys.exit(EXIT_DISCREPANCY)


@cli.command()
@click.argument("name")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="Port of this server's HTTP API.")
@click.option("--peer", required=True, help="The other server's base URL, e.g. https://127.0.0.1:8442 (TLS only).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless told otherwise).")
@pass_app
def serve(app: App, name: str, port: int, peer: str, host: str) -> None:
    """Run one recharge server of the hot-standby pair (until stopped).

    Listens with TLS only (the certificate from `cli.py keys tls`); channel
    clients are checked against `cli.py client list`, re-read every 2 s.

    Example: cli.py serve A --port 8441 --peer https://127.0.0.1:8442
    """
    from recharge_server.service import run  # Twisted is only loaded by the servers

    run(app.settings, name, port, peer, host=host)


def parse_server(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, int]]:
    out = []
    for v in values:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter(f"{v!r} is not HOST:PORT")
        out.append((host, int(port)))
    return out


@cli.command()
@click.option("--server", "servers", multiple=True, required=True, callback=parse_server, help="HOST:PORT of a recharge server, primary first (repeat).")
@click.option("--account", required=True, help="The 10-digit electricity account number.")
@click.option("--caller", default="", help="The caller's number, for lockout counting.")
@click.option("--yes", is_flag=True, help="Confirm the recharge without asking.")
@pass_app
def call(app: App, servers: list[tuple[str, int]], account: str, caller: str, yes: bool) -> None:
    """Recharge a card through the server pair, the way the phone dialog does (for testers and operations).

    The PIN is read without echo (or from standard input when it is not a terminal) and never printed.

    Example: cli.py call --server 127.0.0.1:8441 --server 127.0.0.1:8442 --account 3100000001
    """
    from ivr.client import RechargeClient, tls_context

    # As the hotline: its key (keys/api.key) and the installation's CA.
    context = tls_context(str(tls.ca_file(app.settings.key_dir)))
    with RechargeClient(servers, load_api_key(app.settings.key_dir), tls=context, client=channel_clients.HOTLINE) as client:
        call_id = f"cli-{secrets.token_hex(8)}"
        summary = client.account(call_id=call_id, account_no=account)
        if summary.get("outcome") != "ok":
            raise click.ClickException(f"account {account}: {summary.get('outcome')}")
        click.echo(f"account {account}: {summary['holder']}, balance {format_fen(summary['balance'])} yuan")
        pin = click.prompt("card PIN", hide_input=True, err=True) if sys.stdin.isatty() else sys.stdin.readline().strip()
        quote = client.quote(call_id=call_id, seq=1, account_no=account, pin=pin, caller=caller)
        del pin
        if quote.get("outcome") != "ok":
            raise click.ClickException(f"card refused: {quote.get('outcome')}")
        click.echo(f"card ...{quote['serial_tail']}: {format_fen(quote['amount'])} yuan")
        if not yes and not click.confirm("recharge?", default=True):
            client.cancel(call_id=call_id, seq=1)
            raise click.ClickException("recharge declined; the card was not used")
        done = client.commit(call_id=call_id, seq=1)
        if done.get("outcome") != "ok":
            raise click.ClickException(f"recharge not confirmed: {done.get('outcome')}")
        click.echo(f"recharged {format_fen(done['amount'])} yuan to {account}; reference {done['recharge_ref']}")


def parse_vars(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    try:
        return dict(replay_tool.parse_var(v) for v in values)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cli.command()
@click.argument("scripts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default=replay_tool.DEFAULT_HOST, show_default=True, help="Asterisk's SIP address.")
@click.option("--port", default=replay_tool.DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535), help="Asterisk's SIP UDP port (the sandbox's by default).")
@click.option("--var", "variables", multiple=True, callback=parse_vars, metavar="NAME=VALUE", help="A value for ${NAME} in the scripts (repeat).")
@click.option("--secret", "secrets", multiple=True, metavar="NAME", help="Read ${NAME} from standard input, a line each (hidden prompt at a terminal); for PINs (repeat).")
@click.option("--inject", type=click.Path(path_type=Path), metavar="CSV", help="Per-call values: a header line of names, then one line per call.")
@click.option("--concurrent", default=1, show_default=True, type=click.IntRange(1), help="Calls at once.")
@click.option("--calls", type=click.IntRange(1), help="Calls in all [default: the injection's rows, else --concurrent].")
@click.option("--workdir", type=click.Path(path_type=Path), help="Where the scenarios and SIPp's files go [default: a new temporary folder].")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), metavar="SECONDS", help="Give up on a script after this long.")
@click.option("--audio", type=click.Path(path_type=Path), default=replay_tool.CALLER_AUDIO, show_default=True, metavar="PCAP", help="The caller's voice (G.711 RTP), sent once the call is answered.")
@click.option("--no-audio", is_flag=True, help="Send no caller audio (Asterisk's Answer() then waits 0.5 s).")
def replay(scripts: tuple[Path, ...], host: str, port: int, variables: dict[str, str], secrets: tuple[str, ...],
           inject: Path | None, concurrent: int, calls: int | None, workdir: Path | None, timeout: float | None,
           audio: Path, no_audio: bool) -> None:
    """Phone the hotline with call scripts (SIPp) and check each step: what it said and what it decided.

    Works against the Asterisk sandbox (python -m testkit.sandbox start) or
    any Asterisk running the hotline.  Prints each step's PASS or FAIL; exits 3
    when a step failed, 1 (one line, nothing phoned) when a script, a value or
    the address is wrong.  Values read with --secret are never shown, and the
    files of the run that held them are deleted.

    \b
    Example:
      cli.py replay tests/calls/recharge-one-card.call --port 5160 --var CALLER=13800000001 \\
             --var ACCOUNT=3100000001 --var AMOUNT=5000 --secret PIN < pin.txt
    """
    try:
        ask = (lambda name: click.prompt(name, hide_input=True, err=True)) if sys.stdin.isatty() else None
        values = replay_tool.read_secrets(secrets, sys.stdin, ask=ask, given=variables)
        job = replay_tool.ReplayJob(scripts, host, port, {**variables, **values}, frozenset(values), inject,
                                    concurrent, calls, workdir, timeout, None if no_audio else audio)
        code = replay_tool.run_job(job, echo=click.echo)
    except replay_tool.ReplayError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)


@cli.group()
def ha() -> None:
    """The hot-standby pair of recharge servers."""


@ha.command("status")
@json_option
@pass_app
def ha_status(app: App, as_json: bool) -> None:
    """Each server's role, health and last heartbeat, and who holds the jobs lease."""
    from recharge_server.service import ha_status as status

    with app.unit(Permission.VIEW):
        pass  # authenticate and authorise; the status reads its own snapshot
    rows = status(app.settings)
    if not as_json:
        rows = [{"server": r["name"], "address": r["address"], "alive": r["alive"], "role": r["role"] if r["alive"] else "down",
                 "last_heartbeat_s": r["age_seconds"], "sees_peer": (r.get("peer") or {}).get("reachable"),
                 "holds_jobs_lease": r["holds_lease"], "lease_token": r["lease_token"]} for r in rows]
    emit(rows, as_json)


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident operation log."""


@audit_group.command("verify")
@pass_app
def audit_verify(app: App) -> None:
    """Check the whole operation log; exits 3 and lists problems if it was tampered with."""
    with app.unit(Permission.VERIFY_LOG) as ctx:
        result = audit.verify_installation(ctx.session, ctx.keys, app.settings.audit_anchor_file)
    if result.ok:
        click.echo(f"operation log intact: {result.entries} entries, head {result.head_seq}:{result.head_hash[:16]}")
        return
    for problem in result.problems:
        click.echo(f"TAMPERED: {problem}")
    sys.exit(EXIT_DISCREPANCY)


@audit_group.command("log")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--action", help="Only this action, e.g. card.void.")
@json_option
@pass_app
def audit_log(app: App, limit: int, action: str | None, as_json: bool) -> None:
    """Show the newest operation-log entries."""
    with app.unit(Permission.VIEW) as ctx:
        rows = [
            {"seq": e.seq, "at": e.at[:19], "operator": e.operator, "action": e.action, "object": e.object,
             "before": json.loads(e.before), "after": json.loads(e.after)}
            for e in audit.entries(ctx.session, limit, action)
        ]
    if not as_json:
        for r in rows:
            r["before"], r["after"] = json.dumps(r["before"], ensure_ascii=False)[:60], json.dumps(r["after"], ensure_ascii=False)[:80]
    emit(rows, as_json)


if __name__ == "__main__":
    cli(prog_name="cli.py")
