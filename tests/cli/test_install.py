"""``db``, ``init`` and ``keys``: setting an installation up, and the key directory guarding every command.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import gc
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from testkit.commandline import (
    FAR_EXPIRY,
    Installation,
    Refusals,
    assert_ok,
    assert_one_line_error,
    invoke,
    run_init,
)
from testkit.install import PASSWORDS


def test_db_commands_report_the_schema_revision(inst: Installation) -> None:
    current = inst.ok("db", "current", user=None)
    m = re.fullmatch(r"database: (\w+); newest: (\w+)\n", current)
    assert m and m.group(1) == m.group(2)
    assert inst.ok("db", "upgrade", user=None) == f"schema at revision {m.group(1)}\n"



def test_init_closes_its_database_connection(database_url: str, key_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every card system a command opens is closed again (on PostgreSQL a leak is an open connection)."""
    import cli as cli_module

    opened: list[Any] = []

    class Tracked(cli_module.CardSystem):  # type: ignore[misc, name-defined]
        closed = False

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            opened.append(self)

        def close(self) -> None:
            self.closed = True
            super().close()

    monkeypatch.setattr(cli_module, "CardSystem", Tracked)
    monkeypatch.setattr(cli_module.install, "CardSystem", Tracked)  # `init` opens its own, before any operator exists
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            assert_ok(invoke("--db", database_url, "--key-dir", key_dir, "init", "--admin", "alice",
                             env={"CARDS_ADMIN_PASSWORD": PASSWORDS["alice"]}))
            assert_ok(invoke("--db", database_url, "--key-dir", key_dir, "-u", "alice", "operator", "list",
                             env={"CARDS_PASSWORD": PASSWORDS["alice"]}))
            assert len(opened) == 2
            assert [s.closed for s in opened] == [True, True], "`init` never closes the card system it opens"
        finally:
            for s in opened:
                s.db.dispose()
            gc.collect()



