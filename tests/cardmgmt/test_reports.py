"""Reports on real data (both backends)."""

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from cardmgmt import issuing, reports, sales, stock
from cardmgmt.context import Permission
from cardmgmt.days import BUSINESS_TZ
from cardmgmt.errors import InvalidInput
from cardmgmt.models import Batch, Card, DayClose, Recharge, RechargeDay
from cardmgmt.states import CardState, PostStatus
from testkit.lifecycle import issued_batch


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


# --- reports over business days --------------------------------------------------------------------------

D1, D2, D3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)


def local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """A moment of business day ``day`` in Beijing time, as UTC (what the database stores)."""
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BUSINESS_TZ).astimezone(dt.UTC)


def recharge(session, serial: str, when: dt.datetime, channel: str = "hotline") -> None:
    card = session.scalars(select(Card).where(Card.serial == serial)).one()
    session.add(Recharge(key=f"call-{serial}#1", call_id=f"call-{serial}", channel=channel, caller="13900000001",
                         card_id=card.id, card_serial=serial, account_no="3100000001", amount=card_value(session, card),
                         committed_at=when, post_status=PostStatus.POSTED, post_attempts=1, next_attempt_at=when))
    card.state = CardState.REDEEMED


def card_value(session, card: Card) -> int:
    return session.get_one(Batch, card.batch_id).face_value


@pytest.fixture
def trade(bench):
    """H01 sold 12 cards of 50 yuan (D1, D2), H02 10 of 100 yuan (D2); three recharges on D1 and D2."""
    b1 = sorted(issued_batch(bench, "B1", 20))
    bench.add_hall("H02")
    bench.stocked_batch("B2", 10, face_value=10_000)
    rid = bench.approved_request(10, face_value=10_000, hall="H02")
    with bench.unit() as ctx:
        issuing.collect(ctx, rid)
    with bench.unit(Permission.SELL_CARDS) as ctx:
        sales.sell(ctx, "H01", stock.Selection(batch_no="B1", box_no=1), now=local(D1, 9))
        sales.sell(ctx, "H01", stock.Selection(first_serial=b1[10], last_serial=b1[11]), channel="pos", key="T1-1",
                   now=local(D2, 9))
        sales.sell(ctx, "H02", stock.Selection(batch_no="B2"), now=local(D2, 0, 5))
    with bench.system.db.transaction() as s:
        b2 = list(s.scalars(select(Card.serial).join(Batch).where(Batch.batch_no == "B2").order_by(Card.serial)))
        recharge(s, b1[0], local(D1, 15))
        recharge(s, b1[1], local(D2, 0, 30), channel="web")  # 16:30 UTC on D1: still business day D2
        recharge(s, b2[0], local(D2, 23, 59))
        recharge(s, b2[1], local(D3, 0, 0))  # midnight belongs to the day it starts
    return bench


def view(bench, fn, *args, **kw):
    with bench.unit(Permission.VIEW) as ctx:
        return fn(ctx.session, *args, **kw)


def test_sales_by_every_dimension(trade):
    period = reports.Period(D1, D2)
    by = {b: view(trade, reports.sales, period, b) for b in reports.SALES_BY}
    assert by["day"].rows == [{"day": "2026-03-01", "sales": 1, "cards": 10, "amount": 50_000},
                              {"day": "2026-03-02", "sales": 2, "cards": 12, "amount": 110_000}]
    assert [(r["hall"], r["cards"], r["amount"]) for r in by["hall"].rows] == [("H01", 12, 60_000), ("H02", 10, 100_000)]
    assert [(r["channel"], r["sales"]) for r in by["channel"].rows] == [("counter", 2), ("pos", 1)]
    assert [(r["face_value"], r["cards"]) for r in by["face-value"].rows] == [(5000, 12), (10_000, 10)]
    for rep in by.values():
        assert rep.total == {"sales": 3, "cards": 22, "amount": 160_000}
    assert view(trade, reports.sales, reports.Period(D2, D2), "hall", hall="H02").total["amount"] == 100_000
    assert view(trade, reports.sales, reports.Period(D3, D3)).rows == []


