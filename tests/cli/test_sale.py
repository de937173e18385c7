"""``sale``: recording sales at a hall, returning unsold cards, listing sales.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

from testkit.commandline import Installation, Refusals


def issued(inst: Installation, quantity: int = 30) -> list[str]:
    """Batch B1 made, taken into stock and issued whole to hall H01; its serials."""
    s = inst.stocked_batch("B1", quantity)
    rid = inst.file_request(quantity)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("request", "collect", rid)
    return s


def test_record_sales_by_card_box_and_range_then_list_them(inst: Installation) -> None:
    s = issued(inst)
    out = inst.ok("sale", "record", "--hall", "H01", "--serial", s[0])
    assert out == f"sale recorded: 1 cards ({s[0]}-{s[0]}) at hall H01, 50.00 yuan owed on {inst.json('sale', 'list')[0]['day']}\n"
    inst.ok("sale", "record", "--hall", "H01", "--batch", "B1", "--box", "2")
    [row] = inst.json("sale", "record", "--hall", "H01", "--from", s[1], "--to", s[3], "--key", "T1-9", user="alice")
    assert (row["cards"], row["amount"], row["channel"], row["seller"], row["repeated"]) == (3, 15_000, "counter", "alice", False)
    [again] = inst.json("sale", "record", "--hall", "H01", "--from", s[1], "--to", s[3], "--key", "T1-9", user="alice")
    assert (again["sale"], again["repeated"]) == (row["sale"], True)
    assert "already recorded as" in inst.ok("sale", "record", "--hall", "H01", "--from", s[1], "--to", s[3], "--key", "T1-9")
    listed = inst.json("sale", "list")
    assert [r["cards"] for r in listed] == [3, 10, 1]  # newest first
    assert sum(r["amount"] for r in listed) == 14 * 5000
    assert inst.states() == {"issued": 16, "sold": 14}
    assert inst.card(s[0])["state"] == "sold"
    table = inst.ok("sale", "list", "--hall", "H01", user="bob")
    assert "150.00" in table and "500.00" in table
    assert inst.json("sale", "list", "--from", "2000-01-01", "--to", "2000-01-02") == []


def test_unsold_cards_go_back_to_the_warehouse(inst: Installation) -> None:
    s = issued(inst)
    inst.ok("sale", "record", "--hall", "H01", "--batch", "B1", "--box", "1")
    out = inst.ok("sale", "return", "--hall", "H01", "--batch", "B1", "--box", "3", "--reason", "hall closing")
    assert out == f"10 unsold cards ({s[20]}-{s[29]}) back in stock from hall H01\n"
    assert inst.states() == {"in_stock": 10, "issued": 10, "sold": 10}
    assert inst.card(s[25])["hall"] == ""


def test_refused_sales_and_returns_say_why_in_one_line_and_change_nothing(inst: Installation) -> None:
    s = issued(inst)
    inst.ok("hall", "add", "H02", "Nanshan business hall")
    inst.ok("hall", "add", "TS", "Tangshan", "--level", "city")
    inst.ok("sale", "record", "--hall", "H01", "--serial", s[0], "--key", "K1")
    before = inst.snapshot()
    r = Refusals()
    r.check("sold twice", inst.run("sale", "record", "--hall", "H01", "--serial", s[0]), "cannot be sold because 1 sold")
    r.check("other hall", inst.run("sale", "record", "--hall", "H02", "--serial", s[1]), "issued to another hall")
    r.check("office", inst.run("sale", "record", "--hall", "TS", "--serial", s[1]), "city office")
    r.check("no hall", inst.run("sale", "record", "--hall", "H09", "--serial", s[1]), "hall 'H09' does not exist")
    r.check("bad serial", inst.run("sale", "record", "--hall", "H01", "--serial", "12345"), "a serial is 12 digits")
    r.check("nothing chosen", inst.run("sale", "record", "--hall", "H01"), "choose cards with")
    r.check("key reused", inst.run("sale", "record", "--hall", "H01", "--serial", s[2], "--key", "K1"), "already used")
    r.check("auditor", inst.run("sale", "record", "--hall", "H01", "--serial", s[2], user="carol"), "may not record card sales")
    r.check("finance", inst.run("sale", "record", "--hall", "H01", "--serial", s[2], user="bob"), "may not record card sales")
    r.check("return sold", inst.run("sale", "return", "--hall", "H01", "--serial", s[0], "--reason", "x"),
            "cannot be returned to the warehouse because 1 sold")
    r.check("return no reason", inst.run("sale", "return", "--hall", "H01", "--serial", s[3], "--reason", " "),
            "a reason is required")
    r.check("bad day", inst.run("sale", "list", "--from", "yesterday"), "is not a date", code=2)
    r.assert_all_clean()
    assert inst.snapshot() == before
