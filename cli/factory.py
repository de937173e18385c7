"""``factory`` and ``factory-sim``: the card factories we know, and a stand-in factory for demos and tests."""

# test-case-name: tests.cli.test_factory

from pathlib import Path

import click

from cardmgmt import factories, factory_sim
from cardmgmt.context import Permission
from cardmgmt.errors import InvalidInput
from cardmgmt.keys import generate_rsa_pair, load_private_key, load_public_key
from cli import App, cli, emit, json_option, pass_app


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
    """List registered factories.

    Example: cli.py -u carol factory list --json
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = [{"name": f.name, "key": f.fingerprint, "registered_at": f.registered_at} for f in factories.listing(ctx.session)]
    emit(rows, as_json)


@cli.group("factory-sim")
def factory_sim_group() -> None:
    """A stand-in card factory for demos and tests (holds the factory's private key)."""


@factory_sim_group.command("keygen")
@click.argument("directory", type=click.Path(path_type=Path))
def sim_keygen(directory: Path) -> None:
    """Create the factory's key pair: DIRECTORY/factory.pem and factory.pub.pem.

    Example: cli.py factory-sim keygen var/factory
    """
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
