"""The command line as a whole: help for every command, ``--json`` for every listing, roles, and no PIN anywhere.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import text

from cardmgmt import sealed_files
from cardmgmt.db import make_engine
from cardmgmt.keys import load_private_key, load_public_key
from cli import cli
from testkit.commandline import (
    FAR_EXPIRY,
    Installation,
    Refusals,
    assert_ok,
    describe,
    escaped,
    invoke,
)


def test_every_listing_command_prints_json(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    rid = inst.file_request(2)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    scan = inst.workdir / "scan.txt"
    scan.write_text("\n".join(s[10:20]) + "\n")
    inst.create_batch("B2", 10)
    listings: list[tuple[Any, ...]] = [
        ("operator", "list"), ("factory", "list"), ("hall", "list"), ("batch", "list"),
        ("card", "show", s[0]), ("request", "list"), ("request", "list", "--status", "approved"),
        ("report", "stock"), *[("report", "stock", "--by", d) for d in ("face-value", "batch", "state", "hall")],
        ("report", "batches"), ("report", "issues"), ("audit", "log"), ("audit", "log", "--action", "card.intake"),
    ]
    for args in listings:
        doc = inst.json(*args)
        assert isinstance(doc, list) and doc, args
    for args in [("lockout", "list"), ("marketing", "outbox"), ("ha", "status")]:  # empty on a card-only installation
        assert isinstance(inst.json(*args), list), args
    assert isinstance(json.loads(inst.ok("request", "collect", rid, "--json")), list)
    assert json.loads(inst.ok("stock", "count", "--batch", "B1", "--box", 2, "--scanned", scan, "--json"))["missing"] == 0
    assert json.loads(inst.ok("batch", "check", "B2", inst.produce("B2"), "--json"))["counts"]["matched"] == 10



def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from command_paths(command, path)



MAIN_COMMANDS = {
    ("db", "upgrade"), ("init",), ("operator", "add"), ("factory", "register"), ("factory-sim", "produce"),
    ("hall", "add"), ("batch", "create"), ("batch", "check"), ("stock", "intake"), ("stock", "count"),
    ("card", "void"), ("card", "freeze"), ("request", "file"), ("request", "approve"), ("report", "stock"),
}



def cli_command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_main_commands_are_all_known() -> None:
    assert MAIN_COMMANDS <= set(command_paths())



@pytest.mark.parametrize("path", [(), *command_paths()], ids=lambda p: " ".join(p) or "cli")
def test_help_of_every_command(path: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        stdout = assert_ok(invoke(*path, flag))
        assert stdout.startswith("Usage: "), stdout
    if path and not isinstance(cli_command(path), click.Group):
        assert "Example" in stdout, f"cli.py {' '.join(path)} --help gives no example"



def test_wrong_roles_are_refused(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    before = inst.snapshot()
    out = inst.workdir / "B2.newcard"
    r = Refusals()
    r.check("auditor voids", inst.run("card", "void", "--serial", s[0], "--reason", "x", "--yes", user="carol"),
            "operator 'carol' (auditor) may not manage cards")
    r.check("finance takes in stock", inst.run("stock", "intake", "--batch", "B1", user="bob"), "may not manage cards")
    r.check("finance freezes", inst.run("card", "freeze", "--serial", s[0], "--reason", "x", user="bob"),
            "may not manage cards")
    r.check("finance creates a batch",
            inst.run("batch", "create", "B2", "--face-value", "50", "--quantity", 20, "--expiry", FAR_EXPIRY,
                     "--factory", "F1", "--out", out, user="bob"),
            "operator 'bob' (finance) may not manage cards")
    assert not out.exists()
    assert inst.snapshot() == before
    r.assert_all_clean()



def test_no_pin_appears_in_any_output_or_in_the_database(inst: Installation, database_url: str) -> None:
    outputs: list[str] = []

    def run(*args: Any, codes: tuple[int, ...] = (0,), **kw: Any) -> str:
        result = inst.run(*args, **kw)
        assert result.exit_code in codes and not escaped(result), describe(result)
        outputs.append(result.output)  # stdout and stderr
        return result.stdout

    new_card = inst.workdir / "B1.newcard"
    run("batch", "create", "B1", "--face-value", "50", "--quantity", 40, "--box-size", 10, "--expiry", FAR_EXPIRY,
        "--factory", "F1", "--out", new_card)
    # Only the factory can open the new-card file: that is where the PINs are.
    with sealed_files.open_sealed(new_card, kind="new-card", sender=load_public_key(inst.key_dir / "system.pub.pem"),
                                  recipient=load_private_key(inst.factory_keys / "factory.pem")) as sealed:
        cards = [line.decode().rstrip("\n").split(",") for line in sealed.rows()]
    pins = {pin for _, _, pin in cards}
    serials = [serial for serial, _, _ in cards]
    assert len(pins) == 40 and all(len(p) == 18 and p.isdigit() for p in pins)

    produced = inst.workdir / "B1.produced"
    sim = invoke("factory-sim", "produce", new_card, "--out", produced, "--factory-key", inst.factory_keys / "factory.pem",
                 "--system-key", inst.key_dir / "system.pub.pem", "--damaged", 2, "--missing", 1, "--altered", 1,
                 "--duplicate", 1, "--extra", 1, "--seed", 3)
    outputs.append(assert_ok(sim))
    rj, rc = inst.workdir / "check.json", inst.workdir / "check.csv"
    run("batch", "check", "B1", produced, "--report-json", rj, "--report-csv", rc, codes=(3,))
    run("batch", "check", "B1", produced, "--json", codes=(1,))  # already imported
    outputs += [rj.read_text(), rc.read_text()]
    findings = json.loads(rj.read_text())["findings"]
    run("stock", "intake", "--batch", "B1", codes=(1,))  # refused: voided and unresolved cards in it
    for f in findings:
        if f["finding"] in ("missing", "altered", "duplicate"):
            run("card", "void", "--serial", f["serial"], "--reason", "factory discrepancy", "--yes")
    run("stock", "intake", "--batch", "B1", "--skip-voided")
    for serial in {serials[0], serials[-1], *(f["serial"] for f in findings if f["finding"] != "extra")}:
        run("card", "show", serial)
        run("card", "show", serial, "--json")
    scan = inst.workdir / "scan.txt"
    scan.write_text("\n".join(serials[:9]) + "\n")
    run("stock", "count", "--batch", "B1", "--box", 1, "--scanned", scan, codes=(0, 3))
    run("stock", "count", "--batch", "B1", "--box", 1, "--scanned", scan, "--json", codes=(0, 3))
    run("stock", "count", "--batch", "B1", "--counted", 30, codes=(0, 3))
    faulted = {f["serial"] for f in findings}
    spare = next(x for x in reversed(serials) if x not in faulted)  # in stock, and left by the collections below
    run("card", "freeze", "--serial", spare, "--reason", "lost")
    run("card", "unfreeze", "--serial", spare, "--reason", "found")
    run("card", "void", "--serial", spare, "--reason", "torn", "--yes")
    rid = inst.file_request(10)
    run("request", "approve", rid, "--comment", "ok", user="bob")
    run("request", "collect", rid)
    rid = inst.file_request(5)
    run("request", "approve", rid, "--comment", "ok", user="bob")
    run("request", "collect", rid, "--json")
    for listing in (("operator", "list"), ("factory", "list"), ("hall", "list"), ("batch", "list"),
                    ("request", "list"), ("report", "batches"), ("report", "issues"),
                    *[("report", "stock", "--by", d) for d in ("face-value", "batch", "state", "hall")]):
        run(*listing, user="carol")
        run(*listing, "--json", user="carol")
    run("audit", "log", "--limit", "10000", user="carol")
    audit_json = run("audit", "log", "--limit", "10000", "--json", user="carol")
    run("audit", "verify", user="carol")
    assert len(json.loads(audit_json)) > 20
    assert inst.states() == {"issued": 15, "in_stock": 19, "voided": 6}  # the whole life really ran

    everything = "\n".join(outputs)
    assert serials[0] in everything
    leaked = sorted(p for p in pins if p in everything)
    assert leaked == [], f"PINs printed by the CLI: {leaked}"

    if database_url.startswith("sqlite:///"):
        db_file = Path(database_url.removeprefix("sqlite:///"))
        data = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))  # with -wal and -shm
        assert serials[0].encode() in data
        assert [p for p in pins if p.encode() in data] == [], "a PIN is stored in the SQLite database file"
    else:
        engine = make_engine(database_url)
        with engine.connect() as conn:
            tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
            dump = "\n".join(str(row) for t in tables for row in conn.execute(text(f'SELECT * FROM "{t}"')))
        engine.dispose()
        assert serials[0] in dump
        assert [p for p in pins if p in dump] == [], "a PIN is stored in the PostgreSQL database"

