"""``hall``: registering business halls.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

from testkit.commandline import (
    Installation,
    assert_one_line_error,
)


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

