"""Intake, voiding, freezing and stock counts through the real databases."""

import pytest
from sqlalchemy import select

from cardmgmt import stock
from cardmgmt.errors import IllegalTransition, InvalidInput, NotFound
from cardmgmt.models import Intake
from cardmgmt.serials import make_serial
from cardmgmt.stock import Selection


@pytest.fixture
def produced(bench):
    bench.register_factory()
    bench.create_batch("B1", 30, box_size=10)
    bench.check("B1", bench.produce("B1"))
    return bench


def run(bench, fn, *args, **kw):
    with bench.unit() as ctx:
        return fn(ctx, *args, **kw)


def test_intake_by_box_and_range_records_detail(produced):
    records = run(produced, stock.intake, Selection(batch_no="B1", box_no=2))
    assert [(r.box_no, r.first_serial, r.last_serial, r.quantity) for r in records] == [(2, make_serial(11), make_serial(20), 10)]
    records = run(produced, stock.intake, Selection(first_serial=make_serial(5), last_serial=make_serial(10)))
    assert [(r.box_no, r.quantity) for r in records] == [(1, 6)]
    assert produced.states("B1") == {"in_stock": 16, "produced": 14}
    with produced.system.db.transaction() as s:
        assert len(s.execute(select(Intake)).all()) == 2


def test_range_crossing_states_changes_nothing(produced):
    run(produced, stock.void, Selection.serial(make_serial(15)), "torn")
    with pytest.raises(IllegalTransition, match="29 produced|1 voided"):
        run(produced, stock.intake, Selection(first_serial=make_serial(10), last_serial=make_serial(20)))
    assert produced.states("B1") == {"produced": 29, "voided": 1}
    records = run(produced, stock.intake, Selection(first_serial=make_serial(10), last_serial=make_serial(20), skip_voided=True))
    assert sum(r.quantity for r in records) == 10


def test_voided_is_final(produced):
    run(produced, stock.void, Selection(batch_no="B1", box_no=1), "water damage")
    for fn in (stock.intake, lambda c, s: stock.freeze(c, s, "x"), lambda c, s: stock.void(c, s, "again")):
        with pytest.raises(IllegalTransition):
            run(produced, fn, Selection(batch_no="B1", box_no=1))
    assert produced.states("B1") == {"voided": 10, "produced": 20}


def test_void_needs_a_reason(produced):
    with pytest.raises(InvalidInput, match="reason"):
        run(produced, stock.void, Selection.serial(make_serial(1)), "  ")


def test_freeze_and_unfreeze_return_each_card_to_its_state(produced):
    run(produced, stock.intake, Selection(batch_no="B1", box_no=1))
    run(produced, stock.freeze, Selection(first_serial=make_serial(5), last_serial=make_serial(14)), "box lost")
    assert produced.states("B1") == {"in_stock": 4, "produced": 16, "frozen": 10}
    with pytest.raises(IllegalTransition):
        run(produced, stock.intake, Selection(batch_no="B1", box_no=2))
    run(produced, stock.unfreeze, Selection(first_serial=make_serial(5), last_serial=make_serial(14)), "found")
    assert produced.states("B1") == {"in_stock": 10, "produced": 20}


@pytest.mark.parametrize(
    ("sel", "error"),
    [
        (Selection(batch_no="B9"), NotFound),
        (Selection(batch_no="B1", box_no=4), NotFound),
        (Selection(first_serial=make_serial(3), last_serial=make_serial(2)), InvalidInput),
        (Selection(first_serial=make_serial(3)), InvalidInput),
        (Selection(first_serial="000000000011", last_serial="000000000011"), InvalidInput),
        (Selection(first_serial=make_serial(25), last_serial=make_serial(40)), InvalidInput),
        (Selection(), InvalidInput),
    ],
)
def test_bad_selections(produced, sel, error):
    with pytest.raises(error):
        run(produced, stock.intake, sel)
    assert produced.states("B1") == {"produced": 30}


def test_stock_count_with_scanned_serials(produced):
    run(produced, stock.intake, Selection(batch_no="B1", box_no=1))
    run(produced, stock.void, Selection.serial(make_serial(21)), "x")
    scanned = [make_serial(i) for i in range(2, 11)] + [make_serial(12), make_serial(21), make_serial(99999)]
    result = run(produced, stock.count_stock, Selection(batch_no="B1", box_no=1), scanned=scanned)
    c = result.count
    assert (c.expected, c.counted, c.missing, c.unexpected) == (10, 12, 1, 3)
    assert {(f.serial, f.kind, f.detail) for f in result.findings} == {
        (make_serial(1), "missing", "in stock but not found"),
        (make_serial(12), "unexpected", "card is produced"),
        (make_serial(21), "unexpected", "card is voided"),
        (make_serial(99999), "unexpected", "unknown serial"),
    }
    clean = run(produced, stock.count_stock, Selection(batch_no="B1", box_no=1), counted=10)
    assert clean.clean


def test_stock_count_rejects_bad_scans(produced):
    with pytest.raises(InvalidInput, match="scanned line 2"):
        run(produced, stock.count_stock, Selection(batch_no="B1"), scanned=[make_serial(1), "12345"])
    with pytest.raises(InvalidInput):
        run(produced, stock.count_stock, Selection(batch_no="B1"))


def test_describe_card_never_shows_the_pin(produced):
    with produced.system.db.transaction() as s:
        row = stock.describe_card(s, make_serial(3))
    assert row["state"] == "produced" and row["box"] == 1 and "pin" not in " ".join(row).lower()
