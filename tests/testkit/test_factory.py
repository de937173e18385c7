"""``testkit.factory``: the factory's keys, its production run and its copy of the PINs, on a real installation."""

import stat
from pathlib import Path

from cardmgmt import factory_sim
from cardmgmt.keys import RSA_BITS, load_private_key
from testkit.factory import produce, read_pins
from testkit.lifecycle import Bench


def test_the_factory_keys_come_from_the_product_generator(factory_key_files: tuple[Path, Path]) -> None:
    private, public = factory_key_files
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_private_key(private).size_in_bits() == RSA_BITS


def test_produce_with_faults_and_read_the_pins_back(bench: Bench) -> None:
    bench.register_factory()
    new_card = bench.create_batch("K1", 20)
    system_public = bench.system.settings.key_dir / "system.pub.pem"
    pins = read_pins(new_card, bench.factory_keys[0], system_public)
    assert len(pins) == 20 and all(len(pin) >= 16 and pin.isdigit() for pin in pins.values())
    report = produce(new_card, bench.workdir / "K1.produced", bench.factory_keys, system_public,
                     faults=factory_sim.Faults(missing=2, seed=1))
    assert len(report.faults["missing"]) == 2
    assert bench.check("K1", bench.workdir / "K1.produced").counts["missing"] == 2