def test_a_refused_init_leaves_no_key_directory_behind(inst: Installation, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh-keys"
    before = inst.snapshot()
    assert_one_line_error(run_init(inst.db, fresh, "mallory", "mallory-secret-1"), "already has operators")
    assert inst.snapshot() == before
    assert not fresh.exists(), "a refused init created a key directory that belongs to no database"



def test_a_database_without_the_schema_is_refused(inst: Installation, tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    result = invoke("--db", empty, "--key-dir", inst.key_dir, "-u", "alice", "batch", "list",
                    env={"CARDS_PASSWORD": PASSWORDS["alice"]})
    assert_one_line_error(result, "run `cli.py db upgrade`")
    result = invoke("--db", "postgresql://postgres@127.0.0.1:1/nothing", "--key-dir", inst.key_dir, "-u", "alice",
                    "batch", "list", env={"CARDS_PASSWORD": PASSWORDS["alice"]})
    assert_one_line_error(result, "cannot open the database")



def test_init_is_refused_once_an_installation_has_operators(inst: Installation) -> None:
    before = inst.snapshot()
    assert_one_line_error(run_init(inst.db, inst.key_dir, "mallory", "mallory-secret-1"), "already has operators")
    assert inst.snapshot() == before



def test_keys_init_and_factory_keygen_never_replace_a_key(inst: Installation, tmp_path: Path) -> None:
    master = (inst.key_dir / "master.key").read_bytes()
    assert_one_line_error(invoke("--key-dir", inst.key_dir, "keys", "init"), "already exists; refusing to replace a key")
    assert (inst.key_dir / "master.key").read_bytes() == master
    factory = tmp_path / "factory"
    shutil.copytree(inst.factory_keys, factory)
    private = (factory / "factory.pem").read_bytes()
    assert_one_line_error(invoke("factory-sim", "keygen", factory), "already exists")
    assert (factory / "factory.pem").read_bytes() == private
    inst.ok("batch", "list")  # the installation still works



def test_a_wrong_key_directory_is_refused_by_every_command(inst: Installation, other_key_dir: Path) -> None:
    s = inst.stocked_batch("B1", 20)
    inst.create_batch("B2", 10)
    produced = inst.produce("B2")
    before = inst.snapshot()
    out = inst.workdir / "B3.newcard"
    scan = inst.workdir / "scan.txt"
    scan.write_text(s[0] + "\n")
    commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("alice", ("operator", "list"), {}),
        ("alice", ("operator", "request", "add", "erin", "--role", "admin", "--reason", "x"), {}),
        ("alice", ("operator", "request", "list"), {}),
        ("dave", ("operator", "request", "approve", 1, "--comment", "x"), {"env": {"CARDS_NEW_PASSWORD": "erin-secret-1"}}),
        ("alice", ("operator", "password"), {"env": {"CARDS_NEW_PASSWORD": "alice-new-pw-1"}}),
        ("alice", ("operator", "reset-password", "bob"), {"env": {"CARDS_NEW_PASSWORD": "bob-temp-pw-1"}}),
        ("alice", ("operator", "unlock", "bob"), {}),
        ("alice", ("operator", "disable", "bob"), {}),
        ("alice", ("factory", "list"), {}),
        ("alice", ("factory", "register", "F2", "--public-key", inst.factory_keys / "factory.pub.pem"), {}),
        ("alice", ("hall", "add", "H02", "x"), {}),
        ("alice", ("hall", "list"), {}),
        ("alice", ("batch", "create", "B3", "--face-value", "50", "--quantity", 10, "--expiry", FAR_EXPIRY,
                   "--factory", "F1", "--out", out), {}),
        ("alice", ("batch", "list"), {}),
        ("alice", ("batch", "check", "B2", produced), {}),
        ("alice", ("stock", "intake", "--batch", "B2"), {}),
        ("alice", ("stock", "count", "--batch", "B1", "--scanned", scan), {}),
        ("alice", ("card", "void", "--serial", s[0], "--reason", "x", "--yes"), {}),
        ("alice", ("card", "freeze", "--serial", s[0], "--reason", "x"), {}),
        ("alice", ("card", "unfreeze", "--serial", s[0], "--reason", "x"), {}),
        ("alice", ("card", "show", s[0]), {}),
        ("alice", ("request", "file", "--face-value", "50", "--quantity", 1, "--hall", "H01", "--reason", "x"), {}),
        ("bob", ("request", "approve", 1, "--comment", "x"), {}),
        ("bob", ("request", "reject", 1, "--comment", "x"), {}),
        ("alice", ("request", "cancel", 1, "--reason", "x"), {}),
        ("alice", ("request", "collect", 1), {}),
        ("alice", ("request", "list"), {}),
        ("carol", ("report", "stock"), {}),
        ("carol", ("report", "batches"), {}),
        ("carol", ("report", "issues"), {}),
        ("carol", ("audit", "log"), {}),
        ("carol", ("audit", "verify"), {}),
    ]
    r = Refusals()
    for user, args, kw in commands:
        r.check(" ".join(map(str, args[:2])), inst.run(*args, user=user, key_dir=other_key_dir, **kw),
                "does not belong to this database")
    r.check("init", run_init(inst.db, other_key_dir, "mallory", "mallory-secret-1"), "already has operators")
    assert not out.exists()
    assert inst.snapshot() == before
    r.assert_all_clean()



def test_a_key_file_open_to_others_is_refused(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    before = inst.snapshot()
    out = inst.workdir / "B2.newcard"
    r = Refusals()
    for key_file in ("master.key", "system.pem"):
        path = inst.key_dir / key_file
        os.chmod(path, 0o644)
        try:
            for args in [("batch", "list"), ("card", "void", "--serial", s[0], "--reason", "x", "--yes"),
                         ("batch", "create", "B2", "--face-value", "50", "--quantity", 10, "--expiry", FAR_EXPIRY,
                          "--factory", "F1", "--out", out)]:
                r.check(f"{key_file} {args[:2]}", inst.run(*args), f"key file {path} is open to other users")
        finally:
            os.chmod(path, 0o600)
    assert not out.exists()
    assert inst.snapshot() == before
    r.assert_all_clean()

