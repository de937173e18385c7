"""``report``: stock, batch and issue reports.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

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
        ("ordered", 0), ("produced", 0), ("in_stock", 37), ("issued", 12), ("redeemed", 0), ("voided", 1), ("frozen", 0)]]
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

