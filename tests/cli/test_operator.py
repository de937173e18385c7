"""``operator``: requests to add operators, change roles and re-enable; passwords; lockouts; signing in.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

from testkit.commandline import (
    Installation,
    assert_ok,
    assert_one_line_error,
    describe,
    invoke,
    temporary,
)

REFUSED = "unknown name, wrong password or locked after too many wrong passwords"


def test_operator_requests_list_and_disable(inst: Installation) -> None:
    table = inst.ok("operator", "list", user="carol")
    assert table.splitlines()[0].split() == ["name", "role", "status", "created_by"]
    assert {tuple(line.split()) for line in table.splitlines()[1:]} == {
        ("alice", "admin", "active"), ("dave", "admin", "active"),
        ("bob", "finance", "active", "alice"), ("carol", "auditor", "active", "alice"),
    }
    assert inst.ok("operator", "add", "erin", "--role", "admin", "--reason", "new colleague") == (
        "operator request 3 filed: add erin as admin; waiting for another administrator's approval\n")
    assert {o["name"]: o["status"] for o in inst.json("operator", "list")}["erin"] == "pending"
    assert_one_line_error(inst.run("operator", "list", user="erin", password="anything-1"), REFUSED)
    (row,) = inst.json("operator", "request", "list", "--status", "pending")
    assert (row["id"], row["kind"], row["operator"], row["requested_by"]) == (3, "add", "erin", "alice")

    before = inst.snapshot()
    assert_one_line_error(inst.run("operator", "request", "approve", 3, "--comment", "mine",
                                   env={"CARDS_NEW_PASSWORD": "erin-first-1"}), "filed operator request 3 and cannot approve")
    assert_one_line_error(inst.run("operator", "request", "approve", 3, "--comment", "x", user="bob"), "may not manage operators")
    assert_one_line_error(inst.run("operator", "request", "add", "bob", "--role", "admin", "--reason", "x"), "already exists")
    assert_one_line_error(inst.run("operator", "request", "add", "x y", "--role", "admin", "--reason", "x"), "operator name")
    assert_one_line_error(inst.run("operator", "request", "add", "frank", "--role", "boss", "--reason", "x"), "'boss'", code=2)
    assert_one_line_error(inst.run("operator", "request", "approve", 99, "--comment", "x", user="dave"), "does not exist")
    assert_one_line_error(inst.run("operator", "request", "approve", 3, "--comment", "x", user="dave",
                                   env={"CARDS_NEW_PASSWORD": "short"}), "at least 8 characters")
    assert_one_line_error(inst.run("operator", "disable", "alice"), "cannot disable their own account")
    assert_one_line_error(inst.run("operator", "disable", "nobody"), "operator 'nobody' does not exist")
    assert inst.snapshot() == before

    # dave types erin's first password at a prompt; erin must choose her own before anything else.
    result = inst.run("operator", "request", "approve", 3, "--comment", "met her", user="dave", input="erin-first-1\nerin-first-1\n")
    assert "operator request 3 approved: erin added as admin; they must choose a new password" in assert_ok(result)
    assert "erin-first-1" not in result.output
    assert_one_line_error(inst.run("operator", "list", user="erin", password="erin-first-1"), "must choose a new password first")
    assert inst.ok("operator", "password", user="erin", password="erin-first-1", env={"CARDS_NEW_PASSWORD": "erin-own-pw-1"}) == (
        "password of erin changed\n")
    assert inst.ok("operator", "list", user="erin", password="erin-own-pw-1")

    # erin, asked for by alice, cannot approve alice's next request; dave rejects it.
    inst.ok("operator", "request", "add", "frank", "--role", "finance", "--reason", "x")
    assert_one_line_error(inst.run("operator", "request", "approve", 4, "--comment", "ok", user="erin", password="erin-own-pw-1",
                                   env={"CARDS_NEW_PASSWORD": "frank-first-1"}), "at 'alice''s request")
    assert inst.ok("operator", "request", "reject", 4, "--comment", "unknown person", user="dave") == "operator request 4 rejected\n"
    assert "frank" not in {o["name"] for o in inst.json("operator", "list")}

    # Disabling is one administrator's act; enabling again needs a second.
    assert inst.ok("operator", "disable", "bob") == "operator bob disabled\n"
    assert_one_line_error(inst.run("operator", "list", user="bob"), "operator 'bob' is disabled")
    assert "filed: enable bob" in inst.ok("operator", "request", "enable", "bob", "--reason", "back from leave")
    assert inst.ok("operator", "request", "approve", 5, "--comment", "ok", user="dave") == "operator request 5 approved: bob enabled\n"
    assert "filed: make carol admin" in inst.ok("operator", "request", "role", "carol", "--role", "admin", "--reason", "x")
    assert inst.ok("operator", "request", "approve", 6, "--comment", "ok", user="dave") == (
        "operator request 6 approved: carol is now admin\n")
    log = [(e["operator"], e["action"], e["object"]) for e in reversed(inst.json("audit", "log", "--limit", "10000"))]
    assert [e for e in log if e[2] in ("operator bob", "operator carol")][-3:] == [
        ("alice", "operator.disable", "operator bob"), ("dave", "operator.enable", "operator bob"),
        ("dave", "operator.role", "operator carol"),
    ]


def test_reset_password_lockout_and_unlock(inst: Installation) -> None:
    for _ in range(5):
        assert_one_line_error(inst.run("operator", "list", user="bob", password="not-bobs-pw"), REFUSED)
    assert {o["name"]: o["status"] for o in inst.json("operator", "list")}["bob"] == "locked"
    # Locked: the right password is refused with the same line.
    assert_one_line_error(inst.run("operator", "list", user="bob"), f"operator 'bob': {REFUSED}")
    assert inst.ok("operator", "unlock", "bob") == "operator bob unlocked\n"
    assert_one_line_error(inst.run("operator", "unlock", "bob"), "is not locked")
    assert inst.ok("operator", "list", user="bob")

    assert_one_line_error(inst.run("operator", "reset-password", "alice", env={"CARDS_NEW_PASSWORD": "alice-temp-pw-1"}),
                          "cannot reset their own password")
    assert inst.ok("operator", "reset-password", "bob", env={"CARDS_NEW_PASSWORD": temporary("bob")}) == (
        "password of bob reset; they must choose a new one at next sign-in\n")
    assert_one_line_error(inst.run("operator", "list", user="bob"), REFUSED)
    assert_one_line_error(inst.run("request", "list", user="bob", password=temporary("bob")), "must choose a new password first")
    result = inst.run("operator", "password", user="bob", password=temporary("bob"), input="bob-new-pw-1\nbob-new-pw-1\n")
    assert assert_ok(result).endswith("password of bob changed\n")
    assert inst.ok("request", "list", user="bob", password="bob-new-pw-1")
    actions = [e["action"] for e in inst.json("audit", "log", "--limit", "10000") if e["object"] == "operator bob"]
    assert actions[:4] == ["operator.password", "operator.reset_password", "operator.unlock", "operator.lock"]


def test_wrong_password_unknown_and_missing_operator_are_refused(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "list", password="not-alices-password"), f"operator 'alice': {REFUSED}")
    assert_one_line_error(inst.run("card", "void", "--batch", "B1", "--reason", "x", "--yes", password="wrong-wrong"), REFUSED)
    assert_one_line_error(inst.run("batch", "list", user="mallory", password="mallory-secret-1"), f"operator 'mallory': {REFUSED}")
    assert_one_line_error(inst.run("batch", "list", user=None), "no operator given")
    # Prompted (no CARDS_PASSWORD) and the wrong password typed.
    result = invoke("--db", inst.db, "--key-dir", inst.key_dir, "-u", "alice", "batch", "list", input="guess-guess\n")
    assert result.exit_code == 1 and "wrong password" in result.stderr, describe(result)
    assert "Traceback" not in result.output
    # Wrong passwords are counted on the operator's row, not in the log, until one locks.
    assert inst.snapshot() == before


def test_no_password_and_no_terminal_is_one_line(inst: Installation) -> None:
    result = invoke("--db", inst.db, "--key-dir", inst.key_dir, "-u", "alice", "batch", "list", input="")
    line = assert_one_line_error(result, "no password for alice on standard input", "set CARDS_PASSWORD")
    assert "echoed" not in result.output and "Aborted" not in result.output and "Warning" not in result.stderr, line

