"""Running ``cli.py`` in-process as an operator would, judging what it printed, and an installation made through it.

Every command runs as an operator would type it: ``--db`` and ``--key-dir``
name the installation, ``-u`` the operator, and the password comes from
``CARDS_PASSWORD`` in the environment.  ``Installation`` makes a fresh one
through the CLI itself (``init``, operators added through requests, ``factory
register``, ``hall add``) on whichever database it is given.

Exit codes under test: 0 done, 1 refused, 2 usage error, 3 discrepancies.
``assert_one_line_error`` checks a refusal is one ``Error:`` line with no
traceback; ``Installation.snapshot`` (stock by state, the batch list, the
request list and the whole operation log) shows it changed nothing.
"""

# test-case-name: tests.cli


import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from cardmgmt.serials import make_serial, parse_serial
from cli import cli
from testkit.install import PASSWORDS

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


def run_init(database_url: str, key_dir: Path, admin: str, password: str, second: str | None = None) -> Result:
    """``cli.py init`` with the administrators' passwords from the environment (``second`` from PASSWORDS)."""
    admins = ["--admin", admin] + (["--admin", second] if second else [])
    env = {"CARDS_ADMIN_PASSWORD": password, **({"CARDS_SECOND_ADMIN_PASSWORD": PASSWORDS[second]} if second else {})}
    return invoke("--db", database_url, "--key-dir", key_dir, "init", *admins, env=env)


def temporary(name: str) -> str:
    """The first password an approver types for ``name``, before they choose their own."""
    return f"{name}-first-pw-1"


def add_operator(i: "Installation", name: str, role: str, *, by: str = "alice", approver: str = "dave") -> int:
    """``name`` added as ``role`` as the CLI does it: requested, approved by a second administrator, password chosen."""
    filed = i.ok("operator", "request", "add", name, "--role", role, "--reason", "new colleague", user=by)
    m = re.fullmatch(rf"operator request (\d+) filed: add {name} as {role}; waiting for another administrator's approval\n", filed)
    assert m, filed
    i.ok("operator", "request", "approve", m.group(1), "--comment", "identity checked", user=approver,
         env={"CARDS_NEW_PASSWORD": temporary(name)})
    i.ok("operator", "password", user=name, password=temporary(name), env={"CARDS_NEW_PASSWORD": PASSWORDS[name]})
    return int(m.group(1))


def keygen(directory: Path) -> Path:
    stdout = assert_ok(invoke("factory-sim", "keygen", directory))
    assert stdout == f"factory keys in {directory}\n"
    assert (directory / "factory.pem").stat().st_mode & 0o077 == 0
    return directory


def bad_check_digit(serial: str) -> str:
    return serial[:-1] + str((int(serial[-1]) + 1) % 10)
