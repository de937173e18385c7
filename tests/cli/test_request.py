"""``request``: issue requests from filing to collection, and separation of duties.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import datetime as dt
import json

from testkit.commandline import (
    Installation,
    assert_ok,
    assert_one_line_error,
)


def test_issue_requests_file_approve_collect_reject_cancel_and_list(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 30)

    r1 = inst.file_request(12)
    assert inst.ok("request", "approve", r1, "--comment", "stock is sufficient", user="bob") == (
        f"issue request {r1} approved; 12 cards reserved\n")
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
    assert table[0].split() == ["id", "face_value", "quantity", "hall", "status", "reserved", "requested_by",
                                "decided_by", "comment"]
    assert table[1].split() == [str(r5), "50.00", "4", "H01", "pending", "0", "alice"]
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



def test_collect_is_refused_when_a_reserved_card_was_voided_and_cancel_releases(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 20)
    rid = inst.file_request(15)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("card", "void", "--from", s[0], "--to", s[9], "--reason", "water damage", "--yes")
    assert (inst.card(s[0])["state"], inst.card(s[0])["issue_request"]) == ("voided", rid)
    before = inst.snapshot()
    assert_one_line_error(inst.run("request", "collect", rid), f"issue request {rid}: of its 15 reserved cards 10 voided",
                          f"({s[0]}, {s[1]}, {s[2]} and 7 more)", "nothing was issued", "cancel the request")
    assert inst.snapshot() == before
    (row,) = inst.json("request", "list")
    assert (row["status"], row["reserved"]) == ("approved", 5)
    # The five left over are no one else's: a new request cannot have them until this one is cancelled.
    assert_one_line_error(inst.run("request", "file", "--face-value", "50", "--quantity", 6, "--hall", "H01",
                                   "--reason", "x"), "only 5 usable cards", "5 more are reserved", "6 requested")
    inst.ok("request", "cancel", rid, "--reason", "half the cards were damaged")
    assert inst.card(s[10])["issue_request"] == ""
    (entry,) = inst.json("audit", "log", "--action", "request.cancel")
    assert entry["after"]["released"] == 15
    again = inst.file_request(5)
    assert inst.ok("request", "approve", again, "--comment", "ok", user="bob").endswith("5 cards reserved\n")


def test_approval_reserves_so_a_second_approval_cannot_count_on_the_same_cards(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 30)
    first, second = inst.file_request(20), inst.file_request(20)
    approved = inst.run("request", "approve", first, "--comment", "ok", user="bob")
    assert assert_ok(approved) == f"issue request {first} approved; 20 cards reserved\n"
    assert "reserving cards" in approved.stderr, "the reservation shows its progress"
    assert inst.card(s[0])["reserved_for"] == first and inst.card(s[0])["state"] == "in_stock"
    assert inst.card(s[20])["reserved_for"] == ""
    before = inst.snapshot()
    assert_one_line_error(inst.run("request", "approve", second, "--comment", "ok", user="bob"),
                          "only 10 usable cards of 50.00 yuan are in stock (20 more are reserved for approved requests)",
                          f"20 approved in request {second}; it stays pending")
    assert inst.snapshot() == before
    rows = {r["id"]: r for r in inst.json("request", "list")}
    assert (rows[first]["status"], rows[first]["reserved"]) == ("approved", 20)
    assert (rows[second]["status"], rows[second]["reserved"]) == ("pending", 0)
    (by_face,) = inst.json("report", "stock")
    assert (by_face["in_stock"], by_face["reserved"], by_face["free"]) == (30, 20, 10)
    # A reserved card frozen meanwhile: collection refuses and names it; unfrozen, it is reserved again.
    assert inst.ok("card", "freeze", "--serial", s[3], "--reason", "reported missing") == (
        f"1 cards frozen\n1 of them are reserved for issue request {first}; it is collected only when every card it"
        " reserved is in stock (unfreeze them, or cancel the request)\n")
    assert (inst.card(s[3])["state"], inst.card(s[3])["reserved_for"]) == ("frozen", first)
    assert_one_line_error(inst.run("request", "collect", first), "of its 20 reserved cards 1 frozen", s[3])
    assert inst.ok("card", "unfreeze", "--serial", s[3], "--reason", "found") == (
        f"1 cards unfrozen\n1 of them are reserved for issue request {first} again\n")
    issued = inst.json("request", "collect", first, user="alice")
    assert issued == [{"first_serial": s[0], "last_serial": s[19], "cards": 20}]
    assert (inst.card(s[0])["state"], inst.card(s[0])["reserved_for"], inst.card(s[0])["issue_request"]) == (
        "issued", "", first)
    (by_face,) = inst.json("report", "stock")
    assert (by_face["in_stock"], by_face["reserved"], by_face["free"], by_face["issued"]) == (10, 0, 10, 20)


def test_only_finance_other_than_the_requester_can_approve(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
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
        f"issue request {rid} approved; 5 cards reserved\n")
    (row,) = inst.json("request", "list")
    assert (row["status"], row["requested_by"], row["decided_by"]) == ("approved", "alice", "bob")

