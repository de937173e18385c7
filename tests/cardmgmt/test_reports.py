"""Reports on real data (both backends)."""

import datetime as dt

from cardmgmt import issuing, reports, stock
from cardmgmt.operators import Permission


def test_reports_follow_the_cards(bench):
    bench.stocked_batch("B1", 30, face_value=5000)
    bench.stocked_batch("B2", 10, face_value=10000, expiry=dt.date.today() + dt.timedelta(days=5))
    bench.add_hall("H01")
    rid = bench.approved_request(12)
    with bench.unit() as ctx:
        issuing.collect(ctx, rid)
        stock.void(ctx, stock.Selection(batch_no="B2", box_no=1), "damaged")
    with bench.unit(Permission.VIEW) as ctx:
        by_face = reports.stock(ctx.session, "face-value")
        by_hall = reports.stock(ctx.session, "hall")
        by_state = reports.stock(ctx.session, "state")
        later = reports.stock(ctx.session, "batch", today=dt.date.today() + dt.timedelta(days=6))
        summary = reports.batch_summary(ctx.session)
        history = reports.issue_history(ctx.session)
    assert [(r["face_value"], r["in_stock"], r["issued"], r["voided"], r["total"]) for r in by_face] == [(5000, 18, 12, 0, 30), (10000, 0, 0, 10, 10)]
    assert {r["hall"]: r["issued"] for r in by_hall} == {"(none)": 0, "H01": 12}
    assert {r["state"]: r["cards"] for r in by_state}["in_stock"] == 18
    assert {r["batch_no"]: r["expired"] for r in later} == {"B1": 0, "B2": 0}, "voided cards are not counted as expired"
    assert [(r["batch_no"], r["in_stock"], r["expired"]) for r in summary] == [("B1", 18, False), ("B2", 0, False)]
    assert [(h["id"], h["status"], h["decided_by"], h["hall"]) for h in history] == [(rid, "collected", "bob", "H01")]


def test_expired_is_derived(bench):
    bench.stocked_batch("B1", 10, expiry=dt.date.today() + dt.timedelta(days=1))
    with bench.unit(Permission.VIEW) as ctx:
        rows = reports.stock(ctx.session, "batch", today=dt.date.today() + dt.timedelta(days=2))
    assert rows[0]["expired"] == 10 and rows[0]["in_stock"] == 10
