"""``settle``: payments recorded by finance, voids, a hall's day reconciled; ``report settlement`` over them.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import datetime as dt
from pathlib import Path

from cardmgmt.days import business_day
from cardmgmt.models import utcnow
from testkit.commandline import Installation, Refusals, assert_one_line_error


def today() -> str:
    """Today's business day, asked when used: a run may pass midnight in Beijing (16:00 UTC) after collection."""
    return business_day(utcnow()).isoformat()


def yesterday() -> str:
    return (business_day(utcnow()) - dt.timedelta(days=1)).isoformat()


def sold(inst: Installation) -> list[str]:
    """Batch B1 (30 cards of 50 yuan) issued to H01; box 1 and one card sold there today."""
    s = inst.stocked_batch("B1", 30)
    rid = inst.file_request(30)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("request", "collect", rid)
    inst.ok("sale", "record", "--hall", "H01", "--batch", "B1", "--box", "1")
    inst.ok("sale", "record", "--hall", "H01", "--serial", s[10])
    return s


def test_finance_records_a_payment_voids_it_and_the_settlement_follows(inst: Installation) -> None:
    sold(inst)
    out = inst.ok("settle", "pay", "--hall", "H01", "--day", today(), "--amount", "500.50", "--ref", "SLIP-77", user="bob")
    assert out == f"payment 1 recorded: hall H01 paid 500.50 yuan for {today()} (slip SLIP-77)\n"
    out = inst.ok("settle", "void", "1", "--reason", "slip says 505.00", user="bob")
    assert out == f"payment 1 voided by entry 2: 500.50 yuan taken off hall H01's {today()}\n"
    row = inst.json("settle", "pay", "--hall", "H01", "--day", today(), "--amount", "505", "--ref", "SLIP-77", user="bob")
    assert (row["payment"], row["amount"], row["kind"]) == (3, 50_500, "payment")
    listed = inst.json("settle", "payments", "--hall", "H01")
    assert [(p["kind"], p["amount"], p["voids"]) for p in listed] == [
        ("payment", 50_050, ""), ("void", -50_050, 1), ("payment", 50_500, "")]
    doc = inst.json("report", "settlement")
    assert doc["rows"] == [{"hall": "H01", "day": today(), "opening": 0, "cards": 11, "owed": 55_000, "paid": 50_500,
                            "balance": 4_500}]
    assert doc["total"] == {"opening": 0, "cards": 11, "owed": 55_000, "paid": 50_500, "balance": 4_500}
    table = inst.ok("report", "settlement", user="bob")
    assert "550.00" in table and "505.00" in table and "45.00" in table


def test_only_finance_pays_and_bad_payments_are_one_line_that_changes_nothing(inst: Installation) -> None:
    sold(inst)
    inst.ok("hall", "add", "TS", "Tangshan", "--level", "city")
    before = (inst.snapshot(), inst.json("settle", "payments"))
    tomorrow = (business_day(utcnow()) + dt.timedelta(days=1)).isoformat()
    r = Refusals()
    pay = ("settle", "pay", "--hall", "H01", "--day", today(), "--ref", "S1", "--amount")
    r.check("admin", inst.run(*pay, "10", user="alice"), "may not", "record and void")
    r.check("auditor", inst.run(*pay, "10", user="carol"), "may not")
    r.check("3 decimals", inst.run(*pay, "10.005", user="bob"), "more than two decimal places")
    r.check("letters", inst.run(*pay, "ten", user="bob"), "is not a number of yuan")
    r.check("zero", inst.run(*pay, "0.00", user="bob"), "positive")
    r.check("future", inst.run("settle", "pay", "--hall", "H01", "--day", tomorrow, "--ref", "S1", "--amount", "1",
                               user="bob"), "in the future")
    r.check("unknown hall", inst.run("settle", "pay", "--hall", "H99", "--day", today(), "--ref", "S1", "--amount", "1",
                                     user="bob"), "hall 'H99' does not exist")
    r.check("office", inst.run("settle", "pay", "--hall", "TS", "--day", today(), "--ref", "S1", "--amount", "1",
                               user="bob"), "city office")
    r.check("void unknown", inst.run("settle", "void", "9", "--reason", "x", user="bob"), "payment 9 does not exist")
    r.check("bad day", inst.run("settle", "pay", "--hall", "H01", "--day", "5/1/2027", "--ref", "S1", "--amount", "1",
                                user="bob"), "is not a date", code=2)
    r.assert_all_clean()
    assert (inst.snapshot(), inst.json("settle", "payments")) == before
    inst.ok("settle", "pay", "--hall", "H01", "--day", yesterday(), "--ref", "S1", "--amount", "1", user="bob")
    assert_one_line_error(inst.run(*pay, "1", user="bob"), "already recorded for hall H01")


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(["first_serial,last_serial,cards,amount", *lines]) + "\n")
    return path


