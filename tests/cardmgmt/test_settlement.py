"""Hall settlement: payments, voids, balances carried, roll-up, reconciliation (real databases; races on PostgreSQL too)."""

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from cardmgmt import halls, issuing, reports, sales, settlement, stock
from cardmgmt.context import Actor, Context, Permission, Role
from cardmgmt.days import BUSINESS_TZ
from cardmgmt.db import Database
from cardmgmt.errors import AlreadyExists, CardError, ConflictError, InvalidInput, NotFound, PermissionDenied
from cardmgmt.models import HallPayment, LogEntry
from testkit.lifecycle import issued_batch

D1, D2, D3, D4 = (dt.date(2026, 1, 5) + dt.timedelta(days=i) for i in range(4))


def at(day: dt.date, hour: int = 10) -> dt.datetime:
    """A moment of business day ``day`` (Beijing time), as UTC."""
    return dt.datetime.combine(day, dt.time(hour), tzinfo=BUSINESS_TZ).astimezone(dt.UTC)


def sell(bench, day, hall="H01", **sel):
    with bench.unit(Permission.SELL_CARDS) as ctx:
        return sales.sell(ctx, hall, stock.Selection(**sel), now=at(day)).sale


def pay(bench, day, amount, ref, hall="H01", who="bob", **kw):
    with bench.unit(Permission.RECORD_PAYMENTS, who=who) as ctx:
        return settlement.record_payment(ctx, hall, day, amount, ref, **kw).id


def void(bench, payment_id, reason="typed wrong", who="bob"):
    with bench.unit(Permission.RECORD_PAYMENTS, who=who) as ctx:
        return settlement.void_payment(ctx, payment_id, reason).id


def settle_rows(bench, first=D1, last=D4, by="hall", hall=None):
    with bench.unit(Permission.VIEW) as ctx:
        rep = reports.settlement(ctx.session, reports.Period(first, last), by, hall)
    return [tuple(r.values()) for r in rep.rows], rep.total


def nothing_changed(bench):
    with bench.system.db.transaction() as s:
        return (s.scalar(select(func.count()).select_from(HallPayment)),
                s.scalar(select(func.count()).select_from(LogEntry)))


@pytest.fixture
def h01(bench):
    """Batch B1, 40 cards of 50 yuan in boxes of 10, issued to hall H01; its serials."""
    pins = issued_batch(bench, "B1", 40)
    return bench, sorted(pins)


def test_the_balance_carries_from_day_to_day_through_payments_and_a_void(h01):
    bench, serials = h01
    sell(bench, D1, batch_no="B1", box_no=1)  # 500.00 owed
    sell(bench, D2, batch_no="B1", box_no=2)  # 500.00
    sell(bench, D4, first_serial=serials[20], last_serial=serials[22])  # 150.00
    pay(bench, D1, "300", "SLIP-1")
    wrong = pay(bench, D2, "700.00", "SLIP-2")  # the slip said 600.00
    void(bench, wrong, "slip says 600.00")
    pay(bench, D2, "600.00", "SLIP-2", note="re-entered")
    pay(bench, D3, "100.5", "SLIP-3")
    rows, total = settle_rows(bench)
    #        hall    day              opening  cards  owed     paid    balance
    assert rows == [
        ("H01", D1.isoformat(), 0, 10, 50_000, 30_000, 20_000),
        ("H01", D2.isoformat(), 20_000, 10, 50_000, 60_000, 10_000),
        ("H01", D3.isoformat(), 10_000, 0, 0, 10_050, -50),
        ("H01", D4.isoformat(), -50, 3, 15_000, 0, 14_950),
    ]
    assert total == {"opening": 0, "cards": 23, "owed": 115_000, "paid": 100_050, "balance": 14_950}
    # A later period opens with what the earlier days left.
    later, total = settle_rows(bench, D3, D4)
    assert later == rows[2:] and total["opening"] == 10_000 and total["balance"] == 14_950
    with bench.system.db.transaction() as s:
        listed = settlement.payments(s, hall_code="H01")
    assert [(p["kind"], p["amount"], p["reference"], p["voids"]) for p in listed] == [
        ("payment", 30_000, "SLIP-1", ""), ("payment", 70_000, "SLIP-2", ""),
        ("void", -70_000, "SLIP-2", wrong), ("payment", 60_000, "SLIP-2", ""), ("payment", 10_050, "SLIP-3", "")]
    assert listed[2]["note"] == "slip says 600.00" and listed[2]["recorded_by"] == "bob"
    with bench.system.db.transaction() as s:
        actions = s.scalars(select(LogEntry.action).where(LogEntry.action.like("settle.%")).order_by(LogEntry.seq)).all()
    assert actions == ["settle.pay", "settle.pay", "settle.void", "settle.pay", "settle.pay"]


