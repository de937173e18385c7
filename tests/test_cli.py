"""The operators' command line (cli.py), driven end to end through click's CliRunner.

Every command runs as an operator would type it: ``--db`` and ``--key-dir``
name the installation, ``-u`` the operator, and the password comes from
``CARDS_PASSWORD`` in the environment.  Each test gets a fresh installation
made through the CLI itself (``init``, ``operator add``, ``factory register``,
``hall add``) on SQLite and on PostgreSQL.

Exit codes under test: 0 done, 1 refused, 2 usage error, 3 discrepancies.
Every refusal is checked to be one ``Error:`` line with no traceback, and to
have changed nothing: stock by state, the batch list, the request list and
the whole operation log (every change writes an entry) are compared before
and after, and files a refused command would have written must not exist.
"""

import csv
import datetime as dt
import gc
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from cardmgmt import sealed_files
from cardmgmt.db import make_engine
from cardmgmt.keys import load_private_key, load_public_key
from cardmgmt.serials import make_serial, parse_serial
from cli import cli
from testkit import replay as replay_tool
from testkit.replay import free_udp_port
from tests.conftest import PASSWORDS

FAR_EXPIRY = (dt.date.today() + dt.timedelta(days=730)).isoformat()

# Nothing from the environment of whoever runs the tests may leak into a command.
CLEAN_ENV: dict[str, str | None] = {
    name: None
    for name in {
        "CARDS_DATABASE_URL", "CARDS_HOME", "CARDS_KEY_DIR", "CARDS_OPERATOR",
        "CARDS_PASSWORD", "CARDS_ADMIN_PASSWORD", "CARDS_NEW_PASSWORD",
        *(k for k in os.environ if k.startswith("CARDS_")),
    }
}


# --- invoking the CLI and judging what it printed -----------------------------------


def invoke(*args: Any, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """Run ``cli.py ARGS`` in-process, as an operator at a shell would."""
    return CliRunner().invoke(cli, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})}, input=input)


def describe(result: Result) -> str:
    return (
        f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n"
        f"--- exception {result.exception!r}"
    )


def escaped(result: Result) -> bool:
    """An exception got past the CLI: at a real terminal that is a traceback."""
    return result.exception is not None and not isinstance(result.exception, SystemExit)


def assert_ok(result: Result, code: int = 0) -> str:
    assert result.exit_code == code and not escaped(result), describe(result)
    assert "Traceback" not in result.output
    return result.stdout


def assert_one_line_error(result: Result, *fragments: str, code: int = 1) -> str:
    """Refused with exit ``code``: exactly one ``Error:`` line, no traceback; returns that line.

    For a refusal (exit 1) the error line is all that reaches stderr; a usage
    error (exit 2) is allowed click's usage lines above it.
    """
    assert result.exit_code == code, describe(result)
    assert not escaped(result), describe(result)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, describe(result)
    if code == 1:
        assert lines == errors, describe(result)
        assert result.stdout.strip() == "", describe(result)
    for fragment in fragments:
        assert fragment in errors[0], describe(result)
    return errors[0]


class Refusals:
    """Checks several refusals and reports every one that was not clean, not only the first."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, label: str, result: Result, *fragments: str, code: int = 1) -> None:
        try:
            assert_one_line_error(result, *fragments, code=code)
        except AssertionError as e:
            self.failures.append(f"[{label}] {e}")

    def assert_all_clean(self) -> None:
        assert not self.failures, "\n\n".join(self.failures)


# --- an installation driven through the CLI ----------------------------------------


@dataclass
class Installation:
    db: str
    key_dir: Path
    workdir: Path
    factory_keys: Path  # the stand-in factory's directory: factory.pem, factory.pub.pem

    def run(
        self,
        *args: Any,
        user: str | None = "alice",
        password: str | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
        key_dir: Path | None = None,
    ) -> Result:
        head: list[Any] = ["--db", self.db, "--key-dir", key_dir or self.key_dir]
        environ = dict(env or {})
        if user is not None:
            head += ["-u", user]
            environ["CARDS_PASSWORD"] = password if password is not None else PASSWORDS.get(user, "no-such-password")
        return invoke(*head, *args, env=environ, input=input)

    def ok(self, *args: Any, code: int = 0, **kw: Any) -> str:
        return assert_ok(self.run(*args, **kw), code)

    def json(self, *args: Any, user: str = "carol", code: int = 0) -> Any:
        return json.loads(self.ok(*args, "--json", user=user, code=code))

    def snapshot(self) -> dict[str, Any]:
        """What a refused command must leave as it was, read as the auditor.

        Every change (operators, factories, halls included) writes an
        operation-log entry in its own transaction, so the whole log is compared.
        """
        return {
            "stock": self.json("report", "stock", "--by", "state"),
            "batches": self.json("batch", "list"),
            "requests": self.json("request", "list"),
            "log": self.json("audit", "log", "--limit", "10000"),
        }

    # The steps of a card's life, each as the CLI does it.

    def create_batch(self, batch_no: str, quantity: int = 30, *, face_value: str = "50", box_size: int = 10) -> Path:
        out = self.workdir / f"{batch_no}.newcard"
        stdout = self.ok("batch", "create", batch_no, "--face-value", face_value, "--quantity", quantity,
                         "--box-size", box_size, "--expiry", FAR_EXPIRY, "--factory", "F1", "--out", out)
        assert f"batch {batch_no}: {quantity} cards" in stdout
        assert out.exists()
        return out

    def produce(self, batch_no: str, *faults: Any, factory_key: Path | None = None, out: Path | None = None) -> Path:
        out = out or self.workdir / f"{batch_no}.produced"
        assert_ok(invoke("factory-sim", "produce", self.workdir / f"{batch_no}.newcard", "--out", out,
                         "--factory-key", factory_key or self.factory_keys / "factory.pem",
                         "--system-key", self.key_dir / "system.pub.pem", "--name", "F1", *faults))
        return out

    def checked_batch(self, batch_no: str, quantity: int = 30, **kw: Any) -> list[str]:
        """Ordered, produced without faults and checked: every card is 'produced'."""
        self.create_batch(batch_no, quantity, **kw)
        self.ok("batch", "check", batch_no, self.produce(batch_no))
        return self.serials(batch_no)

    def stocked_batch(self, batch_no: str, quantity: int = 30, **kw: Any) -> list[str]:
        serials = self.checked_batch(batch_no, quantity, **kw)
        self.ok("stock", "intake", "--batch", batch_no)
        return serials

    def batch_row(self, batch_no: str) -> dict[str, Any]:
        (row,) = [b for b in self.json("batch", "list") if b["batch_no"] == batch_no]
        return row

    def serials(self, batch_no: str) -> list[str]:
        first, last = self.batch_row(batch_no)["serials"].split("-")
        return [make_serial(n) for n in range(parse_serial(first), parse_serial(last) + 1)]

    def card(self, serial: str) -> dict[str, Any]:
        (row,) = self.json("card", "show", serial)
        return row

    def states(self) -> dict[str, int]:
        return {r["state"]: r["cards"] for r in self.json("report", "stock", "--by", "state") if r["cards"]}

    def file_request(self, quantity: int, face_value: str = "50", hall: str = "H01", user: str = "alice") -> int:
        stdout = self.ok("request", "file", "--face-value", face_value, "--quantity", quantity, "--hall", hall,
                         "--reason", "weekly supply", user=user)
        m = re.fullmatch(r"issue request (\d+) filed; waiting for finance approval\n", stdout)
        assert m, stdout
        return int(m.group(1))


def run_init(database_url: str, key_dir: Path, admin: str, password: str) -> Result:
    """``cli.py init`` with the first administrator's password from the environment."""
    return invoke("--db", database_url, "--key-dir", key_dir, "init", "--admin", admin, env={"CARDS_ADMIN_PASSWORD": password})


