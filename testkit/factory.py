"""The stand-in factory as tests, benchmarks and the demo use it: its key pair, its production run, its copy of the PINs.

The factory simulator itself (``cardmgmt.factory_sim``) is product code,
because the command line's ``factory-sim`` commands drive it for testers;
what lives here is the harness around it.  ``make_factory_keys`` makes the
factory's RSA pair with the product's own generator
(``cardmgmt.keys.generate_rsa_pair``, as ``cli.py factory-sim keygen`` does),
``produce`` turns a new-card file into a post-production file (with faults
when asked), and ``read_pins`` reads the serial-to-PIN table back from a
new-card file, as the factory would to print the cards.
"""

# test-case-name: tests.testkit.test_factory, tests.cardmgmt.test_checks

from __future__ import annotations

from pathlib import Path

from cardmgmt import factory_sim, sealed_files
from cardmgmt.keys import generate_rsa_pair, load_private_key, load_public_key

FactoryKeys = tuple[Path, Path]  # (private PEM, public PEM)


def make_factory_keys(directory: Path) -> FactoryKeys:
    """A new RSA key pair for the stand-in factory in ``directory``: (private PEM, public PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / "factory.pem", directory / "factory.pub.pem"
    generate_rsa_pair(private, public)
    return private, public


def produce(new_card: Path, out: Path, factory_keys: FactoryKeys, system_public: Path, *,
            factory_name: str = "F1", faults: factory_sim.Faults | None = None) -> factory_sim.ProductionReport:
    """Run the stand-in factory over ``new_card``, writing its post-production file to ``out``; what it did."""
    return factory_sim.produce(
        new_card, out, factory_name=factory_name, factory_key=load_private_key(factory_keys[0]),
        system_key=load_public_key(system_public), faults=faults if faults is not None else factory_sim.Faults(),
    )


def read_pins(new_card: Path, factory_private: Path, system_public: Path) -> dict[str, str]:
    """Serial → PIN, read back from a new-card file with the factory's key, as the factory would."""
    with sealed_files.open_sealed(
        new_card, kind="new-card", sender=load_public_key(system_public), recipient=load_private_key(factory_private),
    ) as f:
        return {serial: pin for serial, _box, pin in (r.decode().rstrip("\n").split(",") for r in f.rows())}