def test_recharges_by_business_day_hall_channel_and_face_value(trade):
    period = reports.Period(D1, D2)
    by = {b: view(trade, reports.recharges, period, b) for b in reports.RECHARGES_BY}
    assert by["day"].rows == [{"day": "2026-03-01", "recharges": 1, "amount": 5000},
                              {"day": "2026-03-02", "recharges": 2, "amount": 15_000}]
    assert [(r["hall"], r["recharges"]) for r in by["hall"].rows] == [("H01", 2), ("H02", 1)]
    assert [(r["channel"], r["amount"]) for r in by["channel"].rows] == [("hotline", 15_000), ("web", 5000)]
    assert [(r["face_value"], r["recharges"]) for r in by["face-value"].rows] == [(5000, 2), (10_000, 1)]
    assert all(rep.total == {"recharges": 3, "amount": 20_000} for rep in by.values())
    assert view(trade, reports.recharges, period, "day", hall="H02").total == {"recharges": 1, "amount": 10_000}
    assert view(trade, reports.recharges, reports.Period(D3, D3)).rows == [{"day": "2026-03-03", "recharges": 1,
                                                                            "amount": 10_000}]


def recharge_reports(bench) -> list:
    """Every recharge report that closed days serve, over periods that start, end and fall between closed days."""
    periods = [reports.Period(D1, D3), reports.Period(D2, D2), reports.Period(D3, D3 + dt.timedelta(days=3)),
               reports.Period(D1 - dt.timedelta(days=2), D1)]
    found = []
    for p in periods:
        found.append(view(bench, reports.recharges_by_day_and_channel, p).as_dict())
        found += [view(bench, reports.recharges, p, by).as_dict() for by in ("day", "channel")]
    return found


def test_closing_days_keeps_every_recharge_report_the_same(trade):
    before = recharge_reports(trade)
    assert before[0]["total"] == {"recharges": 4, "amount": 30_000}
    with trade.system.db.transaction() as s:
        # 00:30 on D4 is within the grace of D3's end: D1 and D2 are closed, D3 stays open.
        assert reports.close_days(s, local(D3 + dt.timedelta(days=1), 0, 30)) == [D1, D2]
    assert recharge_reports(trade) == before
    with trade.system.db.transaction() as s:
        assert reports.close_days(s, local(D3 + dt.timedelta(days=3), 9), at_most=2) == [D3, D3 + dt.timedelta(days=1)]
        assert reports.close_days(s, local(D3 + dt.timedelta(days=3), 9)) == [D3 + dt.timedelta(days=2)]
        assert reports.close_days(s, local(D3 + dt.timedelta(days=3), 9)) == []
        totals = s.execute(select(RechargeDay.day, RechargeDay.channel, RechargeDay.recharges)
                           .order_by(RechargeDay.day, RechargeDay.channel)).all()
    assert totals == [(D1, "hotline", 1), (D2, "hotline", 1), (D2, "web", 1), (D3, "hotline", 1)]
    assert recharge_reports(trade) == before
    with trade.system.db.transaction() as s:
        later = sorted(s.scalars(select(Card.serial).where(Card.state == CardState.ISSUED)))[0]
        recharge(s, later, local(D3 + dt.timedelta(days=3), 8), channel="pos")  # the open day, summed from its rows
    last = view(trade, reports.recharges, reports.Period(D1, D3 + dt.timedelta(days=3)), "channel")
    assert [(r["channel"], r["recharges"]) for r in last.rows] == [("hotline", 3), ("pos", 1), ("web", 1)]


def test_no_recharges_no_day_to_close(bench):
    with bench.system.db.transaction() as s:
        assert reports.close_days(s) == []
        assert s.scalar(select(func.count()).select_from(DayClose)) == 0


def test_servers_closing_days_at_once_write_each_day_once(trade):
    now = local(D3 + dt.timedelta(days=2), 9)
    start = threading.Barrier(4)

    def close() -> list[dt.date]:
        with trade.system.db.transaction() as s:
            start.wait()
            return reports.close_days(s, now)

    with ThreadPoolExecutor(4) as pool:
        closed = [d for done in [pool.submit(close) for _ in range(4)] for d in done.result()]
    assert sorted(closed) == [D1, D2, D3, D3 + dt.timedelta(days=1)]
    with trade.system.db.transaction() as s:
        assert s.scalar(select(func.sum(RechargeDay.recharges))) == 4