def keygen(directory: Path) -> Path:
    stdout = assert_ok(invoke("factory-sim", "keygen", directory))
    assert stdout == f"factory keys in {directory}\n"
    assert (directory / "factory.pem").stat().st_mode & 0o077 == 0
    return directory


@pytest.fixture(scope="session")
def sim_factory_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in factory's key pair, made once by ``factory-sim keygen``."""
    return keygen(tmp_path_factory.mktemp("sim") / "factory")


@pytest.fixture(scope="session")
def other_factory_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second factory key pair, which no batch of ours is made for."""
    return keygen(tmp_path_factory.mktemp("sim") / "other-factory")


@pytest.fixture(scope="session")
def other_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another installation's key directory, made by ``keys init``."""
    d = tmp_path_factory.mktemp("other-install") / "keys"
    stdout = assert_ok(invoke("--key-dir", d, "keys", "init"))
    assert f"keys created in {d}" in stdout
    assert (d / "master.key").stat().st_mode & 0o077 == 0
    return d


@pytest.fixture
def inst(database_url: str, key_dir: Path, tmp_path: Path, sim_factory_keys: Path) -> Iterator[Installation]:
    """A new installation set up through the CLI: alice (admin), bob (finance), carol (auditor), F1, H01."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    i = Installation(database_url, key_dir, workdir, sim_factory_keys)
    stdout = assert_ok(run_init(database_url, key_dir, "alice", PASSWORDS["alice"]))
    assert stdout.startswith("installation ready; administrator alice")
    for name, role in (("bob", "finance"), ("carol", "auditor")):
        assert i.ok("operator", "add", name, "--role", role, env={"CARDS_NEW_PASSWORD": PASSWORDS[name]}) == (
            f"operator {name} added as {role}\n"
        )
    assert "factory F1 registered" in i.ok("factory", "register", "F1", "--public-key", sim_factory_keys / "factory.pub.pem")
    assert i.ok("hall", "add", "H01", "Lubei business hall") == "hall H01 added\n"
    yield i


def bad_check_digit(serial: str) -> str:
    return serial[:-1] + str((int(serial[-1]) + 1) % 10)


# === 1. the happy path of every command group =======================================


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


def test_operator_add_list_and_disable(inst: Installation) -> None:
    table = inst.ok("operator", "list", user="carol")
    assert table.splitlines()[0].split() == ["name", "role", "active"]
    assert {tuple(line.split()) for line in table.splitlines()[1:]} == {
        ("alice", "admin", "True"), ("bob", "finance", "True"), ("carol", "auditor", "True"),
    }

    assert inst.ok("operator", "add", "dave", "--role", "admin", env={"CARDS_NEW_PASSWORD": PASSWORDS["dave"]}) == (
        "operator dave added as admin\n"
    )
    assert inst.ok("operator", "list", user="dave")  # dave can log in
    assert {o["name"]: o["role"] for o in inst.json("operator", "list")} == {
        "alice": "admin", "bob": "finance", "carol": "auditor", "dave": "admin",
    }

    assert inst.ok("operator", "disable", "dave") == "operator dave disabled\n"
    assert {o["name"]: o["active"] for o in inst.json("operator", "list")}["dave"] is False
    (entry,) = inst.json("audit", "log", "--action", "operator.disable")
    assert (entry["operator"], entry["object"], entry["after"]) == ("alice", "operator dave", {"active": False})

    before = inst.snapshot()
    assert_one_line_error(inst.run("operator", "list", user="dave"), "operator 'dave' is disabled")
    assert_one_line_error(inst.run("operator", "disable", "alice"), "cannot disable their own account")
    assert_one_line_error(inst.run("operator", "add", "bob", "--role", "admin", env={"CARDS_NEW_PASSWORD": "whatever-1"}),
                          "already exists")
    assert_one_line_error(inst.run("operator", "add", "erin", "--role", "admin", env={"CARDS_NEW_PASSWORD": "short"}),
                          "at least 8 characters")
    assert_one_line_error(inst.run("operator", "add", "erin", "--role", "admin", user="bob",
                                   env={"CARDS_NEW_PASSWORD": "erin-secret-1"}), "may not manage operators")
    assert_one_line_error(inst.run("operator", "disable", "nobody"), "operator 'nobody' does not exist")
    assert_one_line_error(inst.run("operator", "add", "erin", "--role", "boss", env={"CARDS_NEW_PASSWORD": "erin-secret-1"}),
                          "'boss'", code=2)
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


def test_factory_sim_refuses_impossible_faults(inst: Installation) -> None:
    new_card = inst.create_batch("B1", 10)
    out = inst.workdir / "B1.produced"
    result = invoke("factory-sim", "produce", new_card, "--out", out, "--factory-key", inst.factory_keys / "factory.pem",
                    "--system-key", inst.key_dir / "system.pub.pem", "--missing", 6, "--damaged", 5)
    assert_one_line_error(result, "the faults need 11 distinct cards but batch B1 has 10")
    assert not out.exists()


def test_operator_add_prompts_for_the_new_password_twice(inst: Installation) -> None:
    result = inst.run("operator", "add", "dave", "--role", "admin", input="dave-secret-1\ndave-secret-1\n")
    assert "operator dave added as admin" in assert_ok(result)
    assert inst.ok("operator", "list", user="dave")


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


def test_hall_add_and_list(inst: Installation) -> None:
    assert inst.ok("hall", "add", "H02", "Nanshan business hall") == "hall H02 added\n"
    assert inst.json("hall", "list") == [
        {"code": "H01", "name": "Lubei business hall"},
        {"code": "H02", "name": "Nanshan business hall"},
    ]
    assert "Nanshan business hall" in inst.ok("hall", "list", user="bob")

    before = inst.snapshot()
    assert_one_line_error(inst.run("hall", "add", "H01", "again"), "hall H01 already exists")
    assert_one_line_error(inst.run("hall", "add", "H 3", "bad code"), "hall code")
    assert_one_line_error(inst.run("hall", "add", "H03", "Somewhere", user="bob"), "may not manage cards")
    assert inst.snapshot() == before


def test_batch_create_writes_the_new_card_file_and_lists_the_batch(inst: Installation) -> None:
    out = inst.workdir / "B1.newcard"
    stdout = inst.ok("batch", "create", "B1", "--face-value", "50", "--quantity", 30, "--box-size", 10,
                     "--expiry", FAR_EXPIRY, "--factory", "F1", "--out", out)
    m = re.fullmatch(r"batch B1: 30 cards of 50\.00 yuan, serials (\d{12})-(\d{12})\n"
                     r"new-card file (.+) \(sha256 ([0-9a-f]{64})\)\n", stdout)
    assert m, stdout
    assert m.group(3) == str(out)
    assert parse_serial(m.group(2)) - parse_serial(m.group(1)) == 29
    assert out.stat().st_mode & 0o077 == 0  # the PINs are in there: owner only
    assert out.read_bytes().startswith(sealed_files.MAGIC)

    row = inst.batch_row("B1")
    assert row["serials"] == f"{m.group(1)}-{m.group(2)}"
    assert (row["face_value"], row["quantity"], row["box_size"], row["expiry"]) == (5000, 30, 10, FAR_EXPIRY)
    assert (row["factory"], row["created_by"], row["ordered"], row["produced"]) == ("F1", "alice", 30, 0)
    table = inst.ok("batch", "list", user="bob").splitlines()
    assert table[0].split() == ["batch_no", "face_value", "quantity", "expiry", "ordered", "produced", "in_stock",
                                "issued", "redeemed", "voided", "frozen"]
    assert table[1].split() == ["B1", "50.00", "30", FAR_EXPIRY, "30", "0", "0", "0", "0", "0", "0"]
    (entry,) = inst.json("audit", "log", "--action", "batch.create")
    assert entry["after"]["new_card_digest"] == m.group(4)

    # A second batch follows on in the serial sequence.
    inst.create_batch("B2", 20, face_value="100.00")
    assert parse_serial(inst.serials("B2")[0]) == parse_serial(m.group(2)) + 1
    assert inst.batch_row("B2")["face_value"] == 10000


def test_batch_create_refuses_bad_orders_and_changes_nothing(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    before = inst.snapshot()
    existing = inst.workdir / "B1.newcard"
    content = existing.read_bytes()
    fresh = inst.workdir / "fresh.newcard"

    def create(batch_no: str = "B2", out: Path = fresh, **changes: str) -> Result:
        opts = {"face-value": "50", "quantity": "20", "expiry": FAR_EXPIRY, "factory": "F1", "out": str(out), **changes}
        return inst.run("batch", "create", batch_no, *[x for k, v in opts.items() for x in (f"--{k}", v)])

    r = Refusals()
    r.check("bad date", create(expiry="2027-02-30"), "is not a date", code=2)
    r.check("no cards", create(quantity="0"), "--quantity", code=2)
    r.check("zero yuan", create(**{"face-value": "0"}), "positive", code=2)
    r.check("existing file", create(out=existing), "already exists")
    r.check("existing batch", create(batch_no="B1"), "batch B1 already exists")
    r.check("unknown factory", create(factory="F9"), "factory 'F9' is not registered")
    r.check("bad batch number", create(batch_no="B 2"), "batch number")
    r.check("expiry today", create(expiry=dt.date.today().isoformat()), "is not in the future")
    r.check("no such directory", create(out=inst.workdir / "no-such-dir" / "B2.newcard"), "no-such-dir")
    assert existing.read_bytes() == content
    assert not fresh.exists()
    assert inst.snapshot() == before
    r.assert_all_clean()


def test_batch_check_of_a_clean_file_writes_empty_reports(inst: Installation) -> None:
    inst.create_batch("B1", 30)
    produced = inst.produce("B1")
    rj, rc = inst.workdir / "check.json", inst.workdir / "check.csv"
    stdout = inst.ok("batch", "check", "B1", produced, "--report-json", rj, "--report-csv", rc)
    assert stdout.startswith("batch B1: file verified (sha256 ")
    assert ["matched", "30"] in [line.split() for line in stdout.splitlines()]
    assert stdout.endswith("30 cards ready for intake; 0 damaged cards voided\n")
    doc = json.loads(rj.read_text())
    assert doc["batch_no"] == "B1" and len(doc["file_digest"]) == 64
    assert doc["counts"] == {"matched": 30, "missing": 0, "extra": 0, "duplicate": 0, "altered": 0, "damaged": 0}
    assert (doc["produced"], doc["voided"], doc["findings"]) == (30, 0, [])
    assert rc.read_text().splitlines() == ["serial,finding,detail"]
    row = inst.batch_row("B1")
    assert (row["ordered"], row["produced"]) == (0, 30)


def test_a_check_whose_report_cannot_be_written_changes_nothing(inst: Installation) -> None:
    """Exit 1 means nothing changed: a check must not be committed when its report file cannot be written.

    Otherwise the file counts as imported, the report is lost and a second
    run is refused as "already imported".
    """
    inst.create_batch("B1", 20)
    produced = inst.produce("B1")
    before = inst.snapshot()
    result = inst.run("batch", "check", "B1", produced, "--report-json", inst.workdir / "no-such-dir" / "check.json")
    assert_one_line_error(result, "check.json")
    assert inst.snapshot() == before, "the refused check was committed"
    inst.ok("batch", "check", "B1", produced)


def test_batch_check_with_faults_exits_3_and_reports_every_card(inst: Installation) -> None:
    inst.create_batch("B1", 30)
    out = inst.workdir / "B1.produced"
    sim = assert_ok(invoke("factory-sim", "produce", inst.workdir / "B1.newcard", "--out", out,
                           "--factory-key", inst.factory_keys / "factory.pem",
                           "--system-key", inst.key_dir / "system.pub.pem",
                           "--missing", 1, "--extra", 1, "--duplicate", 1, "--altered", 1, "--damaged", 2, "--seed", 7))
    assert sim.startswith("batch B1: read 30 cards, wrote 31 rows to ")  # 30 - 1 missing + 1 duplicate + 1 extra
    faulted = {k: v.split(", ") for k, v in re.findall(r"^  (\w+): (.+)$", sim, re.M)}
    assert {k: len(v) for k, v in faulted.items()} == {"missing": 1, "extra": 1, "duplicate": 1, "altered": 1, "damaged": 2}

    rj, rc = inst.workdir / "check.json", inst.workdir / "check.csv"
    stdout = inst.ok("batch", "check", "B1", out, "--report-json", rj, "--report-csv", rc, code=3)
    assert stdout.endswith("25 cards ready for intake; 2 damaged cards voided\n")
    doc = json.loads(rj.read_text())
    assert doc["counts"] == {"matched": 25, "missing": 1, "extra": 1, "duplicate": 1, "altered": 1, "damaged": 2}
    assert (doc["produced"], doc["voided"]) == (25, 2)
    by_kind: dict[str, list[str]] = {}
    for f in doc["findings"]:
        by_kind.setdefault(f["finding"], []).append(f["serial"])
    assert {k: sorted(v) for k, v in by_kind.items()} == {k: sorted(v) for k, v in faulted.items()}
    with rc.open(newline="") as f:
        assert list(csv.DictReader(f)) == doc["findings"]
    for f in doc["findings"]:
        assert f["serial"] in stdout  # the table lists every finding too

    row = inst.batch_row("B1")
    assert (row["ordered"], row["produced"], row["voided"]) == (3, 25, 2)
    assert inst.card(faulted["damaged"][0])["state"] == "voided"
    for kind in ("missing", "duplicate", "altered"):  # stay ordered until an administrator resolves them
        assert inst.card(faulted[kind][0])["state"] == "ordered"
    assert_one_line_error(inst.run("card", "show", faulted["extra"][0]), "does not exist")


def test_stock_intake_by_batch_box_and_range(inst: Installation) -> None:
    s = inst.checked_batch("B1", 30)
    stdout = inst.ok("stock", "intake", "--batch", "B1", "--box", 2)
    assert stdout.splitlines()[0].split() == ["box", "first_serial", "last_serial", "cards"]
    assert stdout.splitlines()[1].split() == ["2", s[10], s[19], "10"]
    assert stdout.endswith("10 cards taken into stock\n")

    stdout = inst.ok("stock", "intake", "--from", s[0], "--to", s[4])
    assert stdout.splitlines()[1].split() == ["1", s[0], s[4], "5"]
    assert stdout.endswith("5 cards taken into stock\n")
    assert inst.batch_row("B1")["in_stock"] == 15

    # The whole batch now holds cards already in stock: refused whole.
    before = inst.snapshot()
    assert_one_line_error(inst.run("stock", "intake", "--batch", "B1"), "cannot be taken into stock", "15 in stock",
                          "nothing changed")
    assert inst.snapshot() == before

    inst.ok("stock", "intake", "--from", s[5], "--to", s[9])
    inst.ok("stock", "intake", "--batch", "B1", "--box", 3)
    assert inst.batch_row("B1")["in_stock"] == 30

    t = inst.checked_batch("B2", 25)
    stdout = inst.ok("stock", "intake", "--batch", "B2")
    assert [line.split() for line in stdout.splitlines()[1:4]] == [
        ["1", t[0], t[9], "10"], ["2", t[10], t[19], "10"], ["3", t[20], t[24], "5"],
    ]
    assert stdout.endswith("25 cards taken into stock\n")
    assert inst.states() == {"in_stock": 55}
    assert len(inst.json("audit", "log", "--action", "card.intake")) == 5


def test_stock_intake_skip_voided_takes_in_a_box_with_a_damaged_card(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    inst.ok("batch", "check", "B1", inst.produce("B1", "--damaged", 1, "--seed", 1), code=3)
    before = inst.snapshot()
    assert_one_line_error(inst.run("stock", "intake", "--batch", "B1"), "1 voided", "nothing changed")
    assert inst.snapshot() == before
    assert inst.ok("stock", "intake", "--batch", "B1", "--skip-voided").endswith("19 cards taken into stock\n")
    assert inst.states() == {"in_stock": 19, "voided": 1}


def test_stock_count_with_scanned_serials_and_counted_numbers(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 30)
    scan = inst.workdir / "box1.txt"

    scan.write_text("\n".join(s[0:10]) + "\n\n")
    stdout = inst.ok("stock", "count", "--batch", "B1", "--box", 1, "--scanned", scan)
    assert re.fullmatch(r"count \d+ of batch B1 box 1: expected 10, counted 10, missing 0, unexpected 0\n", stdout)

    unknown = make_serial(parse_serial(s[-1]) + 100)
    scan.write_text("\n".join(s[1:10] + [s[15], unknown]) + "\n")
    stdout = inst.ok("stock", "count", "--batch", "B1", "--box", 1, "--scanned", scan, code=3)
    assert "expected 10, counted 11, missing 1, unexpected 2" in stdout
    doc_lines = {tuple(line.split(None, 2)) for line in stdout.splitlines()[2:]}
    assert doc_lines == {(s[0], "missing", "in stock but not found"), (s[15], "unexpected", "in stock elsewhere"),
                         (unknown, "unexpected", "unknown serial")}

    doc = inst.json("stock", "count", "--from", s[10], "--to", s[19], "--counted", 10, user="alice")
    assert (doc["expected"], doc["counted"], doc["missing"], doc["unexpected"], doc["findings"]) == (10, 10, 0, 0, [])
    doc = inst.json("stock", "count", "--batch", "B1", "--counted", 27, user="alice", code=3)
    assert (doc["scope"], doc["expected"], doc["counted"], doc["missing"], doc["unexpected"]) == ("batch B1", 30, 27, 3, 0)

    # A voided card found on the shelf is unexpected, with what it really is.
    inst.ok("card", "void", "--serial", s[20], "--reason", "torn", "--yes")
    scan.write_text("\n".join(s[20:30]) + "\n")
    doc = json.loads(inst.ok("stock", "count", "--batch", "B1", "--box", 3, "--scanned", scan, "--json", code=3))
    assert doc["findings"] == [{"serial": s[20], "finding": "unexpected", "detail": "card is voided"}]

    counts = inst.json("audit", "log", "--action", "stock.count")
    assert len(counts) == 5
    assert inst.states() == {"in_stock": 29, "voided": 1}  # counting moves no card


def test_stock_count_refusals_record_nothing(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    scan = inst.workdir / "scan.txt"
    scan.write_text(f"{s[0]}\n{bad_check_digit(s[1])}\n")
    before = inst.snapshot()
    assert_one_line_error(inst.run("stock", "count", "--batch", "B1", "--scanned", scan), "scanned line 2",
                          "wrong check digit")
    assert_one_line_error(inst.run("stock", "count", "--batch", "B1", "--scanned", scan, "--counted", 3), "either")
    assert_one_line_error(inst.run("stock", "count", "--batch", "B1"), "either")
    assert_one_line_error(inst.run("stock", "count", "--batch", "B1", "--counted", 20, user="carol"), "may not manage cards")
    assert_one_line_error(inst.run("stock", "count", "--batch", "B1", "--counted", -1), "--counted", code=2)
    assert inst.snapshot() == before


def test_card_void_with_yes(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    assert inst.ok("card", "void", "--serial", s[3], "--reason", "torn at pick check", "--yes") == "1 cards voided\n"
    assert inst.card(s[3])["state"] == "voided"
    (entry,) = inst.json("audit", "log", "--action", "card.void")
    assert entry["after"] == {"event": "void", "count": 1, "reason": "torn at pick check"}
    assert entry["before"] == {"states": {"in_stock": 1}}
    assert inst.ok("card", "void", "--batch", "B1", "--box", 2, "--reason", "box lost", "--yes") == "10 cards voided\n"
    assert inst.states() == {"in_stock": 9, "voided": 11}

    before = inst.snapshot()
    assert_one_line_error(inst.run("card", "void", "--serial", s[3], "--reason", "again", "--yes"), "1 voided",
                          "nothing changed")
    assert inst.snapshot() == before


def test_card_void_asks_for_confirmation_and_y_voids(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    result = inst.run("card", "void", "--from", s[0], "--to", s[1], "--reason", "water damage", input="y\n")
    stdout = assert_ok(result)
    assert f"void serials {s[0]}-{s[1]}? This cannot be undone" in result.output
    assert stdout.endswith("2 cards voided\n")
    assert inst.card(s[0])["state"] == inst.card(s[1])["state"] == "voided"


def test_card_void_answered_n_changes_nothing(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    before = inst.snapshot()
    result = inst.run("card", "void", "--serial", s[0], "--reason", "water damage", input="n\n")
    assert result.exit_code == 1 and not escaped(result), describe(result)
    assert "Aborted!" in result.output and "Traceback" not in result.output
    assert "cards voided" not in result.output
    assert inst.snapshot() == before
    assert inst.card(s[0])["state"] == "in_stock"


def test_freeze_and_unfreeze_return_cards_to_their_prior_state(inst: Installation) -> None:
    s = inst.checked_batch("B1", 30)  # all produced
    inst.ok("stock", "intake", "--batch", "B1", "--box", 1)  # box 1 in stock, the rest produced

    assert inst.ok("card", "freeze", "--batch", "B1", "--box", 1, "--reason", "box reported stolen") == "10 cards frozen\n"
    assert inst.ok("card", "freeze", "--serial", s[15], "--reason", "reported lost") == "1 cards frozen\n"
    shown = inst.card(s[0])
    assert (shown["state"], shown["frozen_from"]) == ("frozen", "in_stock")
    shown = inst.card(s[15])
    assert (shown["state"], shown["frozen_from"]) == ("frozen", "produced")
    assert inst.states() == {"frozen": 11, "produced": 19}

    assert inst.ok("card", "unfreeze", "--batch", "B1", "--box", 1, "--reason", "box found") == "10 cards unfrozen\n"
    assert inst.ok("card", "unfreeze", "--serial", s[15], "--reason", "found") == "1 cards unfrozen\n"
    assert (inst.card(s[0])["state"], inst.card(s[0])["frozen_from"]) == ("in_stock", "")
    assert (inst.card(s[15])["state"], inst.card(s[15])["frozen_from"]) == ("produced", "")
    assert inst.states() == {"in_stock": 10, "produced": 20}
    actions = [e["action"] for e in inst.json("audit", "log", "--limit", 4)]
    assert actions == ["card.unfreeze", "card.unfreeze", "card.freeze", "card.freeze"]

    before = inst.snapshot()
    assert_one_line_error(inst.run("card", "unfreeze", "--serial", s[0], "--reason", "x"), "cannot be unfrozen")
    assert inst.snapshot() == before


def test_card_show(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    table = inst.ok("card", "show", s[12], user="bob").splitlines()
    assert table[0].split() == ["serial", "batch_no", "box", "face_value", "expiry", "state", "frozen_from", "hall",
                                "issue_request"]
    assert table[1].split() == [s[12], "B1", "2", "50.00", FAR_EXPIRY, "in_stock"]
    assert inst.card(s[12]) == {"serial": s[12], "batch_no": "B1", "box": 2, "face_value": 5000, "expiry": FAR_EXPIRY,
                                "state": "in_stock", "frozen_from": "", "hall": "", "issue_request": ""}
    assert_one_line_error(inst.run("card", "show", make_serial(parse_serial(s[-1]) + 1)), "does not exist")


def test_issue_requests_file_approve_collect_reject_cancel_and_list(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 30)

    r1 = inst.file_request(12)
    assert inst.ok("request", "approve", r1, "--comment", "stock is sufficient", user="bob") == f"issue request {r1} approved\n"
    stdout = inst.ok("request", "collect", r1)
    assert stdout.splitlines()[1].split() == [s[0], s[11], "12"]
    assert stdout.endswith(f"12 cards issued for request {r1}\n")
    shown = inst.card(s[0])
    assert (shown["state"], shown["hall"], shown["issue_request"]) == ("issued", "H01", r1)
    assert inst.card(s[12])["state"] == "in_stock"
    # An issued card reported lost is frozen, and unfrozen back to issued at its hall.
    inst.ok("card", "freeze", "--serial", s[0], "--reason", "reported lost by the hall")
    assert (inst.card(s[0])["state"], inst.card(s[0])["frozen_from"]) == ("frozen", "issued")
    inst.ok("card", "unfreeze", "--serial", s[0], "--reason", "found")
    shown = inst.card(s[0])
    assert (shown["state"], shown["hall"], shown["frozen_from"]) == ("issued", "H01", "")

    r2 = inst.file_request(5)
    assert inst.ok("request", "reject", r2, "--comment", "not this week", user="bob") == f"issue request {r2} rejected\n"
    r3 = inst.file_request(5)
    assert inst.ok("request", "cancel", r3, "--reason", "filed twice") == f"issue request {r3} cancelled\n"
    r4 = inst.file_request(3)
    inst.ok("request", "approve", r4, "--comment", "ok", user="bob")
    assert inst.ok("request", "cancel", r4, "--reason", "hall closed") == f"issue request {r4} cancelled\n"
    r5 = inst.file_request(4)

    rows = {r["id"]: r for r in inst.json("request", "list")}
    assert {i: r["status"] for i, r in rows.items()} == {
        r1: "collected", r2: "rejected", r3: "cancelled", r4: "cancelled", r5: "pending",
    }
    assert (rows[r1]["requested_by"], rows[r1]["decided_by"], rows[r1]["collected_by"]) == ("alice", "bob", "alice")
    assert (rows[r1]["face_value"], rows[r1]["quantity"], rows[r1]["hall"]) == (5000, 12, "H01")
    assert rows[r2]["comment"] == "not this week"
    assert [r["id"] for r in inst.json("request", "list", "--status", "cancelled")] == [r3, r4]
    table = inst.ok("request", "list", "--status", "pending", user="bob").splitlines()
    assert table[0].split() == ["id", "face_value", "quantity", "hall", "status", "requested_by", "decided_by", "comment"]
    assert table[1].split() == [str(r5), "50.00", "4", "H01", "pending", "alice"]
    assert len(table) == 2
    assert inst.json("request", "list", "--status", "approved") == []
    assert inst.ok("request", "list", "--status", "approved") == "(none)\n"

    before = inst.snapshot()
    assert_one_line_error(inst.run("request", "collect", r2), "is rejected")
    assert_one_line_error(inst.run("request", "collect", r5), "is pending")
    assert_one_line_error(inst.run("request", "approve", r1, "--comment", "again", user="bob"), "not pending")
    assert_one_line_error(inst.run("request", "cancel", r1, "--reason", "too late"), "cannot be cancelled")
    assert_one_line_error(inst.run("request", "approve", 999, "--comment", "ok", user="bob"), "999 does not exist")
    assert_one_line_error(inst.run("request", "file", "--face-value", "50", "--quantity", 100, "--hall", "H01",
                                   "--reason", "x"), "only 18 usable cards of 50.00 yuan")
    assert_one_line_error(inst.run("request", "file", "--face-value", "20", "--quantity", 1, "--hall", "H01",
                                   "--reason", "x"), "only 0 usable cards of 20.00 yuan")
    assert_one_line_error(inst.run("request", "file", "--face-value", "50", "--quantity", 1, "--hall", "H99",
                                   "--reason", "x"), "hall 'H99' does not exist")
    assert_one_line_error(inst.run("request", "file", "--face-value", "50", "--quantity", 1, "--hall", "H01",
                                   "--reason", "  "), "needs a reason")
    assert_one_line_error(inst.run("request", "reject", r5, "--comment", " ", user="bob"), "needs a comment")
    assert_one_line_error(inst.run("request", "collect", r5, user="bob"), "may not manage cards")
    assert inst.snapshot() == before


def test_collect_json_and_collect_picks_earliest_expiry_first(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    soon = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    out = inst.workdir / "B2.newcard"
    inst.ok("batch", "create", "B2", "--face-value", "50", "--quantity", 20, "--box-size", 10, "--expiry", soon,
            "--factory", "F1", "--out", out)
    inst.ok("batch", "check", "B2", inst.produce("B2"))
    inst.ok("stock", "intake", "--batch", "B2")
    t = inst.serials("B2")
    rid = inst.file_request(15)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    issued = json.loads(inst.ok("request", "collect", rid, "--json"))
    assert issued == [{"first_serial": t[0], "last_serial": t[14], "cards": 15}]


def test_collect_is_refused_when_stock_fell_short_after_approval(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    rid = inst.file_request(15)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("card", "void", "--from", s[0], "--to", s[9], "--reason", "water damage", "--yes")
    before = inst.snapshot()
    assert_one_line_error(inst.run("request", "collect", rid), "only 10 usable cards of 50.00 yuan", "15 approved")
    assert inst.snapshot() == before
    assert inst.json("request", "list")[0]["status"] == "approved"


def test_reports_by_every_dimension(inst: Installation) -> None:
    inst.stocked_batch("B1", 30, face_value="50")
    inst.stocked_batch("B2", 20, face_value="100")
    rid = inst.file_request(12)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("request", "collect", rid)
    inst.ok("card", "void", "--serial", inst.serials("B2")[0], "--reason", "torn", "--yes")

    by_face = {r["face_value"]: r for r in inst.json("report", "stock", "--by", "face-value")}
    assert (by_face[5000]["in_stock"], by_face[5000]["issued"], by_face[5000]["total"]) == (18, 12, 30)
    assert (by_face[10000]["in_stock"], by_face[10000]["voided"], by_face[10000]["expired"]) == (19, 1, 0)
    table = inst.ok("report", "stock", user="carol")  # --by face-value is the default
    assert "50.00" in table and "100.00" in table

    by_batch = {r["batch_no"]: r for r in inst.json("report", "stock", "--by", "batch")}
    assert (by_batch["B1"]["issued"], by_batch["B2"]["voided"]) == (12, 1)
    assert "B2" in inst.ok("report", "stock", "--by", "batch", user="carol")

    by_state = inst.json("report", "stock", "--by", "state")
    assert by_state == [{"state": st, "cards": n} for st, n in [
        ("ordered", 0), ("produced", 0), ("in_stock", 37), ("issued", 12), ("redeemed", 0), ("voided", 1), ("frozen", 0)]]
    assert "in_stock  37" in inst.ok("report", "stock", "--by", "state", user="carol")

    by_hall = {r["hall"]: r for r in inst.json("report", "stock", "--by", "hall")}
    assert (by_hall["H01"]["issued"], by_hall["H01"]["total"]) == (12, 12)
    assert (by_hall["(none)"]["in_stock"], by_hall["(none)"]["voided"]) == (37, 1)
    assert "H01" in inst.ok("report", "stock", "--by", "hall", user="bob")

    batches = {b["batch_no"]: b for b in inst.json("report", "batches")}
    assert (batches["B1"]["quantity"], batches["B1"]["issued"], batches["B1"]["in_stock"]) == (30, 12, 18)
    assert (batches["B2"]["face_value"], batches["B2"]["voided"], batches["B2"]["expired"]) == (10000, 1, False)
    assert "B2" in inst.ok("report", "batches", user="carol")

    (issue,) = inst.json("report", "issues")
    assert (issue["id"], issue["status"], issue["quantity"], issue["hall"], issue["decided_by"]) == (
        rid, "collected", 12, "H01", "bob")
    assert "collected" in inst.ok("report", "issues", user="carol")

    assert_one_line_error(inst.run("report", "stock", "--by", "colour"), "'colour'", code=2)


def test_audit_log_and_verify(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    entries = inst.json("audit", "log", "--limit", "10000")
    actions = [e["action"] for e in reversed(entries)]
    assert actions == ["install.init", "operator.add", "operator.add", "factory.register", "hall.add",
                       "batch.create", "batch.check", "card.intake"]
    assert [e["seq"] for e in entries] == list(range(len(entries), 0, -1))
    assert entries[-1]["operator"] == "alice"
    assert [e["action"] for e in inst.json("audit", "log", "--limit", 2)] == ["card.intake", "batch.check"]
    (check,) = inst.json("audit", "log", "--action", "batch.check")
    assert check["after"]["matched"] == 20
    table = inst.ok("audit", "log", user="bob").splitlines()
    assert table[0].split() == ["seq", "at", "operator", "action", "object", "before", "after"]
    assert len(table) == 1 + len(entries)

    stdout = inst.ok("audit", "verify", user="carol")
    assert re.fullmatch(rf"operation log intact: {len(entries)} entries, head {len(entries)}:[0-9a-f]{{16}}\n", stdout)
    assert inst.ok("audit", "verify", user="alice").startswith("operation log intact")
    assert_one_line_error(inst.run("audit", "verify", user="bob"), "may not verify the operation log")


def test_audit_verify_exits_3_when_the_log_was_tampered_with(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    (intake,) = inst.json("audit", "log", "--action", "card.intake")
    engine = make_engine(inst.db)
    with engine.begin() as conn:
        conn.execute(text("UPDATE operation_log SET operator = 'mallory' WHERE seq = :seq"), {"seq": intake["seq"]})
    engine.dispose()
    stdout = inst.ok("audit", "verify", user="carol", code=3)
    assert stdout == f"TAMPERED: entry {intake['seq']} (card.intake) has been altered\n"


# === 2. --json on every listing command ============================================


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


# === 3. --help =======================================================================


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


def test_main_commands_are_all_known() -> None:
    assert MAIN_COMMANDS <= set(command_paths())


@pytest.mark.parametrize("path", [(), *command_paths()], ids=lambda p: " ".join(p) or "cli")
def test_help_of_every_command(path: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        stdout = assert_ok(invoke(*path, flag))
        assert stdout.startswith("Usage: "), stdout
    if path in MAIN_COMMANDS:
        assert "Example" in stdout, stdout


# === 4. bad input: one line, non-zero exit, nothing changed ==========================


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


def test_only_finance_other_than_the_requester_can_approve(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    inst.ok("operator", "add", "dave", "--role", "admin", env={"CARDS_NEW_PASSWORD": PASSWORDS["dave"]})
    rid = inst.file_request(5, user="alice")
    before = inst.snapshot()
    assert_one_line_error(inst.run("request", "approve", rid, "--comment", "self-approval", user="alice"),
                          "operator 'alice' (admin) may not approve or reject issue requests")
    assert_one_line_error(inst.run("request", "approve", rid, "--comment", "colleague", user="dave"),
                          "operator 'dave' (admin) may not approve")
    assert_one_line_error(inst.run("request", "reject", rid, "--comment", "no", user="carol"),
                          "operator 'carol' (auditor) may not approve")
    assert inst.snapshot() == before
    assert inst.ok("request", "approve", rid, "--comment", "stock is sufficient", user="bob") == (
        f"issue request {rid} approved\n")
    (row,) = inst.json("request", "list")
    assert (row["status"], row["requested_by"], row["decided_by"]) == ("approved", "alice", "bob")


def test_wrong_password_unknown_and_missing_operator_are_refused(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "list", password="not-alices-password"),
                          "operator 'alice': unknown name or wrong password")
    assert_one_line_error(inst.run("card", "void", "--batch", "B1", "--reason", "x", "--yes", password="wrong-wrong"),
                          "unknown name or wrong password")
    assert_one_line_error(inst.run("batch", "list", user="mallory", password="mallory-secret-1"),
                          "operator 'mallory': unknown name or wrong password")
    assert_one_line_error(inst.run("batch", "list", user=None), "no operator given")
    # Prompted (no CARDS_PASSWORD) and the wrong password typed.
    result = invoke("--db", inst.db, "--key-dir", inst.key_dir, "-u", "alice", "batch", "list", input="guess-guess\n")
    assert result.exit_code == 1 and "wrong password" in result.stderr, describe(result)
    assert "Traceback" not in result.output
    assert inst.snapshot() == before


def test_unknown_batch_is_refused(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    produced = inst.produce("B1")
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B9", produced), "batch 'B9' does not exist")
    assert_one_line_error(inst.run("stock", "intake", "--batch", "B9"), "batch 'B9' does not exist")
    assert_one_line_error(inst.run("card", "freeze", "--batch", "B9", "--reason", "x"), "batch 'B9' does not exist")
    assert_one_line_error(inst.run("stock", "count", "--batch", "B9", "--counted", 1), "batch 'B9' does not exist")
    assert inst.snapshot() == before
    inst.ok("batch", "check", "B1", produced)  # the file is still good for its own batch


def test_a_range_across_cards_in_different_states_changes_nothing(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 30)
    inst.ok("card", "void", "--serial", s[15], "--reason", "torn", "--yes")
    before = inst.snapshot()
    assert_one_line_error(inst.run("card", "freeze", "--from", s[10], "--to", s[19], "--reason", "box stolen"),
                          f"serials {s[10]}-{s[19]}", "cannot be frozen because 1 voided", "nothing changed")
    assert inst.snapshot() == before
    assert [inst.card(x)["state"] for x in (s[10], s[14], s[16], s[19])] == ["in_stock"] * 4
    assert inst.ok("card", "freeze", "--from", s[10], "--to", s[19], "--reason", "box stolen",
                   "--skip-voided") == "9 cards frozen\n"


def test_a_range_across_two_batches_changes_nothing(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    t = inst.stocked_batch("B2", 20)
    before = inst.snapshot()
    assert_one_line_error(inst.run("card", "freeze", "--from", s[15], "--to", t[4], "--reason", "x"),
                          "crosses batches", f"split it at {s[-1]}")
    assert inst.snapshot() == before


def test_a_post_production_file_for_another_batch_is_rejected(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    inst.create_batch("B2", 20)
    produced_b2 = inst.produce("B2")
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", produced_b2), "is for batch 'B2', not B1", "nothing changed")
    assert inst.snapshot() == before
    inst.ok("batch", "check", "B2", produced_b2)  # not recorded as imported by the refused check
    assert inst.batch_row("B1")["ordered"] == 20


def test_a_file_signed_by_another_key_is_rejected(inst: Installation, other_factory_keys: Path) -> None:
    new_card = inst.create_batch("B1", 20)
    system_pub = load_public_key(inst.key_dir / "system.pub.pem")
    with sealed_files.open_sealed(new_card, kind="new-card", sender=system_pub,
                                  recipient=load_private_key(inst.factory_keys / "factory.pem")) as sealed:
        cards = [line.rstrip(b"\n").split(b",") for line in sealed.rows()]
        digest = sealed.digest
    # Exactly what the factory would return, but signed with a key that is not F1's.
    forged = inst.workdir / "B1-forged.produced"
    sealed_files.write_sealed(
        forged, kind="post-production",
        header={"batch_no": "B1", "face_value": 5000, "quantity": 20, "factory": "F1", "source_digest": digest},
        rows=(b"%s,%s,5000,%s,ok\n" % (serial, box, pin) for serial, box, pin in cards),
        recipient=system_pub, signer=load_private_key(other_factory_keys / "factory.pem"),
    )
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", forged), "B1-forged.produced is not signed by")
    assert inst.snapshot() == before

    # A whole post-production run by a factory holding the other key cannot even open the new-card file.
    result = invoke("factory-sim", "produce", new_card, "--out", inst.workdir / "x.produced",
                    "--factory-key", other_factory_keys / "factory.pem", "--system-key", inst.key_dir / "system.pub.pem")
    assert_one_line_error(result, "B1.newcard")
    assert not (inst.workdir / "x.produced").exists()


def test_garbage_empty_truncated_and_altered_files_are_rejected(inst: Installation) -> None:
    inst.create_batch("B1", 30)
    real = inst.produce("B1")
    data = real.read_bytes()
    middle = len(data) // 2
    bad_files = {
        "garbage": (os.urandom(4096), "is not a sealed card file"),
        "empty": (b"", "is empty"),
        "truncated": (data[:middle], "truncated"),
        "cut-in-header": (data[:20], "is truncated"),
        "bit-flipped": (data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:], "is damaged or truncated"),
    }
    before = inst.snapshot()
    r = Refusals()
    for name, (content, message) in bad_files.items():
        bad = inst.workdir / f"B1-{name}.produced"
        bad.write_bytes(content)
        r.check(name, inst.run("batch", "check", "B1", bad), f"B1-{name}.produced", message)
    assert inst.snapshot() == before
    r.assert_all_clean()
    inst.ok("batch", "check", "B1", real)  # the real file is still accepted
    assert inst.batch_row("B1")["produced"] == 30


def test_a_missing_post_production_file_is_rejected(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", inst.workdir / "nowhere.produced"), "does not exist")
    assert_one_line_error(inst.run("batch", "check", "B1", inst.workdir), "is a directory")
    assert inst.snapshot() == before


def test_the_same_file_cannot_be_imported_twice(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    produced = inst.produce("B1")
    inst.ok("batch", "check", "B1", produced)
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", produced), "was already imported", "nothing changed")
    copy = inst.workdir / "renamed.produced"
    shutil.copy(produced, copy)
    assert_one_line_error(inst.run("batch", "check", "B1", copy), "was already imported")
    assert inst.snapshot() == before


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
        ("alice", ("operator", "add", "erin", "--role", "admin"), {"env": {"CARDS_NEW_PASSWORD": "erin-secret-1"}}),
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


def test_a_serial_with_a_wrong_check_digit_is_refused(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    bad = bad_check_digit(s[5])
    before = inst.snapshot()
    assert_one_line_error(inst.run("card", "show", bad), f"serial {bad} has a wrong check digit")
    assert_one_line_error(inst.run("card", "void", "--serial", bad, "--reason", "x", "--yes"), "wrong check digit")
    assert_one_line_error(inst.run("card", "freeze", "--from", s[0], "--to", bad, "--reason", "x"), "wrong check digit")
    assert_one_line_error(inst.run("stock", "count", "--from", bad, "--to", s[9], "--counted", 5), "wrong check digit")
    assert_one_line_error(inst.run("card", "show", "12345"), "is not 12 digits")
    assert inst.snapshot() == before


def test_a_malformed_money_amount_is_a_usage_error(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    before = inst.snapshot()
    out = inst.workdir / "B2.newcard"
    for amount in ("12.345", "abc", "-5", "0.001", "NaN", "Infinity", "1e400"):
        line = assert_one_line_error(
            inst.run("batch", "create", "B2", "--face-value", amount, "--quantity", 10, "--expiry", FAR_EXPIRY,
                     "--factory", "F1", "--out", out), "--face-value", code=2)
        assert amount in line
        assert_one_line_error(inst.run("request", "file", "--face-value", amount, "--quantity", 1, "--hall", "H01",
                                       "--reason", "x"), "--face-value", code=2)
    assert not out.exists()
    assert inst.snapshot() == before


def test_an_expiry_in_the_past_is_refused(inst: Installation) -> None:
    before = inst.snapshot()
    out = inst.workdir / "B1.newcard"
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    assert_one_line_error(inst.run("batch", "create", "B1", "--face-value", "50", "--quantity", 20, "--expiry", yesterday,
                                   "--factory", "F1", "--out", out), f"expiry {yesterday} is not in the future")
    assert not out.exists()
    assert inst.snapshot() == before


def test_a_box_number_out_of_range_is_refused(inst: Installation) -> None:
    inst.checked_batch("B1", 25)
    before = inst.snapshot()
    assert_one_line_error(inst.run("stock", "intake", "--batch", "B1", "--box", 4), "batch B1 has boxes 1-3, not 4")
    assert_one_line_error(inst.run("stock", "intake", "--batch", "B1", "--box", 0), "has boxes 1-3, not 0")
    assert_one_line_error(inst.run("card", "freeze", "--batch", "B1", "--box", 99, "--reason", "x"), "not 99")
    assert_one_line_error(inst.run("stock", "count", "--batch", "B1", "--box", 4, "--counted", 0), "not 4")
    assert_one_line_error(inst.run("stock", "intake", "--box", 2), "--box needs --batch", code=2)
    assert_one_line_error(inst.run("stock", "intake", "--batch", "B1", "--box", "two"), "--box", code=2)
    assert inst.snapshot() == before


def test_a_missing_reason_is_refused(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    rid = inst.file_request(2)
    before = inst.snapshot()
    for change in ("void", "freeze", "unfreeze"):
        assert_one_line_error(inst.run("card", change, "--serial", s[0], "--yes"), "--reason", code=2)
        assert_one_line_error(inst.run("card", change, "--serial", s[0], "--reason", "   ", "--yes"),
                              "a reason is required")
    assert_one_line_error(inst.run("request", "cancel", rid), "--reason", code=2)
    assert_one_line_error(inst.run("request", "cancel", rid, "--reason", " "), "needs a reason")
    assert_one_line_error(inst.run("request", "file", "--face-value", "50", "--quantity", 1, "--hall", "H01"),
                          "--reason", code=2)
    assert_one_line_error(inst.run("request", "approve", rid, user="bob"), "--comment", code=2)
    assert inst.snapshot() == before


def test_contradictory_card_selections_are_usage_errors(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    before = inst.snapshot()
    assert_one_line_error(inst.run("card", "freeze", "--serial", s[0], "--batch", "B1", "--reason", "x"),
                          "--serial cannot be combined", code=2)
    assert_one_line_error(inst.run("card", "freeze", "--from", s[0], "--reason", "x"), "needs both")
    assert_one_line_error(inst.run("card", "freeze", "--from", s[5], "--to", s[0], "--reason", "x"), "runs backwards")
    assert_one_line_error(inst.run("card", "freeze", "--reason", "x"), "choose cards")
    assert inst.snapshot() == before


# === 5. the PIN never leaves the new-card file ======================================


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


# === 6. replay: call scripts against the hotline =====================================
#
# The refusals need no Asterisk: each is one line and exit 1 (2 for usage) before a
# single call is placed.  A replay through the real Asterisk sandbox, which passes and
# then fails a step (exit 3), is in tests/e2e/test_hotline.py, beside the hotline it calls.

CALLS = Path(__file__).resolve().parent / "calls"
SECRET_PIN = "918273645546372819"


def test_replay_refuses_bad_input_in_one_line_before_any_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    silent = free_udp_port()  # nothing listens there
    bad = tmp_path / "bad.call"
    bad.write_text("# a typo on line 2\nexpect prompt=welcome\nsend 1x\nexpect bye\n", encoding="utf-8")
    good = CALLS / "silence.call"
    one_card = [CALLS / "recharge-one-card.call", "--var", "CALLER=13800000001", "--var", "ACCOUNT=3100000001",
                "--var", "AMOUNT=5000"]

    def replay(*args: Any, input: str | None = None) -> Result:
        return invoke("replay", *args, "--port", silent, "--workdir", work, input=input)

    r = Refusals()
    r.check("missing script", replay(tmp_path / "nowhere.call"), "nowhere.call: cannot read the script")
    r.check("a folder", replay(tmp_path), "cannot read the script")
    r.check("malformed script", replay(good, bad, "--var", "CALLER=1"), "bad.call:3: 'x' is not a phone key")
    r.check("variable without a value", replay(good), "${CALLER} has no value (give it with --var CALLER=...)")
    r.check("bad value", replay(*one_card, "--var", "ACCOUNT=31000000O1", "--var", "PIN=1"),
            "${ACCOUNT} is sent as keys")
    r.check("missing injection file", replay(good, "--inject", tmp_path / "rows.csv"), "cannot read the injection file")
    r.check("missing audio", replay(good, "--var", "CALLER=1", "--audio", tmp_path / "x.pcap"), "no such audio file")
    r.check("nothing listening", replay(good, "--var", "CALLER=13800000001"),
            f"nothing listens for SIP on udp 127.0.0.1:{silent}")
    r.check("unknown host", invoke("replay", good, "--var", "CALLER=1", "--host", "no-such-host.invalid"),
            "cannot reach no-such-host.invalid")
    r.check("no PIN on standard input", replay(*one_card, "--secret", "PIN", input=""),
            "standard input ended before the value of PIN")
    r.check("empty PIN", replay(*one_card, "--secret", "PIN", input="\n"), "the value of PIN is empty")
    r.check("PIN given twice", replay(*one_card, "--var", "PIN=1", "--secret", "PIN", input=f"{SECRET_PIN}\n"),
            "PIN is given twice")
    monkeypatch.setattr(replay_tool, "SIPP", "no-such-sipp")
    r.check("no SIPp", replay(good, "--var", "CALLER=1"), "no-such-sipp is not installed")
    monkeypatch.undo()
    r.check("no script", invoke("replay"), "Missing argument", code=2)
    r.check("--var without =", replay(good, "--var", "CALLER"), "expected NAME=VALUE", code=2)
    r.check("port 0", invoke("replay", good, "--port", 0), "--port", code=2)
    r.check("no calls", replay(good, "--concurrent", 0), "--concurrent", code=2)
    r.assert_all_clean()
    assert not work.exists(), "nothing was phoned, so SIPp wrote nothing"


def test_replay_never_shows_a_pin_read_from_standard_input(tmp_path: Path) -> None:
    silent = free_udp_port()
    result = invoke("replay", CALLS / "recharge-one-card.call", "--var", "CALLER=13800000001", "--var",
                    "ACCOUNT=3100000001", "--var", "AMOUNT=5000", "--secret", "PIN", "--port", silent,
                    input=f"{SECRET_PIN}\n")
    assert_one_line_error(result, "nothing listens for SIP")
    assert SECRET_PIN not in result.output
