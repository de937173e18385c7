"""``stock``: intake and stock counts.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import json
import re

from cardmgmt.serials import make_serial, parse_serial
from testkit.commandline import (
    Installation,
    assert_one_line_error,
    bad_check_digit,
)


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