def test_a_void_is_made_once_and_only_of_a_payment(h01):
    bench, _ = h01
    p = pay(bench, D1, "10", "S1")
    v = void(bench, p)
    with pytest.raises(ConflictError, match="already voided"):
        void(bench, p)
    with pytest.raises(InvalidInput, match="itself a void"):
        void(bench, v)
    with pytest.raises(NotFound, match="does not exist"):
        void(bench, 999)
    with pytest.raises(InvalidInput, match="reason"):
        void(bench, pay(bench, D1, "10", "S2"), reason=" ")
    assert settle_rows(bench, D1, D1)[1]["paid"] == 1000  # S1 and its void cancel; S2 stands


def test_a_bank_slip_counts_once_per_hall(h01):
    bench, _ = h01
    bench.add_hall("H02")
    pay(bench, D1, "10", "SLIP-9")
    before = nothing_changed(bench)
    with pytest.raises(AlreadyExists, match="already recorded for hall H01"):
        pay(bench, D2, "20", "SLIP-9")
    assert nothing_changed(bench) == before
    pay(bench, D1, "10", "SLIP-9", hall="H02")  # another hall's slip numbering


def test_the_hierarchy_rolls_settlement_up(bench):
    with bench.unit() as ctx:
        halls.add(ctx, "TS", "Tangshan", level="city")
        halls.add(ctx, "LB", "Lubei", level="county", parent="TS")
        halls.add(ctx, "H01", "Lubei hall 1", parent="LB")
        halls.add(ctx, "H02", "Lubei hall 2", parent="LB")
        halls.add(ctx, "H03", "city hall", parent="TS")
    issued_batch(bench, "B1", 20)  # to H01
    for hall in ("H02", "H03"):
        bench.stocked_batch(f"B{hall}", 10, face_value=10_000)
        rid = bench.approved_request(10, face_value=10_000, hall=hall)
        with bench.unit() as ctx:
            issuing.collect(ctx, rid)
    sell(bench, D1, batch_no="B1", box_no=1)  # H01 500
    sell(bench, D1, hall="H02", batch_no="BH02")  # H02 1000
    sell(bench, D2, hall="H03", batch_no="BH03", box_no=1)  # H03 1000
    pay(bench, D1, "500", "A", hall="H01")
    pay(bench, D2, "400", "B", hall="H02")
    lb, lb_total = settle_rows(bench, D1, D2, by="day", hall="LB")
    assert lb == [(D1.isoformat(), 0, 20, 150_000, 50_000, 100_000), (D2.isoformat(), 100_000, 0, 0, 40_000, 60_000)]
    ts, ts_total = settle_rows(bench, D1, D2, by="day", hall="TS")
    assert ts[-1][-1] == 160_000 and ts_total["owed"] == 250_000 and ts_total["paid"] == 90_000
    per_hall, _ = settle_rows(bench, D1, D2, hall="LB")
    assert {r[0] for r in per_hall} == {"H01", "H02"}
    everyone, total = settle_rows(bench, D1, D2)
    assert {r[0] for r in everyone} == {"H01", "H02", "H03"} and total == ts_total
    assert sum(r[-1] for r in everyone if r[1] == D2.isoformat()) == 160_000


def test_only_finance_records_payments(h01):
    bench, _ = h01
    bench.add_operator("carol", Role.AUDITOR)
    for who in ("alice", "carol"):
        with pytest.raises(PermissionDenied):
            pay(bench, D1, "10", f"S-{who}", who=who)
    # The role check is in the service too, not only at the unit's door.
    with bench.unit(Permission.VIEW) as ctx, pytest.raises(PermissionDenied):
        settlement.record_payment(ctx, "H01", D1, "10", "S-x")
    assert nothing_changed(bench)[0] == 0
    p = pay(bench, D1, "10", "S-bob")
    with bench.unit(Permission.MANAGE_CARDS) as ctx, pytest.raises(PermissionDenied):
        settlement.void_payment(ctx, p, "admin tries")


@pytest.mark.parametrize(
    ("hall", "day", "amount", "ref", "message"),
    [
        ("H01", D1, "12.345", "S", "more than two decimal places"),
        ("H01", D1, "12a", "S", "is not a number of yuan"),
        ("H01", D1, "-5", "S", "is not a number of yuan"),
        ("H01", D1, "0", "S", "positive"),
        ("H01", D1, "1.5e3", "S", "is not a number of yuan"),
        ("H01", dt.date.today() + dt.timedelta(days=2), "10", "S", "in the future"),
        ("H99", D1, "10", "S", "hall 'H99' does not exist"),
        ("TS", D1, "10", "S", "city office"),
        ("H01", D1, "10", " ", "reference"),
        ("H01", D1, "10", "x" * 65, "reference"),
    ],
)
def test_bad_payments_are_refused_and_change_nothing(h01, hall, day, amount, ref, message):
    bench, _ = h01
    with bench.unit() as ctx:
        halls.add(ctx, "TS", "Tangshan", level="city")
    before = nothing_changed(bench)
    with pytest.raises(CardError, match=message) as e:
        pay(bench, day, amount, ref, hall=hall)
    assert "\n" not in e.value.message
    assert nothing_changed(bench) == before


