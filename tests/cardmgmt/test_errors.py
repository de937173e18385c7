"""The one table of what each kind of CardError becomes: an HTTP status for the servers, an exit code for the CLI.

Every subclass of ``CardError``, wherever it is declared, must state both
(found by walking ``__subclasses__``, after importing every module that
declares one); one kind is then driven through the real API and the real
CLI to see each use the table.
"""

import importlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cardmgmt import errors
from cardmgmt.db import Database
from cardmgmt.errors import (
    CardError,
    ConflictError,
    FileRejected,
    InvalidInput,
    KeyFileError,
    NotFound,
    PermissionDenied,
)

# Every module that declares a CardError kind; a kind declared elsewhere is caught by the grep below.
DECLARING_MODULES = ("cardmgmt.errors", "cardmgmt.nonces", "recharge_server.service")
ROOT = Path(__file__).resolve().parents[2]


def all_kinds() -> list[type[CardError]]:
    for name in DECLARING_MODULES:
        importlib.import_module(name)
    return errors.kinds()


def test_every_declaring_module_is_imported() -> None:
    """A new ``class X(SomeCardError)`` in a module not listed above would escape the table's check."""
    names = {k.__name__ for k in all_kinds()}
    for path in [*ROOT.glob("cardmgmt/*.py"), *ROOT.glob("marketing_iface/*.py"), *ROOT.glob("recharge_server/*.py")]:
        for line in path.read_text().splitlines():
            if line.startswith("class ") and line.rstrip().endswith("):"):
                name, _, base = line[len("class "):].partition("(")
                if base.rstrip("):") in names:
                    assert name in names, f"{path.name}: {name} is not reached by DECLARING_MODULES"


@pytest.mark.parametrize("kind", all_kinds(), ids=lambda k: k.__name__)
def test_every_kind_has_its_own_entry(kind: type[CardError]) -> None:
    assert "http_status" in vars(kind) and "exit_code" in vars(kind), f"{kind.__name__} must state its HTTP status and exit code"
    assert "code" in vars(kind), f"{kind.__name__} needs its own code"
    assert 400 <= kind.http_status < 600
    # A refusal is never a crash: 500 is kept for bugs.
    assert kind.http_status != 500
    # 0 is success, 2 click's usage error and 3 "done, with discrepancies".
    assert kind.exit_code not in (0, 2, 3)


def test_codes_are_unique() -> None:
    codes = [k.code for k in all_kinds()]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("kind", [InvalidInput, NotFound, PermissionDenied, ConflictError, FileRejected, KeyFileError],
                         ids=lambda k: k.__name__)
def test_the_api_answers_each_refusal_with_the_tables_status(
    kind: type[CardError], live_reactor: Any, sqlite_db: Database, api_key: bytes
) -> None:
    """Through the real RechargeAPI: a recharge core that refuses with a kind gets that kind's status and code."""
    from testkit.live_api import COMMIT, StubRecharge, post, serve_api

    with serve_api(live_reactor, sqlite_db, StubRecharge(raise_=kind("refused for the test")), api_key) as live:
        status, answer = post(live, api_key, "/v1/commit", COMMIT)
    assert status == kind.http_status
    if kind.http_status < 500:
        assert answer == {"error": kind.code, "message": "refused for the test"}
    else:  # not fit to answer now: the client tries the other server
        assert answer == {"outcome": "service_unavailable"}


def test_the_cli_exits_with_the_tables_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real CLI: a command whose service refuses prints one line and exits with the kind's code."""
    import cli as cli_module

    class Refused(InvalidInput):
        code = "refused_for_test"
        http_status = 400
        exit_code = 4

    def refuse(*_args: object) -> None:
        raise Refused("no keys for the test")

    monkeypatch.setattr(cli_module.install, "create_keyring", refuse)
    result = CliRunner().invoke(cli_module.cli, ["--key-dir", "/nonexistent", "keys", "init"])
    assert result.exit_code == 4
    assert result.stderr.strip() == "Error: no keys for the test"
