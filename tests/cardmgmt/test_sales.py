"""Sales at business halls and returns to the warehouse (real databases; the races run on PostgreSQL too)."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from cardmgmt import halls, issuing, sales, stock
from cardmgmt.context import Actor, Context, Permission, Role
from cardmgmt.db import Database
from cardmgmt.errors import CardError, ConflictError, IllegalTransition, InvalidInput, NotFound, PermissionDenied
from cardmgmt.models import Card, CardReturn, Hall, HallLevel, LogEntry, Sale
from testkit.lifecycle import issued_batch


@pytest.fixture
def hall_cards(bench):
    """Batch B1 (40 cards of 50 yuan, boxes of 10) issued to hall H01; H02 exists with nothing."""
    pins = issued_batch(bench, "B1", 40)
    bench.add_hall("H02")
    return bench, sorted(pins)


def sell(bench, hall="H01", who="alice", **sel):
    with bench.unit(Permission.SELL_CARDS, who=who) as ctx:
        return sales.sell(ctx, hall, stock.Selection(**sel)).sale.id


def sale_rows(bench):
    with bench.system.db.transaction() as s:
        return [(r.quantity, r.amount, r.first_serial, r.last_serial) for r in s.scalars(select(Sale).order_by(Sale.id))]


def test_a_box_sold_at_its_hall_is_owed_at_face_value(hall_cards):
    bench, serials = hall_cards
    sell(bench, batch_no="B1", box_no=2)
    assert bench.states("B1") == {"issued": 30, "sold": 10}
    assert sale_rows(bench) == [(10, 50_000, serials[10], serials[19])]
    with bench.system.db.transaction() as s:
        sold = s.scalars(select(Card.sale_id).where(Card.state == "sold")).all()
        entry = s.scalars(select(LogEntry).order_by(LogEntry.seq.desc()).limit(1)).one()
    assert len(set(sold)) == 1 and sold[0] is not None
    assert entry.action == "card.sell" and json.loads(entry.after)["hall"] == "H01"


def test_one_card_and_a_range(hall_cards):
    bench, serials = hall_cards
    sell(bench, first_serial=serials[0], last_serial=serials[0])
    sell(bench, first_serial=serials[1], last_serial=serials[4])
    assert [q for q, *_ in sale_rows(bench)] == [1, 4]
    assert bench.states("B1") == {"issued": 35, "sold": 5}


@pytest.mark.parametrize(
    ("setup", "sel", "error", "message"),
    [
        ("sold", {"box_no": 1}, IllegalTransition, "cannot be sold because 10 sold"),
        ("none", {"box_no": 9}, NotFound, "has boxes 1-4"),
        ("other-hall", {"box_no": 1}, PermissionDenied, "issued to another hall"),
        ("office", {"box_no": 1}, InvalidInput, "county office"),
        ("partly", {"box_no": 1}, IllegalTransition, "1 sold"),
    ],
)
def test_refused_sales_change_nothing(hall_cards, setup, sel, error, message):
    bench, serials = hall_cards
    hall = "H01"
    if setup == "sold":
        sell(bench, batch_no="B1", box_no=1)
    elif setup == "other-hall":
        hall = "H02"
    elif setup == "office":
        with bench.unit() as ctx:
            halls.add(ctx, "C1", "county", level=HallLevel.COUNTY)
        hall = "C1"
    elif setup == "partly":
        sell(bench, first_serial=serials[3], last_serial=serials[3])
    before = (bench.states("B1"), sale_rows(bench))
    with pytest.raises(error, match=message):
        sell(bench, hall=hall, batch_no="B1", **sel)
    assert (bench.states("B1"), sale_rows(bench)) == before


def test_cards_still_in_the_warehouse_cannot_be_sold(bench):
    bench.stocked_batch("W1", 10)
    bench.add_hall("H01")
    with pytest.raises(IllegalTransition, match="10 in stock"):
        sell(bench, batch_no="W1")
    assert bench.states("W1") == {"in_stock": 10}


def test_only_an_operator_allowed_to_sell_may(hall_cards):
    bench, _ = hall_cards
    bench.add_operator("carol", Role.AUDITOR)
    with pytest.raises(PermissionDenied):
        sell(bench, who="carol", batch_no="B1", box_no=1)
    with pytest.raises(PermissionDenied):
        sell(bench, who="bob", batch_no="B1", box_no=1)
    assert bench.states("B1") == {"issued": 40}


def test_a_repeated_key_is_the_same_sale(hall_cards):
    bench, _ = hall_cards
    with bench.unit(Permission.SELL_CARDS) as ctx:
        first = sales.sell(ctx, "H01", stock.Selection(batch_no="B1", box_no=1), key="pos-7-0001")
    with bench.unit(Permission.SELL_CARDS) as ctx:
        again = sales.sell(ctx, "H01", stock.Selection(batch_no="B1", box_no=1), key="pos-7-0001")
    assert (first.repeated, again.repeated, again.sale.id) == (False, True, first.sale.id)
    with pytest.raises(ConflictError, match="already used"), bench.unit(Permission.SELL_CARDS) as ctx:
        sales.sell(ctx, "H01", stock.Selection(batch_no="B1", box_no=2), key="pos-7-0001")
    assert len(sale_rows(bench)) == 1 and bench.states("B1") == {"issued": 30, "sold": 10}


def test_unsold_cards_go_back_to_the_warehouse_and_can_be_issued_again(hall_cards):
    bench, serials = hall_cards
    sell(bench, batch_no="B1", box_no=1)
    with pytest.raises(IllegalTransition, match="because 5 sold"), bench.unit() as ctx:
        sales.return_unsold(ctx, "H01", stock.Selection(first_serial=serials[5], last_serial=serials[14]), "closing")
    with pytest.raises(PermissionDenied), bench.unit() as ctx:
        sales.return_unsold(ctx, "H02", stock.Selection(batch_no="B1", box_no=2), "not theirs")
    with pytest.raises(InvalidInput, match="reason"), bench.unit() as ctx:
        sales.return_unsold(ctx, "H01", stock.Selection(batch_no="B1", box_no=2), " ")
    with bench.unit() as ctx:
        back = sales.return_unsold(ctx, "H01", stock.Selection(batch_no="B1", box_no=2), "hall closing")
    assert (back.quantity, back.amount, back.first_serial, back.last_serial) == (10, 50_000, serials[10], serials[19])
    assert bench.states("B1") == {"sold": 10, "issued": 20, "in_stock": 10}
    with bench.system.db.transaction() as s:
        assert s.scalars(select(Card.hall_id).where(Card.state == "in_stock")).unique().all() == [None]
        assert s.scalar(select(func.count()).select_from(CardReturn)) == 1
    rid = bench.approved_request(10, hall="H02")
    with bench.unit() as ctx:
        issuing.collect(ctx, rid)
    sell(bench, hall="H02", batch_no="B1", box_no=2)
    assert bench.states("B1") == {"sold": 20, "issued": 20}


def test_the_hierarchy_rolls_stock_and_sales_up(bench):
    with bench.unit() as ctx:
        halls.add(ctx, "TS", "Tangshan", level="city")
        halls.add(ctx, "LB", "Lubei", level="county", parent="TS")
        halls.add(ctx, "H01", "Lubei hall 1", parent="LB")
        halls.add(ctx, "H02", "Lubei hall 2", parent="LB")
        halls.add(ctx, "H03", "city hall", parent="TS")
    issued_batch(bench, "B1", 30)  # to H01
    bench.stocked_batch("B2", 10, face_value=10_000)
    rid = bench.approved_request(10, face_value=10_000, hall="H03")
    with bench.unit() as ctx:
        issuing.collect(ctx, rid)
    sell(bench, batch_no="B1", box_no=1)
    sell(bench, hall="H03", batch_no="B2", box_no=1)
    with bench.system.db.transaction() as s:
        nodes = {n.code: n for n in halls.tree(s)}
        assert [n.code for n in halls.tree(s)] == ["TS", "H03", "LB", "H01", "H02"]  # children by code
        assert sorted(halls.beneath(s, "LB")) == sorted(s.scalars(select(Hall.id).where(Hall.code.in_(["LB", "H01", "H02"]))))
    h01, lb, ts = nodes["H01"], nodes["LB"], nodes["TS"]
    assert (h01.own.unsold_cards, h01.own.unsold_value, h01.own.sold_cards, h01.own.sold_value) == (20, 100_000, 10, 50_000)
    assert lb.total == h01.total and lb.own.sold_cards == 0
    assert (ts.total.unsold_cards, ts.total.sold_cards, ts.total.sold_value) == (20, 20, 150_000)
    assert (nodes["H03"].depth, lb.depth, ts.parent) == (1, 1, None)


@pytest.mark.parametrize(
    ("code", "level", "parent", "message"),
    [
        ("X1", "county", "H01", "cannot sit under hall"),
        ("X2", "city", "TS", "cannot sit under city"),
        ("X3", "hall", "NOPE", "does not exist"),
        ("X4", "province", None, "level must be one of"),
        ("H01", "hall", None, "already exists"),
    ],
)
def test_a_hierarchy_that_does_not_fit_is_refused(bench, code, level, parent, message):
    with bench.unit() as ctx:
        halls.add(ctx, "TS", "Tangshan", level="city")
        halls.add(ctx, "H01", "hall", parent="TS")
    with pytest.raises(CardError, match=message), bench.unit() as ctx:
        halls.add(ctx, code, "x", level=level, parent=parent)


def test_issue_requests_go_to_halls_not_offices(bench):
    bench.stocked_batch("B1", 10)
    with bench.unit() as ctx:
        halls.add(ctx, "TS", "Tangshan", level="city")
    with pytest.raises(InvalidInput, match="city office"), bench.unit() as ctx:
        issuing.file_request(ctx, face_value=5000, quantity=1, hall_code="TS", reason="x")


# --- races, with real parallel requests ------------------------------------------------------------------


def _parallel(db: Database, bench, jobs, workers: int = 200):
    """Run ``jobs`` (functions of a Context) at once, each in its own transaction; their results or errors."""
    keys = bench.system.keys()
    barrier = threading.Barrier(min(workers, len(jobs)))

    def run(job):
        barrier.wait()
        try:
            with db.transaction() as session:
                return job(Context(session, keys, Actor("alice", Role.ADMIN)))
        except CardError as e:
            return e

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, jobs))


def test_two_hundred_overlapping_sales_sell_each_card_once(hall_cards, database_url):
    """Every card of a box is wanted by several terminals at once: each card is sold once, and owed once."""
    bench, serials = hall_cards
    jobs = []
    for i in range(200):
        first = serials[i % 38]
        last = serials[i % 38 + (i % 3)]
        jobs.append(lambda ctx, a=first, b=last: sales.sell(ctx, "H01", stock.Selection(first_serial=a, last_serial=b)))
    db = Database(database_url, pool_size=20)
    try:
        answers = _parallel(db, bench, jobs)
    finally:
        db.dispose()
    assert any(isinstance(a, sales.Sold) for a in answers)
    with bench.system.db.transaction() as s:
        sold = s.scalar(select(func.count()).select_from(Card).where(Card.state == "sold"))
        in_sales = s.scalar(select(func.coalesce(func.sum(Sale.quantity), 0)))
        owed = s.scalar(select(func.coalesce(func.sum(Sale.amount), 0)))
        per_card = s.execute(select(Card.sale_id, func.count()).where(Card.state == "sold").group_by(Card.sale_id)).all()
        quantities = dict(s.execute(select(Sale.id, Sale.quantity)).all())
    assert sold == in_sales and owed == sold * 5000
    assert dict(per_card) == quantities


def test_two_hundred_repeats_of_one_key_make_one_sale(hall_cards, database_url):
    bench, _ = hall_cards
    job = lambda ctx: sales.sell(ctx, "H01", stock.Selection(batch_no="B1", box_no=3), key="pos-1-42")  # noqa: E731
    db = Database(database_url, pool_size=20)
    try:
        answers = _parallel(db, bench, [job] * 200)
    finally:
        db.dispose()
    sold = [a for a in answers if isinstance(a, sales.Sold)]
    assert len({a.sale.id for a in sold}) == 1
    assert sum(not a.repeated for a in sold) == 1
    assert sale_rows(bench)[0][0] == 10 and bench.states("B1") == {"issued": 30, "sold": 10}
