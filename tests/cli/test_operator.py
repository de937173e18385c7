"""``operator``: adding, listing and disabling operators; signing in.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

from testkit.install import PASSWORDS
from tests.cli.conftest import (
    Installation,
    assert_ok,
    assert_one_line_error,
    describe,
    invoke,
)


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



def test_operator_add_prompts_for_the_new_password_twice(inst: Installation) -> None:
    result = inst.run("operator", "add", "dave", "--role", "admin", input="dave-secret-1\ndave-secret-1\n")
    assert "operator dave added as admin" in assert_ok(result)
    assert inst.ok("operator", "list", user="dave")



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


def test_no_password_and_no_terminal_is_one_line(inst: Installation) -> None:
    result = invoke("--db", inst.db, "--key-dir", inst.key_dir, "-u", "alice", "batch", "list", input="")
    line = assert_one_line_error(result, "no password for alice on standard input", "set CARDS_PASSWORD")
    assert "echoed" not in result.output and "Aborted" not in result.output and "Warning" not in result.stderr, line

