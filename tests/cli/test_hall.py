"""``hall``: the sales hierarchy (city → county → hall) and its rolled-up figures.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

from testkit.commandline import (
    Installation,
    assert_one_line_error,
)


def test_hall_add_and_list(inst: Installation) -> None:
    assert inst.ok("hall", "add", "H02", "Nanshan business hall") == "hall H02 added\n"
    assert [(h["code"], h["name"], h["level"], h["parent"]) for h in inst.json("hall", "list")] == [
        ("H01", "Lubei business hall", "hall", None),
        ("H02", "Nanshan business hall", "hall", None),
    ]
    assert "Nanshan business hall" in inst.ok("hall", "list", user="bob")

    before = inst.snapshot()
    assert_one_line_error(inst.run("hall", "add", "H01", "again"), "hall H01 already exists")
    assert_one_line_error(inst.run("hall", "add", "H 3", "bad code"), "hall code")
    assert_one_line_error(inst.run("hall", "add", "H03", "Somewhere", user="bob"), "may not manage cards")
    assert_one_line_error(inst.run("hall", "add", "C1", "county", "--level", "county", "--parent", "H01"),
                          "cannot sit under hall H01")
    assert_one_line_error(inst.run("hall", "add", "H03", "x", "--parent", "NOPE"), "hall 'NOPE' does not exist")
    assert_one_line_error(inst.run("hall", "add", "H03", "x", "--level", "province"), "Invalid value", code=2)
    assert inst.snapshot() == before


def test_the_hierarchy_shows_stock_and_sales_rolled_up(inst: Installation) -> None:
    assert inst.ok("hall", "add", "TS", "Tangshan", "--level", "city") == "city TS added\n"
    inst.ok("hall", "add", "LB", "Lubei county", "--level", "county", "--parent", "TS")
    assert inst.ok("hall", "add", "H05", "Lubei hall 5", "--parent", "LB") == "hall H05 added under LB\n"
    s = inst.stocked_batch("B1", 20)
    rid = inst.file_request(20, hall="H05")
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("request", "collect", rid)
    inst.ok("sale", "record", "--hall", "H05", "--from", s[0], "--to", s[4])
    nodes = {n["code"]: n for n in inst.json("hall", "list")}
    assert nodes["H05"]["own"] == {"unsold_cards": 15, "unsold_value": 75_000, "sold_cards": 5, "sold_value": 25_000}
    assert nodes["TS"]["total"] == nodes["LB"]["total"] == nodes["H05"]["own"]
    assert nodes["TS"]["own"]["sold_cards"] == 0 and nodes["LB"]["parent"] == "TS"
    table = inst.ok("hall", "list").splitlines()
    assert table[0].split() == ["code", "name", "level", "unsold", "unsold_value", "sold", "sold_value"]
    (ts_line,) = [line for line in table if line.startswith("TS ")]
    assert ts_line.split()[-4:] == ["15", "750.00", "5", "250.00"]
    assert any(line.startswith("    H05") for line in table), "a hall is indented under its county"
