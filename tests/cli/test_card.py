"""``card``: void, freeze, unfreeze and show.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

from cardmgmt.serials import make_serial, parse_serial
from testkit.commandline import (
    FAR_EXPIRY,
    Installation,
    assert_ok,
    assert_one_line_error,
    bad_check_digit,
    describe,
    escaped,
)


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
    lines = inst.ok("card", "show", s[12], user="bob").splitlines()
    assert [line.split()[0] for line in lines] == [
        "serial", "batch_no", "box", "face_value", "expiry", "state", "frozen_from", "hall", "issue_request",
        "reserved_for", "sale", "sale_hall", "sold_at", "sold_by", "sale_channel", "recharge_ref", "recharged_at",
        "account", "channel", "post_status"]
    assert [line.split() for line in lines[:6]] == [
        ["serial", s[12]], ["batch_no", "B1"], ["box", "2"], ["face_value", "50.00"], ["expiry", FAR_EXPIRY],
        ["state", "in_stock"]]
    assert inst.card(s[12]) == {"serial": s[12], "batch_no": "B1", "box": 2, "face_value": 5000, "expiry": FAR_EXPIRY,
                                "state": "in_stock", "frozen_from": "", "hall": "", "issue_request": "",
                                "reserved_for": "", "sale": "", "sale_hall": "", "sold_at": "", "sold_by": "",
                                "sale_channel": "", "recharge_ref": "", "recharged_at": "", "account": "",
                                "channel": "", "post_status": ""}
    assert_one_line_error(inst.run("card", "show", make_serial(parse_serial(s[-1]) + 1)), "does not exist")


def test_a_serial_with_a_wrong_check_digit_is_refused(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    bad = bad_check_digit(s[5])
    before = inst.snapshot()
    assert_one_line_error(inst.run("card", "show", bad), f"serial {bad} has a wrong check digit")
    assert_one_line_error(inst.run("card", "void", "--serial", bad, "--reason", "x", "--yes"), "wrong check digit")
    assert_one_line_error(inst.run("card", "freeze", "--from", s[0], "--to", bad, "--reason", "x"), "wrong check digit")
    assert_one_line_error(inst.run("stock", "count", "--from", bad, "--to", s[9], "--counted", 5), "wrong check digit")
    assert_one_line_error(inst.run("card", "show", "12345"), "a serial is 12 digits")
    assert inst.snapshot() == before


def test_a_pin_typed_where_a_serial_belongs_is_never_echoed(inst: Installation) -> None:
    inst.stocked_batch("B1", 4)
    pin = "731904468215530927"  # the shape of a PIN (18 digits)
    for args in (("card", "show", pin), ("card", "freeze", "--serial", pin, "--reason", "x"),
                 ("card", "void", "--from", pin, "--to", pin, "--reason", "x", "--yes")):
        result = inst.run(*args)
        line = assert_one_line_error(result, "a serial is 12 digits")
        assert pin not in result.output and pin[:12] not in line, line



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