def test_reconcile_a_hall_file_exit_0_when_equal_3_on_any_difference(inst: Installation, tmp_path: Path) -> None:
    s = sold(inst)
    equal = write(tmp_path / "equal.csv", f"{s[0]},{s[9]},10,500.00", f"{s[10]},{s[10]},1,50")
    out = inst.ok("settle", "reconcile", "--hall", "H01", "--day", today(), equal, user="bob")
    assert out == (f"hall H01 {today()}: 2 matched, 0 differ, 0 only in the hall's file, 0 only in the back end; "
                   "hall 550.00 yuan, back end 550.00 yuan\n")
    assert inst.json("settle", "reconcile", "--hall", "H01", "--day", today(), equal)["agrees"] is True
    cases = {
        "differs": write(tmp_path / "d.csv", f"{s[0]},{s[9]},10,450.00", f"{s[10]},{s[10]},1,50"),
        "only_in_backend": write(tmp_path / "b.csv", f"{s[0]},{s[9]},10,500.00"),
        "only_in_file": write(tmp_path / "f.csv", f"{s[0]},{s[9]},10,500.00", f"{s[10]},{s[10]},1,50",
                              f"{s[20]},{s[20]},1,50"),
    }
    for outcome, path in cases.items():
        out = inst.ok("settle", "reconcile", "--hall", "H01", "--day", today(), path, user="bob", code=3)
        assert f": {outcome} (hall:" in out, out
        doc = inst.json("settle", "reconcile", "--hall", "H01", "--day", today(), path, code=3)
        assert doc["counts"][outcome] == 1 and doc["agrees"] is False
    r = Refusals()
    (tmp_path / "bad.csv").write_text("first_serial,last_serial,cards,amount\n123,456,1,5\n")
    r.check("bad serial", inst.run("settle", "reconcile", "--hall", "H01", "--day", today(), tmp_path / "bad.csv",
                                   user="bob"), "line 2: a serial is 12 digits")
    (tmp_path / "nohead.csv").write_text(f"{s[0]},{s[9]},10,500.00\n")
    r.check("no header", inst.run("settle", "reconcile", "--hall", "H01", "--day", today(), tmp_path / "nohead.csv",
                                  user="bob"), "header must name")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    r.check("not text", inst.run("settle", "reconcile", "--hall", "H01", "--day", today(), tmp_path / "binary.csv",
                                 user="bob"), "is not UTF-8 text")
    r.check("missing", inst.run("settle", "reconcile", "--hall", "H01", "--day", today(), tmp_path / "nope.csv",
                                user="bob"), "No such file")
    r.check("unknown hall", inst.run("settle", "reconcile", "--hall", "H02", "--day", today(), equal, user="bob"),
            "hall 'H02' does not exist")
    inst.ok("hall", "add", "TS", "Tangshan", "--level", "city")
    r.check("office", inst.run("settle", "reconcile", "--hall", "TS", "--day", today(), equal, user="bob"), "city office")
    r.assert_all_clean()
