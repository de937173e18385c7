"""Setting an installation up: the database schema, the key directory and the first administrator."""

# test-case-name: tests.cli.test_install

import click

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
    """The key directory (master key and the system's RSA key pair)."""


@keys.command("init")
@pass_app
def keys_init(app: App) -> None:
    """Create the key directory with owner-only permissions (never overwrites a key)."""
    ring = create_keyring(app.settings.key_dir)
    click.echo(f"keys created in {app.settings.key_dir} (fingerprint {ring.fingerprint})")
    click.echo(f"give the factory {app.settings.key_dir / 'system.pub.pem'}")