def test_stock_value_by_place_and_state(trade):
    by_hall = view(trade, reports.stock_value, "hall")
    assert {(r["place"], r["face_value"], r["state"]): (r["cards"], r["value"]) for r in by_hall.rows} == {
        ("H01", 5000, "issued"): (8, 40_000), ("H01", 5000, "sold"): (10, 50_000), ("H01", 5000, "redeemed"): (2, 10_000),
        ("H02", 10_000, "sold"): (8, 80_000), ("H02", 10_000, "redeemed"): (2, 20_000)}
    trade.stocked_batch("B3", 10, face_value=2000)
    by_state = view(trade, reports.stock_value, "state")
    assert ({"face_value": 2000, "state": "in_stock", "cards": 10, "value": 20_000} in by_state.rows)
    assert by_state.total == {"cards": 40, "value": 220_000}
    assert view(trade, reports.stock_value, "hall").rows[0]["place"] == reports.WAREHOUSE


def test_a_period_is_business_days_in_order():
    today = dt.date(2026, 3, 10)
    assert reports.Period.of(today=today) == reports.Period(today, today)
    assert reports.Period.of(D1, today=today) == reports.Period(D1, today)
    assert reports.Period.of(None, D2, today=today) == reports.Period(D2, D2)
    with pytest.raises(InvalidInput, match="is after"):
        reports.Period.of(D2, D1)
    with pytest.raises(InvalidInput, match="--by must be one of"):
        reports.sales(None, reports.Period(D1, D1), "colour")  # type: ignore[arg-type]


def test_hourly_backlog_and_wrong_pins_over_the_last_day(bench):
    from cardmgmt.models import PinFailure
    from testkit.marketing import Ledger

    now = dt.datetime(2026, 6, 2, 10, 30, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    ledger = Ledger(bench.system.db)
    old = ledger.add("3100000001", 5000, now - 30 * hour)  # before the window, posted inside it
    ledger.update(old, post_status=PostStatus.POSTED, posted_at=now - 20 * hour + dt.timedelta(minutes=5))
    ledger.add("3100000002", 5000, now - 40 * hour)  # before the window, still pending
    done = ledger.add("3100000003", 5000, now - 5 * hour)  # committed 05:30, posted 06:10
    ledger.update(done, post_status=PostStatus.POSTED, posted_at=now - 5 * hour + dt.timedelta(minutes=40))
    ledger.add("3100000004", 5000, now - dt.timedelta(minutes=10))  # in the hour under way
    gone = ledger.add("3100000005", 5000, now - 3 * hour)  # rejected by the marketing system: never comes
    ledger.update(gone, post_status=PostStatus.REJECTED)
    with bench.system.db.transaction() as s:
        for minutes in (5, 50, 70):  # 08:35, 09:20, 09:40
            s.add(PinFailure(caller="13800138000", account_no="3100000001", at=now - 2 * hour + dt.timedelta(minutes=minutes)))
        s.add(PinFailure(caller="13800138000", account_no="3100000001", at=now - 25 * hour))  # outside the window
    rows = view(bench, reports.hourly, now)
    assert len(rows) == 25 and rows[0]["hour"] == "2026-06-01T11:00+00:00" and rows[-1]["hour"] == "2026-06-02T10:30+00:00"
    by_end = {r["hour"][11:16]: r for r in rows}
    assert rows[0]["backlog"] == 2  # at 11:00 the day before: the two old ones
    assert by_end["15:00"]["backlog"] == 1 and by_end["15:00"]["posted"] == 1  # the old one posted at 14:35
    assert by_end["06:00"]["backlog"] == 2 and by_end["06:00"]["committed"] == 1
    assert by_end["07:00"]["backlog"] == 1 and by_end["07:00"]["posted"] == 1
    assert rows[-1]["backlog"] == 2 and rows[-1]["committed"] == 1
    assert [(r["hour"][11:16], r["wrong_pins"]) for r in rows if r["wrong_pins"]] == [("09:00", 1), ("10:00", 2)]
    assert sum(r["committed"] for r in rows) == 2 and sum(r["posted"] for r in rows) == 2
