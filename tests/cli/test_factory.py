"""``factory`` and ``factory-sim``: registering factories, and the stand-in factory.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import os
import re
import shutil
from pathlib import Path

from testkit.commandline import (
    Installation,
    assert_one_line_error,
    invoke,
)


def test_factory_sim_refuses_impossible_faults(inst: Installation) -> None:
    new_card = inst.create_batch("B1", 10)
    out = inst.workdir / "B1.produced"
    result = invoke("factory-sim", "produce", new_card, "--out", out, "--factory-key", inst.factory_keys / "factory.pem",
                    "--system-key", inst.key_dir / "system.pub.pem", "--missing", 6, "--damaged", 5)
    assert_one_line_error(result, "the faults need 11 distinct cards but batch B1 has 10")
    assert not out.exists()



def test_factory_register_and_list(inst: Installation, other_factory_keys: Path) -> None:
    (f1,) = inst.json("factory", "list")
    assert f1["name"] == "F1" and re.fullmatch(r"[0-9a-f]{16}", f1["key"])

    stdout = inst.ok("factory", "register", "F2", "--public-key", other_factory_keys / "factory.pub.pem")
    m = re.fullmatch(r"factory F2 registered \(key ([0-9a-f]{16})\)\n", stdout)
    assert m
    listed = {f["name"]: f["key"] for f in inst.json("factory", "list")}
    assert listed == {"F1": f1["key"], "F2": m.group(1)}
    table = inst.ok("factory", "list", user="bob")
    assert "F2" in table and m.group(1) in table

    before = inst.snapshot()
    assert_one_line_error(inst.run("factory", "register", "F3", "--public-key", other_factory_keys / "factory.pub.pem",
                                   user="carol"), "may not manage cards")
    assert_one_line_error(inst.run("factory", "register", "F1", "--public-key", other_factory_keys / "factory.pub.pem"),
                          "already registered")
    assert_one_line_error(inst.run("factory", "register", "F3", "--public-key", inst.workdir / "absent.pem"),
                          "does not exist")
    garbage = inst.workdir / "garbage.pem"
    garbage.write_text("not a key\n")
    assert_one_line_error(inst.run("factory", "register", "F3", "--public-key", garbage), "not an RSA public key")
    assert inst.snapshot() == before



def test_a_factory_private_key_open_to_others_is_refused(inst: Installation, tmp_path: Path) -> None:
    new_card = inst.create_batch("B1", 20)
    loose = tmp_path / "loose"
    shutil.copytree(inst.factory_keys, loose)
    os.chmod(loose / "factory.pem", 0o644)
    out = inst.workdir / "B1.produced"
    result = invoke("factory-sim", "produce", new_card, "--out", out, "--factory-key", loose / "factory.pem",
                    "--system-key", inst.key_dir / "system.pub.pem")
    assert_one_line_error(result, "is open to other users")
    assert not out.exists()

