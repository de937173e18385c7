"""``report``: stock, batch and issue reports; sales, recharges, settlement and stock value in table, JSON and CSV.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import csv
import io
import re

from sqlalchemy import select

from cardmgmt import reports
from cardmgmt.days import business_day
from cardmgmt.db import Database
from cardmgmt.models import Card, Recharge, utcnow
from cardmgmt.money import format_fen, parse_yuan
from cardmgmt.states import CardState, PostStatus
from cli import MONEY_KEYS
from testkit.commandline import (
    Installation,
    assert_one_line_error,
)


def test_reports_by_every_dimension(inst: Installation) -> None:
    inst.stocked_batch("B1", 30, face_value="50")
    inst.stocked_batch("B2", 20, face_value="100")
    rid = inst.file_request(12)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("request", "collect", rid)
    inst.ok("card", "void", "--serial", inst.serials("B2")[0], "--reason", "torn", "--yes")

    by_face = {r["face_value"]: r for r in inst.json("report", "stock", "--by", "face-value")}
    assert (by_face[5000]["in_stock"], by_face[5000]["issued"], by_face[5000]["total"]) == (18, 12, 30)
    assert (by_face[10000]["in_stock"], by_face[10000]["voided"], by_face[10000]["expired"]) == (19, 1, 0)
    table = inst.ok("report", "stock", user="carol")  # --by face-value is the default
    assert "50.00" in table and "100.00" in table

    by_batch = {r["batch_no"]: r for r in inst.json("report", "stock", "--by", "batch")}
    assert (by_batch["B1"]["issued"], by_batch["B2"]["voided"]) == (12, 1)
    assert "B2" in inst.ok("report", "stock", "--by", "batch", user="carol")

    by_state = inst.json("report", "stock", "--by", "state")
    assert by_state == [{"state": st, "cards": n, "reserved": 0} for st, n in [
        ("ordered", 0), ("produced", 0), ("in_stock", 37), ("issued", 12), ("sold", 0), ("redeemed", 0), ("voided", 1),
        ("frozen", 0)]]
    assert "in_stock  37" in inst.ok("report", "stock", "--by", "state", user="carol")

    by_hall = {r["hall"]: r for r in inst.json("report", "stock", "--by", "hall")}
    assert (by_hall["H01"]["issued"], by_hall["H01"]["total"]) == (12, 12)
    assert (by_hall["(none)"]["in_stock"], by_hall["(none)"]["voided"]) == (37, 1)
    assert "H01" in inst.ok("report", "stock", "--by", "hall", user="bob")

    batches = {b["batch_no"]: b for b in inst.json("report", "batches")}
    assert (batches["B1"]["quantity"], batches["B1"]["issued"], batches["B1"]["in_stock"]) == (30, 12, 18)
    assert (batches["B2"]["face_value"], batches["B2"]["voided"], batches["B2"]["expired"]) == (10000, 1, False)
    assert "B2" in inst.ok("report", "batches", user="carol")

    (issue,) = inst.json("report", "issues")
    assert (issue["id"], issue["status"], issue["quantity"], issue["hall"], issue["decided_by"]) == (
        rid, "collected", 12, "H01", "bob")
    assert "collected" in inst.ok("report", "issues", user="carol")

    assert_one_line_error(inst.run("report", "stock", "--by", "colour"), "'colour'", code=2)



def _recharged(inst: Installation, serials: list[str]) -> None:
    """Recharge rows for ``serials`` committed now (written straight into the card database, as the core would)."""
    db = Database(inst.db)
    now = utcnow()
    with db.transaction() as s:
        for i, serial in enumerate(serials):
            card = s.scalars(select(Card).where(Card.serial == serial)).one()
            s.add(Recharge(key=f"c{i}#1", call_id=f"c{i}", channel="hotline" if i % 2 else "web", caller="13900000001",
                           card_id=card.id, card_serial=serial, account_no="3100000001", amount=5000, committed_at=now,
                           post_status=PostStatus.POSTED, post_attempts=1, next_attempt_at=now))
            card.state = CardState.REDEEMED
    db.dispose()


def _table_total(table: str, columns: list[str]) -> dict[str, str]:
    """The table's total line, column by column (the key columns are blank but the first)."""
    header, *lines = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    (total,) = [line for line in lines if line.startswith("total")]
    cells = [total[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(columns, cells, strict=True))


def test_every_money_report_agrees_in_table_json_and_csv(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 30)
    inst.stocked_batch("B2", 10, face_value="100")
    rid = inst.file_request(30)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("request", "collect", rid)
    inst.ok("sale", "record", "--hall", "H01", "--batch", "B1", "--box", "1")
    inst.ok("sale", "record", "--hall", "H01", "--from", s[10], "--to", s[14], "--key", "T-1")
    _recharged(inst, s[:3])
    today = business_day(utcnow()).isoformat()
    inst.ok("settle", "pay", "--hall", "H01", "--day", today, "--amount", "600.25", "--ref", "S1", user="bob")
    db = Database(inst.db)
    with db.transaction() as session:
        first_ref = session.scalars(select(Recharge).order_by(Recharge.id)).first().ref  # type: ignore[union-attr]
    db.dispose()
    inst.ok("reversal", "file", first_ref, "--reason", "keyed the neighbour's account")
    inst.ok("reversal", "approve", "1", "--comment", "recording checked", user="bob")
    commands = [("sales", by) for by in reports.SALES_BY] + [("recharges", by) for by in reports.RECHARGES_BY]
    commands += [("reversals", by) for by in reports.REVERSALS_BY]
    commands += [("settlement", by) for by in reports.SETTLEMENT_BY] + [("stock-value", by) for by in reports.STOCK_VALUE_BY]
    for name, by in commands:
        doc = inst.json("report", name, "--by", by)
        assert doc["report"] == name and doc["by"] == by and doc["rows"], (name, by)
        table = inst.ok("report", name, "--by", by, user="carol")
        columns = table.splitlines()[0].split()
        shown = _table_total(table, columns)
        for measure, fen in doc["total"].items():
            expected = format_fen(fen) if measure in MONEY_KEYS else str(fen)
            assert shown[measure] == expected, (name, by, measure, table)
        rows = list(csv.DictReader(io.StringIO(inst.ok("report", name, "--by", by, "--csv", user="carol"))))
        assert len(rows) == len(doc["rows"]) and list(rows[0]) == columns
        for measure, fen in doc["total"].items():
            if measure in ("opening", "balance"):
                continue  # carried, not summed
            cells = [r[measure] for r in rows]
            if measure in MONEY_KEYS:
                assert all(re.fullmatch(r"-?\d+\.\d\d", c) for c in cells), cells
                assert sum(parse_yuan(c.lstrip("-")) * (-1 if c.startswith("-") else 1) for c in cells) == fen
            else:
                assert sum(int(c) for c in cells) == fen
    assert inst.json("report", "sales")["total"] == {"sales": 2, "cards": 15, "amount": 75_000}
    assert inst.json("report", "recharges", "--by", "channel")["total"] == {"recharges": 3, "amount": 15_000}
    assert inst.json("report", "settlement")["total"]["balance"] == 75_000 - 60_025
    assert inst.json("report", "reversals", "--by", "channel")["rows"] == [
        {"channel": "web", "reversals": 1, "amount": 5000, "posted": 0}]
    value = {(r["place"], r["state"]): r["value"] for r in inst.json("report", "stock-value")["rows"]}
    assert value[("(warehouse)", "in_stock")] == 100_000 and value[("H01", "redeemed")] == 15_000
    assert_one_line_error(inst.run("report", "sales", "--json", "--csv"), "not both", code=2)
    assert_one_line_error(inst.run("report", "sales", "--from", "2027-01-02", "--to", "2027-01-01"), "is after")
    assert_one_line_error(inst.run("report", "recharges", "--by", "colour"), "'colour'", code=2)
    assert inst.json("report", "sales", "--from", "2000-01-01", "--to", "2000-01-01")["rows"] == []
    assert inst.ok("report", "sales", "--from", "2000-01-01", "--to", "2000-01-01", user="carol") == "(none)\n"
