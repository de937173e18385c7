"""Setting an installation up: the database schema, the key directory, its TLS certificates and the first administrators."""

# test-case-name: tests.cli.test_install

import click

from cardmgmt import channel_clients, tls
from cardmgmt.context import Permission
from cardmgmt.db import current_revision, head_revision, make_engine, upgrade
from cardmgmt.keys import create_keyring
from cardmgmt.system import CardSystem
from cli import App, cli, pass_app


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
    """Show the schema revision of the database and the newest one known.

    Example: cli.py db current
    """
    engine = make_engine(app.settings.database_url)
    click.echo(f"database: {current_revision(engine) or 'empty'}; newest: {head_revision()}")
    engine.dispose()


@cli.command()
@click.option("--admin", "admins", required=True, multiple=True,
              help="An administrator's name; give it twice for the first two (each types their own password).")
@click.option("--admin-password", envvar="CARDS_ADMIN_PASSWORD", help="[env CARDS_ADMIN_PASSWORD; prompted if absent]")
@click.option("--second-admin-password", envvar="CARDS_SECOND_ADMIN_PASSWORD",
              help="[env CARDS_SECOND_ADMIN_PASSWORD; prompted if absent]")
@pass_app
def init(app: App, admins: tuple[str, ...], admin_password: str | None, second_admin_password: str | None) -> None:
    """Set up a new installation: key directory (if absent) and the first one or two administrators.

    Adding an operator needs a second administrator's approval, so a new
    installation normally names both; each password is typed by its owner
    at a prompt, or read from CARDS_ADMIN_PASSWORD and CARDS_SECOND_ADMIN_PASSWORD.

    Example: cli.py init --admin alice --admin dave
    """
    if len(admins) > 2:
        raise click.UsageError("give --admin once or twice")
    given = (admin_password, second_admin_password)
    passwords = [given[i] or click.prompt(f"password for administrator {name}", hide_input=True,
                                          confirmation_prompt=True, err=True)
                 for i, name in enumerate(admins)]
    system = CardSystem(app.settings)
    try:
        second = (admins[1], passwords[1]) if len(admins) == 2 else None
        system.initialise(admins[0], passwords[0], second_admin=second)
    finally:
        system.close()
    names = " and ".join(admins)
    click.echo(f"installation ready; administrator{'s' if second else ''} {names}; keys in {app.settings.key_dir}")


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
    key_dir = app.settings.key_dir
    with app.unit(Permission.MANAGE_CLIENTS) as ctx:
        names, fingerprint = channel_clients.reissue_server_certificate(ctx, key_dir, hosts)
    click.echo(f"server certificate {fingerprint} for {', '.join(names)} in {key_dir}")
    click.echo(f"install {key_dir / tls.CA_CERT} on every channel client's host")