# --- reconciliation ----------------------------------------------------------------------------------------


def hall_file(*lines: str, header: str = "first_serial,last_serial,cards,amount") -> str:
    return "\n".join([header, *lines]) + "\n"


@pytest.fixture
def day_sold(h01):
    """H01 sold box 1 (10 cards) and one card on D1."""
    bench, serials = h01
    sell(bench, D1, batch_no="B1", box_no=1)
    sell(bench, D1, first_serial=serials[10], last_serial=serials[10])
    sell(bench, D2, batch_no="B1", box_no=3)  # another day: not in D1's comparison
    return bench, serials


def rec(bench, text, day=D1):
    with bench.system.db.transaction() as s:
        return settlement.reconcile(s, "H01", day, settlement.parse_hall_file(text))


def test_a_hall_file_that_agrees(day_sold):
    bench, s = day_sold
    r = rec(bench, hall_file(f"{s[10]},{s[10]},1,50.00", f"{s[0]},{s[9]},10,500"))
    assert r.agrees and r.counts == {"matched": 2, "only_in_file": 0, "only_in_backend": 0, "differs": 0}
    assert r.totals() == {"file_cards": 11, "file_amount": 55_000, "backend_cards": 11, "backend_amount": 55_000}


def test_each_kind_of_difference_is_found(day_sold):
    bench, s = day_sold
    r = rec(bench, hall_file(f"{s[0]},{s[9]},10,450.00", f"{s[30]},{s[30]},1,50"))
    assert not r.agrees
    assert [(x["first_serial"], x["outcome"]) for x in r.lines] == [
        (s[0], "differs"), (s[10], "only_in_backend"), (s[30], "only_in_file")]
    assert (r.lines[0]["file_amount"], r.lines[0]["backend_amount"]) == (45_000, 50_000)
    assert "hall: 10 cards, 450.00 yuan; back end: 10 cards, 500.00 yuan" in settlement.describe(r.lines[0])
    assert rec(bench, hall_file(), day=D3).agrees  # a day with no sales on either side


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("first_serial,cards,amount\n", "no last_serial column"),
        ("", "no first_serial, last_serial, cards, amount column"),
        (hall_file("12345,000000000018,1,5"), "line 2: a serial is 12 digits"),
        (hall_file("000000000018,000000000018,1,5.001"), "line 2: amount '5.001' has more than two decimal places"),
        (hall_file("000000000018,000000000018,x,5"), "line 2: cards must be"),
        (hall_file("000000000026,000000000018,2,5"), "runs backwards"),
        (hall_file("000000000018,000000000018,1,5", "000000000018,000000000018,1,5"), "line 3: .* listed twice"),
    ],
)
def test_a_bad_hall_file_is_refused_whole(text, message):
    with pytest.raises(InvalidInput, match=message):
        settlement.parse_hall_file(text)


# --- races, with real parallel requests ------------------------------------------------------------------


def _parallel(db: Database, bench, jobs):
    """Run ``jobs`` (functions of a Context) at once as finance officer bob, each in its own transaction."""
    keys = bench.system.keys()
    barrier = threading.Barrier(len(jobs))

    def run(job):
        barrier.wait()
        try:
            with db.transaction() as session:
                return job(Context(session, keys, Actor("bob", Role.FINANCE)))
        except CardError as e:
            return e

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def test_two_hundred_officers_recording_payments_at_once(h01, database_url):
    """200 recordings of one slip: one lands; 200 of distinct slips and 200 voids of one payment: totals hold."""
    bench, _ = h01
    db = Database(database_url, pool_size=20)
    try:
        same = _parallel(db, bench, [lambda ctx, i=i: settlement.record_payment(ctx, "H01", D1, f"{i + 1}.00", "SLIP-1")
                                     for i in range(200)])
        landed = [a for a in same if isinstance(a, HallPayment)]
        assert len(landed) == 1
        assert all(isinstance(a, AlreadyExists) for a in same if a not in landed), {type(a) for a in same}
        distinct = _parallel(db, bench, [lambda ctx, i=i: settlement.record_payment(ctx, "H01", D2, "0.01", f"S-{i}")
                                         for i in range(200)])
        assert all(isinstance(a, HallPayment) for a in distinct)
        voids = _parallel(db, bench, [lambda ctx: settlement.void_payment(ctx, landed[0].id, "wrong")
                                      for _ in range(200)])
        assert sum(isinstance(a, HallPayment) for a in voids) == 1
        assert all(isinstance(a, ConflictError) for a in voids if not isinstance(a, HallPayment))
    finally:
        db.dispose()
    rows, total = settle_rows(bench, D1, D2)
    assert total["paid"] == 200 and rows[-1][-1] == -200
    with bench.system.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(HallPayment)) == 202
        assert s.scalar(select(func.count()).select_from(LogEntry).where(LogEntry.action.like("settle.%"))) == 202
